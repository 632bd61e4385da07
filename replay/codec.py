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
from itertools import repeat
from operator import sub
from typing import Any, overload

import msgpack

from replay.errors import CorruptEventError, EventEncodeError
from replay.events import NewEvent

__all__ = ["decode_batch", "encode_batch", "encode_columns", "pack", "unpack"]

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
_concat = tuple.__add__


def pack(obj: Any) -> bytes:
    """msgpack with bin types kept apart from strings (the convention everywhere here)."""
    return _packer.pack(obj)


def unpack(data: bytes, **limits: int) -> Any:
    """Decode msgpack where arrays become lists and only str keys are allowed in maps."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, **limits)


def encode_batch(events: Sequence[NewEvent]) -> bytes:
    """Encode events of one match; ``events[0].tick`` is the base tick.

    Raises :class:`EventEncodeError` naming the first event whose payload
    msgpack cannot encode (a float NaN encodes; a Python object does not), and
    TypeError when a payload is not a sequence.
    """
    return encode_columns(*zip(*events, strict=True))


def encode_columns(
    kinds: Sequence[int],
    ticks: Sequence[int],
    payloads: Sequence[Sequence[Any]],
    versions: Sequence[int],
) -> bytes:
    """:func:`encode_batch` of the events given as columns, in ``NewEvent``'s field
    order (``zip(*events)``): the same bytes, for a caller that has the columns already
    (the event store checks them)."""
    rows = _rows(kinds, ticks, payloads, versions)
    try:
        return _packer.pack(rows)
    except (TypeError, ValueError, OverflowError) as exc:
        for i, data in enumerate(payloads):
            try:
                msgpack.packb(list(data), use_bin_type=True)
            except (TypeError, ValueError, OverflowError) as inner:
                raise EventEncodeError(
                    f"event {i} (type {kinds[i]}) does not encode: {inner}"
                ) from inner
        raise EventEncodeError(f"batch does not encode: {exc}") from exc


def _rows(
    kinds: Sequence[int],
    ticks: Sequence[int],
    payloads: Sequence[Sequence[Any]],
    versions: Sequence[int],
) -> list[tuple[Any, ...]]:
    """Each event's stored row, ``(type, version, tick - base tick, *data)``: the one
    place the byte rule is written. Built by C-level ``map``/``zip``, not a Python loop
    per event; a batch at one tick (the usual) subtracts nothing."""
    base = ticks[0]
    offsets = repeat(0) if ticks.count(base) == len(ticks) else map(sub, ticks, repeat(base))
    heads = zip(kinds, versions, offsets, strict=False)  # offsets may be an endless repeat
    try:
        rows = list(map(_concat, heads, payloads))
        if len(rows) == len(kinds):
            return rows
    except TypeError:  # a payload that is not a tuple (a list encodes by the same rule)
        pass
    return [
        (kind, version, tick - base, *data)
        for kind, tick, data, version in zip(kinds, ticks, payloads, versions, strict=True)
    ]


def encoded_sizes(events: Sequence[NewEvent]) -> list[int]:
    """Encoded size of each event, for enforcing the per-event size limit."""
    return [len(_packer.pack(row)) for row in _rows(*zip(*events, strict=True))]


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
