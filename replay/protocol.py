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
E_SERVER_FULL = "server_full"  # the server is at its limit: no new match or player (try later)
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
CLOSE_MATCH_OVER = 1000  # the match ended as planned: a normal closure (ENDED said why)

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
    if SPECTATE_CLIENT_FIRST <= kind <= SPECTATE_CLIENT_LAST:
        return _decode_spectate(kind, msg)
    if LEADERBOARD_FIRST <= kind <= LEADERBOARD_LAST:
        return _decode_leaderboard(kind, msg)
    raise ProtocolError(E_UNKNOWN_TYPE, f"unknown client message type {kind}")


def decode_input_frame(data: bytes) -> Inputs:
    """Parse a frame that starts like an INPUT (``0x92 0x02``): the fast path of
    :func:`decode_client` for the bulk of the traffic, same rules and errors.

    ``unpackb`` scales its size limits to ``len(data)``, so a frame cannot
    allocate more than about its own size; its keyword-free call is what makes
    it cheaper here than the shared streaming unpacker."""
    try:
        msg = msgpack.unpackb(data)
    except Exception as exc:  # ExtraData, FormatError, StackError, ValueError, UnicodeError...
        raise ProtocolError(E_MALFORMED, f"frame is not valid msgpack: {exc!r}") from None
    if type(msg) is not list or len(msg) != 2 or msg[0] != INPUT or type(msg[0]) is not int:
        return decode_client(data)  # not an INPUT after all: the general path says why
    return _decode_inputs(msg)


def _decode_inputs(msg: list[Any]) -> Inputs:
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


# == Spectating (docs/protocol.md, "Spectating") ==============================================
#
# Type codes: client -> server 32..47, server -> client 64..79 (48..63 are the
# leaderboard queries). A spectator never sends JOIN/INPUT/COMMAND; a player may not
# WATCH (its own match stream is UPDATE). Requests that get one answer carry a ``ref``
# (an integer the client picks) which the answer and any ERROR echo.

SPECTATE_CLIENT_FIRST = 32
SPECTATE_CLIENT_LAST = 47
# client -> server
LIST = 32
WATCH = 33
SEEK = 34
PLAY = 35
PAUSE = 36
STEP = 37
LIVE = 38
MARKERS = 39
CLIP = 40
SCOREBOARD = 41
# server -> client
MATCHES = 64
WATCHING = 65
STATE = 66
FRAME = 67
PLAYBACK = 68
SKIPPED = 69
MARKERS_REPLY = 70
CLIP_REPLY = 71
SCOREBOARD_REPLY = 72

CLIENT_TYPES.update(
    {
        LIST: "LIST",
        WATCH: "WATCH",
        SEEK: "SEEK",
        PLAY: "PLAY",
        PAUSE: "PAUSE",
        STEP: "STEP",
        LIVE: "LIVE",
        MARKERS: "MARKERS",
        CLIP: "CLIP",
        SCOREBOARD: "SCOREBOARD",
    }
)
SERVER_TYPES.update(
    {
        MATCHES: "MATCHES",
        WATCHING: "WATCHING",
        STATE: "STATE",
        FRAME: "FRAME",
        PLAYBACK: "PLAYBACK",
        SKIPPED: "SKIPPED",
        MARKERS_REPLY: "MARKERS",
        CLIP_REPLY: "CLIP",
        SCOREBOARD_REPLY: "SCOREBOARD",
    }
)

E_NOT_WATCHING = "not_watching"  # SEEK/PLAY/... before a successful WATCH

MIN_SPEED = 0.25
MAX_SPEED = 16.0
MAX_STEP = 1000
"""|n| of one STEP: a negative step is a seek, a positive one sends n FRAMEs at once."""
MAX_LIST = 200
"""Matches in one MATCHES answer."""
MAX_CLIP_SECONDS = 60.0
MAX_TICK = 2**31 - 1

PLAYBACK_MODES = ("live", "replay", "paused")


class ListMatches(NamedTuple):
    """``[32, ref, status, limit]``: status ``"live"``, ``"finished"`` or nil (both)."""

    ref: int
    status: str | None
    limit: int


class Watch(NamedTuple):
    """``[33, match_id, from]``: ``from`` is ``"live"`` or a tick (clamped to the edge)."""

    match_id: str
    start: str | int


class Seek(NamedTuple):
    """``[34, tick]``."""

    tick: int


class Play(NamedTuple):
    """``[35, speed]``: 0.25..16 times the match tick rate."""

    speed: float


class Pause(NamedTuple):
    """``[36]``."""


class Step(NamedTuple):
    """``[37, n]``: n ticks forward (n > 0) or back (n < 0); leaves playback paused."""

    n: int


class GoLive(NamedTuple):
    """``[38]``: jump to the delayed live edge and follow it."""


class Markers(NamedTuple):
    """``[39, ref, from_tick, to_tick]``; to_tick nil: up to the edge."""

    ref: int
    from_tick: int
    to_tick: int | None


class Clip(NamedTuple):
    """``[40, ref, kill_tick, seconds]``: the seconds before the kill at ``kill_tick``."""

    ref: int
    kill_tick: int
    seconds: float


class Scoreboard(NamedTuple):
    """``[41, ref]``: the scoreboard at the tick the spectator is watching."""

    ref: int


SpectatorMessage = (
    ListMatches | Watch | Seek | Play | Pause | Step | GoLive | Markers | Clip | Scoreboard
)


def _number(v: Any, lo: float, hi: float, what: str) -> float:
    if type(v) not in (int, float) or not lo <= v <= hi:
        raise ProtocolError(E_INVALID_FIELD, f"{what} must be a number in [{lo:g}, {hi:g}]")
    return float(v)


def _arity(msg: list[Any], n: int, shape: str) -> None:
    if len(msg) != n:
        raise ProtocolError(E_INVALID_FIELD, f"{CLIENT_TYPES[msg[0]]} is {shape}")


def _decode_spectate(kind: int, msg: list[Any]) -> SpectatorMessage:
    if kind == LIST:
        _arity(msg, 4, "[32, ref, status|nil, limit]")
        ref = _int(msg[1], 0, MAX_SEQ, "ref")
        if msg[2] not in (None, "live", "finished"):
            raise ProtocolError(E_INVALID_FIELD, "status must be 'live', 'finished' or nil", ref)
        return ListMatches(ref, msg[2], _int(msg[3], 1, MAX_LIST, "limit"))
    if kind == WATCH:
        _arity(msg, 3, "[33, match_id, 'live'|tick]")
        start = msg[2] if msg[2] == "live" else _int(msg[2], 0, MAX_TICK, "from")
        return Watch(_str(msg[1], "match_id"), start)
    if kind == SEEK:
        _arity(msg, 2, "[34, tick]")
        return Seek(_int(msg[1], 0, MAX_TICK, "tick"))
    if kind == PLAY:
        _arity(msg, 2, "[35, speed]")
        return Play(_number(msg[1], MIN_SPEED, MAX_SPEED, "speed"))
    if kind == PAUSE:
        _arity(msg, 1, "[36]")
        return Pause()
    if kind == STEP:
        _arity(msg, 2, "[37, n]")
        n = _int(msg[1], -MAX_STEP, MAX_STEP, "n")
        if n == 0:
            raise ProtocolError(E_INVALID_FIELD, "n must not be 0")
        return Step(n)
    if kind == LIVE:
        _arity(msg, 1, "[38]")
        return GoLive()
    if kind == MARKERS:
        _arity(msg, 4, "[39, ref, from_tick, to_tick|nil]")
        ref = _int(msg[1], 0, MAX_SEQ, "ref")
        to = None if msg[3] is None else _int(msg[3], 0, MAX_TICK, "to_tick")
        return Markers(ref, _int(msg[2], 0, MAX_TICK, "from_tick"), to)
    if kind == CLIP:
        _arity(msg, 4, "[40, ref, kill_tick, seconds]")
        ref = _int(msg[1], 0, MAX_SEQ, "ref")
        seconds = _number(msg[3], 0.0, MAX_CLIP_SECONDS, "seconds")
        return Clip(ref, _int(msg[2], 0, MAX_TICK, "kill_tick"), seconds)
    if kind == SCOREBOARD:
        _arity(msg, 2, "[41, ref]")
        return Scoreboard(_int(msg[1], 0, MAX_SEQ, "ref"))
    raise ProtocolError(E_UNKNOWN_TYPE, f"unknown client message type {kind}")


# -- spectating: server messages -----------------------------------------------------------


def matches(ref: int, items: list[dict[str, Any]]) -> bytes:
    """``[64, ref, [match, ...]]``."""
    return pack([MATCHES, ref, items])


def watching(info: dict[str, Any]) -> bytes:
    """``[65, info]``: match metadata (docs/protocol.md lists the keys)."""
    return pack([WATCHING, info])


def state(tick: int, state_format: int, data: bytes) -> bytes:
    """``[66, tick, state_format, data]``: replace the client's state (``rules.encode_state``)."""
    return pack([STATE, tick, state_format, data])


def frame(tick: int, events: bytes | None) -> bytes:
    """``[67, tick, events|nil]``: the events of ``tick`` (``replay.codec`` batch bytes);
    ticks between the previous frame and this one had no events."""
    return pack([FRAME, tick, events])


def playback(mode: str, speed: float, tick: int, live_edge: int, clamped: bool) -> bytes:
    """``[68, mode, speed, tick, live_edge, clamped]``."""
    return pack([PLAYBACK, mode, speed, tick, live_edge, clamped])


def skipped(from_tick: int, to_tick: int, reason: str) -> bytes:
    """``[69, from_tick, to_tick, reason]``: ticks the spectator will not get as frames."""
    return pack([SKIPPED, from_tick, to_tick, reason])


def markers_reply(ref: int, items: list[dict[str, Any]]) -> bytes:
    """``[70, ref, [marker, ...]]``."""
    return pack([MARKERS_REPLY, ref, items])


def clip_reply(ref: int, clip: dict[str, Any]) -> bytes:
    """``[71, ref, clip]``."""
    return pack([CLIP_REPLY, ref, clip])


def scoreboard(ref: int | None, tick: int, rows: list[dict[str, Any]]) -> bytes:
    """``[72, ref|nil, tick, rows]``: an answer (ref) or a push when it changed (nil)."""
    return pack([SCOREBOARD_REPLY, ref, tick, rows])


def encode_list(ref: int, status: str | None = None, limit: int = 50) -> bytes:
    return pack([LIST, ref, status, limit])


def encode_watch(match_id: str, start: str | int = "live") -> bytes:
    return pack([WATCH, match_id, start])


def encode_seek(tick: int) -> bytes:
    return pack([SEEK, tick])


def encode_play(speed: float) -> bytes:
    return pack([PLAY, float(speed)])


def encode_pause() -> bytes:
    return pack([PAUSE])


def encode_step(n: int) -> bytes:
    return pack([STEP, n])


def encode_live() -> bytes:
    return pack([LIVE])


def encode_markers(ref: int, from_tick: int = 0, to_tick: int | None = None) -> bytes:
    return pack([MARKERS, ref, from_tick, to_tick])


def encode_clip(ref: int, kill_tick: int, seconds: float = 5.0) -> bytes:
    return pack([CLIP, ref, kill_tick, float(seconds)])


def encode_scoreboard(ref: int) -> bytes:
    return pack([SCOREBOARD, ref])


class Matches(NamedTuple):
    ref: int
    matches: list[dict[str, Any]]


class Watching(NamedTuple):
    info: dict[str, Any]


class State(NamedTuple):
    tick: int
    state_format: int
    data: bytes


class Frame(NamedTuple):
    tick: int
    events: bytes | None


class Playback(NamedTuple):
    mode: str
    speed: float
    tick: int
    live_edge: int
    clamped: bool


class Skipped(NamedTuple):
    from_tick: int
    to_tick: int
    reason: str


class MarkersReply(NamedTuple):
    ref: int
    markers: list[dict[str, Any]]


class ClipReply(NamedTuple):
    ref: int
    clip: dict[str, Any]


class ScoreboardReply(NamedTuple):
    ref: int | None
    tick: int
    rows: list[dict[str, Any]]


_SERVER_SHAPES.update(
    {
        MATCHES: Matches,
        WATCHING: Watching,
        STATE: State,
        FRAME: Frame,
        PLAYBACK: Playback,
        SKIPPED: Skipped,
        MARKERS_REPLY: MarkersReply,
        CLIP_REPLY: ClipReply,
        SCOREBOARD_REPLY: ScoreboardReply,
    }
)


# == Leaderboards (docs/protocol.md, "Leaderboards") ==========================================
#
# Type codes 48..63. Any connection may query (players, spectators, anonymous), before
# or after JOIN/WATCH. The query and its args are those of the HTTP API
# (docs/leaderboards.md): the server runs the same function for both, so the answer's
# body is exactly the JSON object the HTTP route returns, and an error is an ERROR
# with the leaderboard error code (``unknown_board``, ``limit_too_large``, ...) and the ref.

LEADERBOARD_FIRST = 48
LEADERBOARD_LAST = 63
# client -> server
LEADERBOARD = 48
# server -> client
LEADERBOARD_REPLY = 49

CLIENT_TYPES[LEADERBOARD] = "LEADERBOARD"
SERVER_TYPES[LEADERBOARD_REPLY] = "LEADERBOARD"

E_TOO_MANY_QUERIES = "too_many_queries"  # over MAX_PENDING_QUERIES waiting queries

MAX_PENDING_QUERIES = 8
"""Waiting queries (``wait`` given) in flight per connection; each is one suspended
task (~2 KiB). Queries without ``wait`` are answered at once and do not count."""


class LeaderboardQuery(NamedTuple):
    """``[48, ref, query, args]``: query ``"boards"``, ``"top"``, ``"entry"``,
    ``"around"``, ``"count"`` or ``"periods"``; args a map with ``board``, ``player``,
    ``period``, ``limit``, ``cursor``, ``wait``, ``timeout`` as in the HTTP API."""

    ref: int
    query: str
    args: dict[str, Any]


class LeaderboardReply(NamedTuple):
    """``[49, ref, body]``: body is the HTTP route's JSON object (with ``position``)."""

    ref: int
    body: dict[str, Any]


def _decode_leaderboard(kind: int, msg: list[Any]) -> LeaderboardQuery:
    if kind != LEADERBOARD:
        raise ProtocolError(E_UNKNOWN_TYPE, f"unknown client message type {kind}")
    _arity(msg, 4, "[48, ref, query, args]")
    ref = _int(msg[1], 0, MAX_SEQ, "ref")
    if type(msg[2]) is not str or not 1 <= len(msg[2]) <= MAX_ID_CHARS:
        raise ProtocolError(E_INVALID_FIELD, "query must be a string", ref)
    if not isinstance(msg[3], dict):
        raise ProtocolError(E_INVALID_FIELD, "LEADERBOARD args must be a map", ref)
    return LeaderboardQuery(ref, msg[2], msg[3])


def leaderboard_reply(ref: int, body: dict[str, Any]) -> bytes:
    """``[49, ref, body]``."""
    return pack([LEADERBOARD_REPLY, ref, body])


def encode_leaderboard(ref: int, query: str, args: dict[str, Any] | None = None) -> bytes:
    return pack([LEADERBOARD, ref, query, args or {}])


_SERVER_SHAPES[LEADERBOARD_REPLY] = LeaderboardReply
