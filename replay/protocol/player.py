"""The player sub-protocol: JOIN a match, send INPUTs and COMMANDs, get its events
and acks (docs/protocol.md sections 3 to 5). Type codes: client 1..15, server 16..31.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgpack

from replay.codec import pack
from replay.protocol.errors import E_INVALID_FIELD, E_MALFORMED, E_TOO_LARGE, ProtocolError
from replay.protocol.framing import (
    MAX_COMMAND_ARGS_BYTES,
    MAX_INPUT_FIELDS,
    MAX_INPUTS_PER_FRAME,
    MAX_SEQ,
    PROTOCOL_VERSION,
    check_arity,
    int_field,
    str_field,
)

__all__ = [
    "CATCHUP",
    "COMMAND",
    "ENDED",
    "ERROR",
    "INPUT",
    "JOIN",
    "JOINED",
    "LEAVE",
    "OK",
    "UPDATE",
    "WELCOME",
    "Catchup",
    "Command",
    "Ended",
    "Error",
    "Inputs",
    "Join",
    "Joined",
    "Leave",
    "Ok",
    "Update",
    "Welcome",
    "catchup",
    "decode_inputs",
    "encode_command",
    "encode_inputs",
    "encode_join",
    "encode_leave",
    "ended",
    "error",
    "joined",
    "ok",
    "unpack_input_frame",
    "update",
    "welcome",
]

# -- type codes -------------------------------------------------------------------------------

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
    """``[3, ref, kind, args]``: a discrete command (the game's ``Rules.player_commands``;
    admins: its ``admin_commands`` and ``start``, ``end``)."""

    ref: int
    kind: str
    args: dict[str, Any]


class Leave(NamedTuple):
    """``[4]``: give up the seat now (no grace period)."""


def _decode_join(msg: list[Any]) -> Join:
    check_arity(msg, 3, "JOIN is [1, match_id, from_seq]")
    from_seq = None if msg[2] is None else int_field(msg[2], 0, MAX_SEQ, "from_seq")
    return Join(str_field(msg[1], "match_id"), from_seq)


def decode_inputs(msg: list[Any]) -> Inputs:
    """An unpacked INPUT frame, checked (the hot path: no per-input allocation but the tuple)."""
    if len(msg) != 2 or type(msg[1]) is not list:
        raise ProtocolError(E_INVALID_FIELD, "INPUT is [2, [[seq, ...input], ...]]")
    items = msg[1]
    if not 1 <= len(items) <= MAX_INPUTS_PER_FRAME:
        raise ProtocolError(
            E_INVALID_FIELD, f"an INPUT frame carries 1..{MAX_INPUTS_PER_FRAME} inputs"
        )
    out: list[tuple[int, list[Any]]] = []
    last = 0
    for item in items:
        if type(item) is not list or not 2 <= len(item) <= MAX_INPUT_FIELDS + 1:
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


def unpack_input_frame(data: bytes) -> list[Any] | None:
    """The fast unpack of a frame that starts like an INPUT (``0x92 0x02``): the
    unpacked ``[2, inputs]``, or None when it is not an INPUT after all.

    ``unpackb`` scales its size limits to ``len(data)``, so a frame cannot
    allocate more than about its own size; its keyword-free call is what makes
    it cheaper here than the shared streaming unpacker."""
    try:
        msg = msgpack.unpackb(data)
    except Exception as exc:  # ExtraData, FormatError, StackError, ValueError, UnicodeError...
        raise ProtocolError(E_MALFORMED, f"frame is not valid msgpack: {exc!r}") from None
    if type(msg) is not list or len(msg) != 2 or msg[0] != INPUT or type(msg[0]) is not int:
        return None
    return msg


def _decode_command(msg: list[Any]) -> Command:
    check_arity(msg, 4, "COMMAND is [3, ref, kind, args]")
    ref = int_field(msg[1], 0, MAX_SEQ, "ref")
    if not isinstance(msg[3], dict):
        raise ProtocolError(E_INVALID_FIELD, "COMMAND args must be a map", ref)
    if len(pack(msg[3])) > MAX_COMMAND_ARGS_BYTES:  # commands are rare: packing again is cheap
        raise ProtocolError(
            E_TOO_LARGE, f"COMMAND args are at most {MAX_COMMAND_ARGS_BYTES} bytes", ref
        )
    return Command(ref, str_field(msg[2], "command kind"), msg[3])


def _decode_leave(msg: list[Any]) -> Leave:
    check_arity(msg, 1, "LEAVE is [4]")
    return Leave()


def encode_inputs(inputs: Sequence[tuple[int, Sequence[Any]]]) -> bytes:
    """The client side of INPUT: ``[(seq, raw), ...]`` to one frame."""
    return pack([INPUT, [[seq, *raw] for seq, raw in inputs]])


def encode_join(match_id: str, from_seq: int | None) -> bytes:
    return pack([JOIN, match_id, from_seq])


def encode_command(ref: int, kind: str, args: dict[str, Any]) -> bytes:
    return pack([COMMAND, ref, kind, args])


def encode_leave() -> bytes:
    return pack([LEAVE])


# -- server messages ----------------------------------------------------------------------------


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


# -- the table -----------------------------------------------------------------------------------

CLIENT_MESSAGES: dict[int, tuple[str, Callable[[list[Any]], Any]]] = {
    JOIN: ("JOIN", _decode_join),
    INPUT: ("INPUT", decode_inputs),
    COMMAND: ("COMMAND", _decode_command),
    LEAVE: ("LEAVE", _decode_leave),
}
"""Type code -> (name, decoder of the unpacked frame)."""
SERVER_MESSAGES: dict[int, tuple[str, type]] = {
    WELCOME: ("WELCOME", Welcome),
    JOINED: ("JOINED", Joined),
    CATCHUP: ("CATCHUP", Catchup),
    UPDATE: ("UPDATE", Update),
    ERROR: ("ERROR", Error),
    OK: ("OK", Ok),
    ENDED: ("ENDED", Ended),
}
"""Type code -> (name, the message's fields after the code)."""
