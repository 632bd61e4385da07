"""The spectator sub-protocol (docs/protocol.md section 11): list matches, WATCH one
live or from any tick, seek, play, pause, step, markers, clips, scoreboards.

Type codes: client -> server 32..47, server -> client 64..79. A spectator never sends
JOIN/INPUT/COMMAND; a player may not WATCH (its own match stream is UPDATE). Requests
that get one answer carry a ``ref`` (an integer the client picks) which the answer and
any ERROR echo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from replay.codec import pack
from replay.protocol.errors import E_INVALID_FIELD, ProtocolError
from replay.protocol.framing import (
    MAX_SEQ,
    MAX_TICK,
    check_arity,
    int_field,
    number_field,
    str_field,
)

__all__ = [
    "CLIP",
    "CLIP_REPLY",
    "FRAME",
    "LIST",
    "LIVE",
    "MARKERS",
    "MARKERS_REPLY",
    "MATCHES",
    "MAX_CLIP_SECONDS",
    "MAX_LIST",
    "MAX_SPEED",
    "MAX_STEP",
    "MIN_SPEED",
    "PAUSE",
    "PLAY",
    "PLAYBACK",
    "PLAYBACK_MODES",
    "SCOREBOARD",
    "SCOREBOARD_REPLY",
    "SEEK",
    "SKIPPED",
    "STATE",
    "STEP",
    "WATCH",
    "WATCHING",
    "Clip",
    "ClipReply",
    "Frame",
    "GoLive",
    "ListMatches",
    "Markers",
    "MarkersReply",
    "Matches",
    "Pause",
    "Play",
    "Playback",
    "Scoreboard",
    "ScoreboardReply",
    "Seek",
    "Skipped",
    "SpectatorMessage",
    "State",
    "Step",
    "Watch",
    "Watching",
    "clip_reply",
    "encode_clip",
    "encode_list",
    "encode_live",
    "encode_markers",
    "encode_pause",
    "encode_play",
    "encode_scoreboard",
    "encode_seek",
    "encode_step",
    "encode_watch",
    "frame",
    "markers_reply",
    "matches",
    "playback",
    "scoreboard",
    "skipped",
    "state",
    "watching",
]

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

MIN_SPEED = 0.25
MAX_SPEED = 16.0
MAX_STEP = 1000
"""|n| of one STEP: a negative step is a seek, a positive one sends n FRAMEs at once."""
MAX_LIST = 200
"""Matches in one MATCHES answer."""
MAX_CLIP_SECONDS = 60.0

PLAYBACK_MODES = ("live", "replay", "paused")

# -- client messages --------------------------------------------------------------------------


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
    """``[39, ref, from_tick, to_tick]`` or ``[39, ref, from_tick, to_tick, abandoned]``;
    to_tick nil: up to the edge; abandoned true: the markers of abandoned branches too."""

    ref: int
    from_tick: int
    to_tick: int | None
    abandoned: bool = False


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


def _list(msg: list[Any]) -> ListMatches:
    check_arity(msg, 4, "LIST is [32, ref, status|nil, limit]")
    ref = int_field(msg[1], 0, MAX_SEQ, "ref")
    if msg[2] not in (None, "live", "finished"):
        raise ProtocolError(E_INVALID_FIELD, "status must be 'live', 'finished' or nil", ref)
    return ListMatches(ref, msg[2], int_field(msg[3], 1, MAX_LIST, "limit"))


def _watch(msg: list[Any]) -> Watch:
    check_arity(msg, 3, "WATCH is [33, match_id, 'live'|tick]")
    start = msg[2] if msg[2] == "live" else int_field(msg[2], 0, MAX_TICK, "from")
    return Watch(str_field(msg[1], "match_id"), start)


def _seek(msg: list[Any]) -> Seek:
    check_arity(msg, 2, "SEEK is [34, tick]")
    return Seek(int_field(msg[1], 0, MAX_TICK, "tick"))


def _play(msg: list[Any]) -> Play:
    check_arity(msg, 2, "PLAY is [35, speed]")
    return Play(number_field(msg[1], MIN_SPEED, MAX_SPEED, "speed"))


def _pause(msg: list[Any]) -> Pause:
    check_arity(msg, 1, "PAUSE is [36]")
    return Pause()


def _step(msg: list[Any]) -> Step:
    check_arity(msg, 2, "STEP is [37, n]")
    n = int_field(msg[1], -MAX_STEP, MAX_STEP, "n")
    if n == 0:
        raise ProtocolError(E_INVALID_FIELD, "n must not be 0")
    return Step(n)


def _live(msg: list[Any]) -> GoLive:
    check_arity(msg, 1, "LIVE is [38]")
    return GoLive()


def _markers(msg: list[Any]) -> Markers:
    shape = "MARKERS is [39, ref, from_tick, to_tick|nil(, abandoned:bool)]"
    check_arity(msg, 5 if len(msg) == 5 else 4, shape)
    ref = int_field(msg[1], 0, MAX_SEQ, "ref")
    to = None if msg[3] is None else int_field(msg[3], 0, MAX_TICK, "to_tick")
    abandoned = msg[4] if len(msg) == 5 else False
    if not isinstance(abandoned, bool):
        raise ProtocolError(E_INVALID_FIELD, "abandoned must be true or false", ref)
    return Markers(ref, int_field(msg[2], 0, MAX_TICK, "from_tick"), to, abandoned)


def _clip(msg: list[Any]) -> Clip:
    check_arity(msg, 4, "CLIP is [40, ref, kill_tick, seconds]")
    ref = int_field(msg[1], 0, MAX_SEQ, "ref")
    seconds = number_field(msg[3], 0.0, MAX_CLIP_SECONDS, "seconds")
    return Clip(ref, int_field(msg[2], 0, MAX_TICK, "kill_tick"), seconds)


def _scoreboard(msg: list[Any]) -> Scoreboard:
    check_arity(msg, 2, "SCOREBOARD is [41, ref]")
    return Scoreboard(int_field(msg[1], 0, MAX_SEQ, "ref"))


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


def encode_markers(
    ref: int, from_tick: int = 0, to_tick: int | None = None, abandoned: bool = False
) -> bytes:
    tail = [True] if abandoned else []
    return pack([MARKERS, ref, from_tick, to_tick, *tail])


def encode_clip(ref: int, kill_tick: int, seconds: float = 5.0) -> bytes:
    return pack([CLIP, ref, kill_tick, float(seconds)])


def encode_scoreboard(ref: int) -> bytes:
    return pack([SCOREBOARD, ref])


# -- server messages ----------------------------------------------------------------------------


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


# -- the table -----------------------------------------------------------------------------------

CLIENT_MESSAGES: dict[int, tuple[str, Callable[[list[Any]], Any]]] = {
    LIST: ("LIST", _list),
    WATCH: ("WATCH", _watch),
    SEEK: ("SEEK", _seek),
    PLAY: ("PLAY", _play),
    PAUSE: ("PAUSE", _pause),
    STEP: ("STEP", _step),
    LIVE: ("LIVE", _live),
    MARKERS: ("MARKERS", _markers),
    CLIP: ("CLIP", _clip),
    SCOREBOARD: ("SCOREBOARD", _scoreboard),
}
"""Type code -> (name, decoder of the unpacked frame)."""
SERVER_MESSAGES: dict[int, tuple[str, type]] = {
    MATCHES: ("MATCHES", Matches),
    WATCHING: ("WATCHING", Watching),
    STATE: ("STATE", State),
    FRAME: ("FRAME", Frame),
    PLAYBACK: ("PLAYBACK", Playback),
    SKIPPED: ("SKIPPED", Skipped),
    MARKERS_REPLY: ("MARKERS", MarkersReply),
    CLIP_REPLY: ("CLIP", ClipReply),
    SCOREBOARD_REPLY: ("SCOREBOARD", ScoreboardReply),
}
"""Type code -> (name, the message's fields after the code)."""
