"""Upcasting stored events to the current versions of their game's catalog.

The one place it happens: the event store applies it to every batch it reads and the
replay file reader to every chunk, so an old event reads the same from either.
"""

from __future__ import annotations

from typing import Any

from replay.errors import CorruptEventError
from replay.events import EventCatalog, UnknownEventType

__all__ = ["upcast_events"]


def upcast_events(catalog: EventCatalog, events: list[Any], where: str, first_seq: int) -> None:
    """Upcast, in place, the ``(type, version, tick, data)`` tuples of one batch
    (None entries, events a scan skipped, stay None). A type missing from this build's
    catalog is left as stored; a version from the future or a failing upcaster raises
    CorruptEventError naming ``where`` and the event's seq."""
    current = catalog.current
    # The hot path: one set comprehension decides that nothing needs upcasting.
    if {(e[0], e[1]) for e in events if e is not None} <= current:
        return
    for i, e in enumerate(events):
        if e is None:
            continue
        type_, version, tick, data = e
        if (type_, version) in current:
            continue
        try:
            data, version = catalog.upcast(type_, version, data)
        except UnknownEventType:
            continue  # not in this build's catalog: returned as stored
        except Exception as exc:  # a version from the future, a failing upcaster
            raise CorruptEventError(
                f"{where}: event {first_seq + i} cannot be upcast: {exc}"
            ) from exc
        events[i] = (type_, version, tick, data)
