"""The msgpack codec for event batches (layout documented in docs/events.md).

A batch is the unit the store appends and reads: the events of one match
appended in one call, usually one simulation tick. It is encoded as one
msgpack array of events, each a flat array::

    [type, version, tick - base_tick, *data]

``base_tick`` is the tick of the batch's first event and is stored beside the
blob, so the tick costs one byte per event. No string keys are repeated per
event and msgpack keeps small integers in one byte, so a typical movement
event ``[6, 1, 0, player, x, y]`` takes 10-12 bytes.

Encoding the whole batch with one ``packb`` call keeps the hot path in C.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any, overload

import msgpack

from replay.errors import CorruptEventError, EventEncodeError
from replay.events import NewEvent

__all__ = ["decode_batch", "encode_batch", "pack", "unpack"]

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def pack(obj: Any) -> bytes:
    """msgpack with bin types kept apart from strings (the convention everywhere here)."""
    return _packer.pack(obj)


def unpack(data: bytes, **limits: int) -> Any:
    """Decode msgpack where arrays become lists and only str keys are allowed in maps."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, **limits)


def encode_batch(events: Sequence[NewEvent]) -> bytes:
    """Encode events of one match; ``events[0].tick`` is the base tick.

    Raises :class:`EventEncodeError` naming the first event whose payload
    msgpack cannot encode (a float NaN encodes; a Python object does not).
    """
    base = events[0].tick
    rows = [(e.type, e.version, e.tick - base, *e.data) for e in events]
    try:
        return _packer.pack(rows)
    except (TypeError, ValueError, OverflowError) as exc:
        for i, e in enumerate(events):
            try:
                msgpack.packb(list(e.data), use_bin_type=True)
            except (TypeError, ValueError, OverflowError) as inner:
                raise EventEncodeError(
                    f"event {i} (type {e.type}) does not encode: {inner}"
                ) from inner
        raise EventEncodeError(f"batch does not encode: {exc}") from exc


def encoded_sizes(events: Sequence[NewEvent]) -> list[int]:
    """Encoded size of each event, for enforcing the per-event size limit."""
    base = events[0].tick
    return [len(_packer.pack((e.type, e.version, e.tick - base, *e.data))) for e in events]


_Row = tuple[int, int, int, tuple[Any, ...]]


@overload
def decode_batch(blob: bytes, base_tick: int) -> list[_Row]: ...
@overload
def decode_batch(blob: bytes, base_tick: int, types: Container[int]) -> list[_Row | None]: ...
def decode_batch(
    blob: bytes, base_tick: int, types: Container[int] | None = None
) -> list[_Row] | list[_Row | None]:
    """Decode a batch to ``(type, version, tick, data)`` tuples, in order.

    With ``types``, events of other types are None instead (positions kept, no
    tuple built): a projection's scan reads a few types out of busy batches.
    Raises :class:`CorruptEventError` when the blob is not a well-formed batch;
    the caller adds which match and seq it came from.
    """
    try:
        rows = msgpack.unpackb(blob, raw=False, use_list=True, strict_map_key=True)
        if types is None:
            return [(r[0], r[1], base_tick + r[2], tuple(r[3:])) for r in rows]
        return [
            (r[0], r[1], base_tick + r[2], tuple(r[3:])) if r[0] in types else None for r in rows
        ]
    except Exception as exc:  # any malformed blob: msgpack errors, wrong shapes, wrong types
        raise CorruptEventError(f"undecodable event batch: {exc!r}") from exc
