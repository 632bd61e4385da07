"""Every sub-protocol's message table in one registry, and the two decoders over it:
:func:`decode_client` (server side) and :func:`decode_server` (client side)."""

from __future__ import annotations

import msgpack

import replay.protocol.leaderboard as leaderboard
import replay.protocol.player as player
import replay.protocol.spectator as spectator
from replay.protocol.errors import E_MALFORMED, E_UNKNOWN_TYPE, ProtocolError
from replay.protocol.framing import MAX_NESTING, MAX_SEQ, check_nesting, unpack_client_frame
from replay.protocol.leaderboard import LeaderboardQuery, LeaderboardReply
from replay.protocol.player import (
    Catchup,
    Command,
    Ended,
    Error,
    Inputs,
    Join,
    Joined,
    Leave,
    Ok,
    Update,
    Welcome,
    decode_inputs,
    unpack_input_frame,
)
from replay.protocol.spectator import (
    ClipReply,
    Frame,
    MarkersReply,
    Matches,
    Playback,
    ScoreboardReply,
    Skipped,
    SpectatorMessage,
    State,
    Watching,
)

__all__ = [
    "CLIENT_TYPES",
    "SERVER_TYPES",
    "ClientMessage",
    "ServerMessage",
    "decode_client",
    "decode_input_frame",
    "decode_server",
    "readable_ref",
]

_SUBPROTOCOLS = (player, spectator, leaderboard)
_CLIENT = {code: entry for m in _SUBPROTOCOLS for code, entry in m.CLIENT_MESSAGES.items()}
_SERVER = {code: entry for m in _SUBPROTOCOLS for code, entry in m.SERVER_MESSAGES.items()}
assert len(_CLIENT) == sum(len(m.CLIENT_MESSAGES) for m in _SUBPROTOCOLS), "a type code twice"
assert len(_SERVER) == sum(len(m.SERVER_MESSAGES) for m in _SUBPROTOCOLS), "a type code twice"

CLIENT_TYPES = {code: name for code, (name, _) in _CLIENT.items()}
SERVER_TYPES = {code: name for code, (name, _) in _SERVER.items()}
_DECODERS = {code: decode for code, (_, decode) in _CLIENT.items()}
_SHAPES = {code: shape for code, (_, shape) in _SERVER.items()}

ClientMessage = Join | Inputs | Command | Leave | SpectatorMessage | LeaderboardQuery
ServerMessage = (
    Welcome
    | Joined
    | Catchup
    | Update
    | Error
    | Ok
    | Ended
    | Matches
    | Watching
    | State
    | Frame
    | Playback
    | Skipped
    | MarkersReply
    | ClipReply
    | ScoreboardReply
    | LeaderboardReply
)


def decode_client(data: bytes | str) -> ClientMessage:
    """Parse one client frame; raises :class:`ProtocolError` for anything invalid."""
    msg = unpack_client_frame(data)
    decode = _DECODERS.get(msg[0])
    if decode is None:
        raise ProtocolError(E_UNKNOWN_TYPE, f"unknown client message type {msg[0]}")
    try:
        check_nesting(msg, MAX_NESTING)
        return decode(msg)
    except ProtocolError as exc:
        if exc.ref is None and msg[0] in _WITH_REF:
            exc.ref = readable_ref(msg)  # the client matches the ERROR to its request
        raise


_WITH_REF = frozenset(
    {
        player.COMMAND,
        leaderboard.LEADERBOARD,
        spectator.LIST,
        spectator.MARKERS,
        spectator.CLIP,
        spectator.SCOREBOARD,
    }
)
"""Client messages whose second element is the request's ``ref``."""


def readable_ref(msg: list[object]) -> int | None:
    """The ref of a request whose other fields are invalid, when the ref itself is valid:
    an ERROR about a request echoes its ref whenever it can be read."""
    ref = msg[1] if len(msg) > 1 else None
    return ref if type(ref) is int and 0 <= ref <= MAX_SEQ else None


def decode_input_frame(data: bytes) -> Inputs:
    """Parse a frame that starts like an INPUT (``0x92 0x02``): the fast path of
    :func:`decode_client` for the bulk of the traffic, same rules and errors."""
    msg = unpack_input_frame(data)
    if msg is None:
        return decode_client(data)  # type: ignore[return-value]  # the general path says why
    return decode_inputs(msg)


def decode_server(data: bytes) -> ServerMessage:
    """Parse one server frame (client side) into its ``ServerMessage``; raises
    :class:`ProtocolError`."""
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
        return _SHAPES[msg[0]](*msg[1:])
    except (KeyError, TypeError, IndexError) as exc:
        raise ProtocolError(E_MALFORMED, f"unexpected server frame: {exc}") from None
    except Exception as exc:
        raise ProtocolError(E_MALFORMED, f"server frame is not valid msgpack: {exc}") from None
