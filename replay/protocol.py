"""The ``matchreplay.v1`` wire protocol: the one definition of every message.

Sans-I/O: this module turns bytes into typed messages and messages into bytes,
and validates them. It knows nothing about sockets or asyncio; the server
(``server/session.py``) and the client SDK (``client_sdk/``) both import it.
docs/protocol.md is its specification for implementers in other languages.

Every frame is one binary WebSocket message holding one msgpack array whose
first element is the message type code: ``[type, field1, field2, ...]``.
Arrays (not maps) keep inputs compact: an input costs ~8-12 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack

from replay.codec import pack

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_INPUTS_PER_FRAME",
    "SUBPROTOCOL",
    "ClientMessage",
    "ProtocolError",
    "decode_client",
    "decode_server",
]

SUBPROTOCOL = "matchreplay.v1"
"""Offered by the client in ``Sec-WebSocket-Protocol``; any other value is refused (HTTP 400)."""
PROTOCOL_VERSION = 1

# -- limits ------------------------------------------------------------------------------

MAX_FRAME_BYTES = 16 * 1024
"""Largest client frame. The server's receive buffer holds at most 16 frames per
connection (websockets' ``max_queue``), so a connection costs at most 256 KiB of
buffered input. A frame of 64 arena inputs is ~800 bytes."""
MAX_INPUTS_PER_FRAME = 64
"""Inputs in one INPUT frame (about 2 s of input at 30 Hz)."""
MAX_INPUT_FIELDS = 16
"""Fields of one raw game input after the sequence number."""
MAX_ID_CHARS = 64
"""Match ids, command kinds and refs as strings are at most 64 characters."""
MAX_SEQ = 2**53 - 1
"""Client sequence numbers are 1..2**53-1 (exact in a double, for JavaScript clients)."""
DEFAULT_INPUT_RATE = 120.0
"""Inputs per second per connection (token bucket), 4x a 30 Hz client."""
DEFAULT_INPUT_BURST = 240
"""Bucket size: inputs a connection may send at once after being quiet."""

# msgpack containers in a client frame are bounded before any object is built, so a
# 16 KiB frame cannot claim a huge array length and make the decoder allocate for it.
_UNPACK_LIMITS = {
    "max_str_len": MAX_FRAME_BYTES,
    "max_bin_len": MAX_FRAME_BYTES,
    "max_array_len": 1024,
    "max_map_len": 64,
    "max_ext_len": 0,
}


def _new_unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(
        raw=False, strict_map_key=True, max_buffer_size=1 << 20, **_UNPACK_LIMITS
    )


# One reusable streaming unpacker: a third of the cost of ``unpackb`` with limits, whose
# keyword parsing dominates for small frames. Frames are fed whole, one at a time, from
# one thread (the event loop); a frame that fails to decode replaces it.
_unpacker = _new_unpacker()

# -- message type codes -------------------------------------------------------------------

# client -> server
JOIN = 1
INPUT = 2
COMMAND = 3
LEAVE = 4
# server -> client
WELCOME = 16
JOINED = 17
CATCHUP = 18
UPDATE = 19
ERROR = 20
OK = 21
ENDED = 22

CLIENT_TYPES = {JOIN: "JOIN", INPUT: "INPUT", COMMAND: "COMMAND", LEAVE: "LEAVE"}
SERVER_TYPES = {
    WELCOME: "WELCOME",
    JOINED: "JOINED",
    CATCHUP: "CATCHUP",
    UPDATE: "UPDATE",
    ERROR: "ERROR",
    OK: "OK",
    ENDED: "ENDED",
}

# -- error codes (ERROR messages: the connection goes on) ------------------------------------

E_MALFORMED = "malformed"  # not msgpack, or not an array starting with an int type code
E_TEXT_FRAME = "text_frame"  # text frames are not part of the protocol
E_UNKNOWN_TYPE = "unknown_type"
E_INVALID_FIELD = "invalid_field"  # wrong field count, type or range
E_NOT_JOINED = "not_joined"  # INPUT/COMMAND/LEAVE before a successful JOIN
E_ALREADY_JOINED = "already_joined"  # a second JOIN on the same connection
E_UNKNOWN_MATCH = "unknown_match"
E_MATCH_OVER = "match_over"  # the match is ended or interrupted: read-only
E_MATCH_FULL = "match_full"
E_FORBIDDEN = "forbidden"  # the token's role or match does not allow this
E_RATE_LIMITED = "rate_limited"  # inputs beyond the per-connection rate were dropped
E_REJECTED = "rejected"  # the game rules refused an input or command (reason in message)

# -- close codes (the connection cannot go on) -----------------------------------------------

CLOSE_GOING_AWAY = 1001  # server shutting down (reconnect later)
CLOSE_MESSAGE_TOO_BIG = 1009  # a frame over MAX_FRAME_BYTES
CLOSE_UNAUTHORIZED = 4001  # token missing, malformed, wrongly signed or expired
CLOSE_PROTOCOL_ERROR = 4002  # too many protocol errors in a row
CLOSE_FORBIDDEN = 4003  # reserved: v1 answers role/match problems with ERROR forbidden
CLOSE_JOIN_TIMEOUT = 4004  # no JOIN within the join timeout
CLOSE_REPLACED = 4005  # the same player connected again and took the seat
CLOSE_RATE_LIMITED = 4008  # flooding far beyond the input rate
CLOSE_TOO_MANY_CONNECTIONS = 4009
CLOSE_SLOW_CONSUMER = 4010  # the client did not read its updates fast enough
CLOSE_MATCH_OVER = 4000  # the match ended; normal end of a session (after ENDED)

ROLES = ("player", "spectator", "admin")


class ProtocolError(ValueError):
    """A frame that breaks the protocol: ``code`` is one of the ``E_*`` constants."""

    def __init__(self, code: str, message: str, ref: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


# -- client messages --------------------------------------------------------------------------


class Join(NamedTuple):
    """``[1, match_id, from_seq]``: take (or take back) a seat, or watch.

    ``from_seq`` is the last event seq the client already has: the server first
    sends the stored events after it (CATCHUP), then live UPDATEs. ``None``
    (msgpack nil) means live updates only."""

    match_id: str
    from_seq: int | None


class Inputs(NamedTuple):
    """``[2, [[seq, *raw], ...]]``: per-tick game inputs, oldest first."""

    inputs: list[tuple[int, list[Any]]]


class Command(NamedTuple):
    """``[3, ref, kind, args]``: a discrete command (``chat``; admins: ``start``, ``end``)."""

    ref: int
    kind: str
    args: dict[str, Any]


class Leave(NamedTuple):
    """``[4]``: give up the seat now (no grace period)."""


ClientMessage = Join | Inputs | Command | Leave


def _int(v: Any, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError(E_INVALID_FIELD, f"{what} must be an integer in [{lo}, {hi}]")
    return v


def _str(v: Any, what: str) -> str:
    if type(v) is not str or not 1 <= len(v) <= MAX_ID_CHARS:
        raise ProtocolError(E_INVALID_FIELD, f"{what} must be a string of 1..{MAX_ID_CHARS} chars")
    return v


def decode_client(data: bytes | str) -> ClientMessage:
    """Parse one client frame; raises :class:`ProtocolError` for anything invalid."""
    if isinstance(data, str):
        raise ProtocolError(E_TEXT_FRAME, "frames must be binary msgpack, not text")
    global _unpacker
    u = _unpacker
    start = u.tell()
    try:
        u.feed(data)
        msg = u.unpack()
        if u.tell() - start != len(data):
            raise ValueError("trailing bytes after the message")
    except Exception as exc:  # OutOfData, FormatError, StackError, ValueError, UnicodeError...
        _unpacker = _new_unpacker()  # drop whatever the bad frame left in its buffer
        raise ProtocolError(E_MALFORMED, f"frame is not valid msgpack: {exc!r}") from None
    if not isinstance(msg, list) or not msg or type(msg[0]) is not int:
        raise ProtocolError(E_MALFORMED, "a frame is an array [type, ...fields]")
    kind = msg[0]
    if kind == INPUT:
        return _decode_inputs(msg)
    if kind == JOIN:
        if len(msg) != 3:
            raise ProtocolError(E_INVALID_FIELD, "JOIN is [1, match_id, from_seq]")
        from_seq = None if msg[2] is None else _int(msg[2], 0, MAX_SEQ, "from_seq")
        return Join(_str(msg[1], "match_id"), from_seq)
    if kind == COMMAND:
        if len(msg) != 4:
            raise ProtocolError(E_INVALID_FIELD, "COMMAND is [3, ref, kind, args]")
        ref = _int(msg[1], 0, MAX_SEQ, "ref")
        if not isinstance(msg[3], dict):
            raise ProtocolError(E_INVALID_FIELD, "COMMAND args must be a map", ref)
        return Command(ref, _str(msg[2], "command kind"), msg[3])
    if kind == LEAVE:
        if len(msg) != 1:
            raise ProtocolError(E_INVALID_FIELD, "LEAVE is [4]")
        return Leave()
    raise ProtocolError(E_UNKNOWN_TYPE, f"unknown client message type {kind}")


def _decode_inputs(msg: list[Any]) -> Inputs:
    if len(msg) != 2 or not isinstance(msg[1], list):
        raise ProtocolError(E_INVALID_FIELD, "INPUT is [2, [[seq, ...input], ...]]")
    items = msg[1]
    if not 1 <= len(items) <= MAX_INPUTS_PER_FRAME:
        raise ProtocolError(
            E_INVALID_FIELD, f"an INPUT frame carries 1..{MAX_INPUTS_PER_FRAME} inputs"
        )
    out: list[tuple[int, list[Any]]] = []
    last = 0
    for item in items:
        if not isinstance(item, list) or not 2 <= len(item) <= MAX_INPUT_FIELDS + 1:
            raise ProtocolError(
                E_INVALID_FIELD, f"an input is [seq, field, ...] with 1..{MAX_INPUT_FIELDS} fields"
            )
        seq = item[0]
        if type(seq) is not int or not last < seq <= MAX_SEQ:
            raise ProtocolError(
                E_INVALID_FIELD, "input seqs must be integers 1..2**53-1, increasing within a frame"
            )
        last = seq
        out.append((seq, item[1:]))
    return Inputs(out)


# -- server messages ----------------------------------------------------------------------------


def welcome(player: str, role: str, limits: dict[str, Any]) -> bytes:
    """``[16, version, player, role, limits]``."""
    return pack([WELCOME, PROTOCOL_VERSION, player, role, limits])


def joined(
    match_id: str,
    slot: int | None,
    game: str,
    tick_rate: int,
    settings: dict[str, Any],
    seed: int,
    status: str,
    tick: int,
    last_seq: int,
    acked_seq: int,
    resumed: bool,
) -> bytes:
    """``[17, match_id, slot, game, tick_rate, settings, seed, status, tick, last_seq,
    acked_seq, resumed]``; ``slot`` is nil for watchers."""
    return pack(
        [
            JOINED,
            match_id,
            slot,
            game,
            tick_rate,
            settings,
            seed,
            status,
            tick,
            last_seq,
            acked_seq,
            resumed,
        ]
    )


def catchup(first_seq: int, base_tick: int, blob: bytes) -> bytes:
    """``[18, first_seq, base_tick, events]``: stored events, the store's batch bytes."""
    return pack([CATCHUP, first_seq, base_tick, blob])


def update(tick: int, last_seq: int, events: bytes | None, acks: Sequence[int]) -> bytes:
    """``[19, tick, last_seq, events, acks]``; ``acks`` is flat ``[slot, seq, slot, seq, ...]``.

    Encoded once per match per tick and written to every connection of the match."""
    return pack([UPDATE, tick, last_seq, events, acks])


def error(code: str, message: str, ref: int | str | None = None) -> bytes:
    """``[20, code, message, ref]``."""
    return pack([ERROR, code, message, ref])


def ok(ref: int, tick: int) -> bytes:
    """``[21, ref, tick]``: a COMMAND took effect at ``tick`` (durably)."""
    return pack([OK, ref, tick])


def ended(status: str, reason: str, tick: int, scoreboard: list[dict[str, Any]]) -> bytes:
    """``[22, status, reason, tick, scoreboard]``."""
    return pack([ENDED, status, reason, tick, scoreboard])


def encode_inputs(inputs: Sequence[tuple[int, Sequence[Any]]]) -> bytes:
    """The client side of INPUT: ``[(seq, raw), ...]`` to one frame."""
    return pack([INPUT, [[seq, *raw] for seq, raw in inputs]])


def encode_join(match_id: str, from_seq: int | None) -> bytes:
    return pack([JOIN, match_id, from_seq])


def encode_command(ref: int, kind: str, args: dict[str, Any]) -> bytes:
    return pack([COMMAND, ref, kind, args])


def encode_leave() -> bytes:
    return pack([LEAVE])


# -- decoding server messages (client side) ---------------------------------------------------


class Welcome(NamedTuple):
    version: int
    player: str
    role: str
    limits: dict[str, Any]


class Joined(NamedTuple):
    match_id: str
    slot: int | None
    game: str
    tick_rate: int
    settings: dict[str, Any]
    seed: int
    status: str
    tick: int
    last_seq: int
    acked_seq: int
    resumed: bool


class Catchup(NamedTuple):
    first_seq: int
    base_tick: int
    events: bytes


class Update(NamedTuple):
    tick: int
    last_seq: int
    events: bytes | None
    acks: list[int]

    def ack_for(self, slot: int) -> int | None:
        """The cumulative ack of ``slot`` in this update, if it has one."""
        a = self.acks
        for i in range(0, len(a), 2):
            if a[i] == slot:
                return a[i + 1]
        return None


class Error(NamedTuple):
    code: str
    message: str
    ref: int | str | None


class Ok(NamedTuple):
    ref: int
    tick: int


class Ended(NamedTuple):
    status: str
    reason: str
    tick: int
    scoreboard: list[dict[str, Any]]


ServerMessage = Welcome | Joined | Catchup | Update | Error | Ok | Ended
_SERVER_SHAPES: dict[int, type] = {
    WELCOME: Welcome,
    JOINED: Joined,
    CATCHUP: Catchup,
    UPDATE: Update,
    ERROR: Error,
    OK: Ok,
    ENDED: Ended,
}


def decode_server(data: bytes) -> ServerMessage:
    """Parse one server frame (client side); raises :class:`ProtocolError`."""
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
        shape = _SERVER_SHAPES[msg[0]]
        return shape(*msg[1:])
    except (KeyError, TypeError, IndexError) as exc:
        raise ProtocolError(E_MALFORMED, f"unexpected server frame: {exc}") from None
    except Exception as exc:
        raise ProtocolError(E_MALFORMED, f"server frame is not valid msgpack: {exc}") from None
