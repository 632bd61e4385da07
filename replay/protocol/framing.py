"""What every sub-protocol shares: the subprotocol name, the limits, and how one client
frame is unpacked and its fields checked.

Every frame is one binary WebSocket message holding one msgpack array whose first
element is the message type code: ``[type, field1, field2, ...]``. Arrays (not maps)
keep inputs compact: an input costs ~8-12 bytes.
"""

from __future__ import annotations

from typing import Any

import msgpack

from replay.protocol.errors import (
    E_INVALID_FIELD,
    E_MALFORMED,
    E_TEXT_FRAME,
    E_TOO_LARGE,
    ProtocolError,
)

__all__ = [
    "DEFAULT_COMMAND_BURST",
    "DEFAULT_COMMAND_RATE",
    "DEFAULT_CONTROL_BURST",
    "DEFAULT_CONTROL_RATE",
    "DEFAULT_INPUT_BURST",
    "DEFAULT_INPUT_RATE",
    "DEFAULT_QUERY_BURST",
    "DEFAULT_QUERY_RATE",
    "MAX_COMMAND_ARGS_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_ID_CHARS",
    "MAX_INPUTS_PER_FRAME",
    "MAX_INPUT_FIELDS",
    "MAX_NESTING",
    "MAX_SEQ",
    "MAX_TICK",
    "PROTOCOL_VERSION",
    "ROLES",
    "SUBPROTOCOL",
    "check_arity",
    "check_nesting",
    "int_field",
    "number_field",
    "str_field",
    "unpack_client_frame",
]

SUBPROTOCOL = "matchreplay.v1"
"""Offered by the client in ``Sec-WebSocket-Protocol``; any other value is refused (HTTP 400)."""
PROTOCOL_VERSION = 1

ROLES = ("player", "spectator", "admin")
"""The roles a token may carry (docs/protocol.md section 2)."""

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
MAX_TICK = 2**31 - 1
DEFAULT_INPUT_RATE = 120.0
"""Inputs per second per connection (token bucket), 4x a 30 Hz client."""
DEFAULT_INPUT_BURST = 240
"""Bucket size: inputs a connection may send at once after being quiet."""
DEFAULT_COMMAND_RATE = 5.0
"""COMMANDs per second per connection (chat included: a game command)."""
DEFAULT_COMMAND_BURST = 20
DEFAULT_QUERY_RATE = 20.0
"""LEADERBOARD queries per second per connection."""
DEFAULT_QUERY_BURST = 40
DEFAULT_CONTROL_RATE = 20.0
"""Every other client message per second per connection: JOIN, LEAVE and the spectator
messages (LIST, WATCH, PLAY, PAUSE, STEP, LIVE, MARKERS, CLIP, SCOREBOARD). SEEK has no
budget: seeks coalesce (server/spectator_session.py)."""
DEFAULT_CONTROL_BURST = 40
MAX_COMMAND_ARGS_BYTES = 1024
"""A COMMAND's args map, msgpack-encoded, is at most this many bytes."""
MAX_NESTING = 16
"""Arrays and maps in a client frame nest at most this deep (the frame's own array is 1);
deeper frames are refused with ``too_large`` before any handler sees them."""

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


def unpack_client_frame(data: bytes | str) -> list[Any]:
    """One client frame as ``[type:int, ...fields]``; :class:`ProtocolError` otherwise."""
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
    return msg


def check_nesting(value: Any, limit: int) -> None:
    """:class:`ProtocolError` ``too_large`` when containers in ``value`` nest deeper than
    ``limit``. Iterative: a deep value cannot exhaust the interpreter's stack here."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ProtocolError(E_TOO_LARGE, f"containers nest deeper than {limit}")
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (list, dict)))
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (list, dict)))


# -- field checks (every decoder's) ---------------------------------------------------------


def int_field(v: Any, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError(E_INVALID_FIELD, f"{what} must be an integer in [{lo}, {hi}]")
    return v


def str_field(v: Any, what: str) -> str:
    if type(v) is not str or not 1 <= len(v) <= MAX_ID_CHARS:
        raise ProtocolError(E_INVALID_FIELD, f"{what} must be a string of 1..{MAX_ID_CHARS} chars")
    return v


def number_field(v: Any, lo: float, hi: float, what: str) -> float:
    if type(v) not in (int, float) or not lo <= v <= hi:
        raise ProtocolError(E_INVALID_FIELD, f"{what} must be a number in [{lo:g}, {hi:g}]")
    return float(v)


def check_arity(msg: list[Any], n: int, shape: str) -> None:
    """``shape`` names the message and its fields: ``"LIST is [32, ref, status|nil, limit]"``."""
    if len(msg) != n:
        raise ProtocolError(E_INVALID_FIELD, shape)
