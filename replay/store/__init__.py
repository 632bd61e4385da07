"""Event stores: the interface (:mod:`replay.store.base`) and its backends."""

from replay.store.base import (
    AppendResult,
    EventBatch,
    EventIds,
    EventStore,
    Keyframe,
    MatchRecord,
)

__all__ = [
    "AppendResult",
    "EventBatch",
    "EventIds",
    "EventStore",
    "Keyframe",
    "MatchRecord",
    "open_store",
]


def open_store(path: str, **options: object) -> EventStore:
    """The store at ``path``: ``sqlite:///path/to/file.db`` or a plain SQLite file path.
    ``catalogs`` (game name -> event catalog) makes old events upcast on read."""
    from replay.store.sqlite import SQLiteEventStore

    path = path.removeprefix("sqlite:///") if path.startswith("sqlite:") else path
    return SQLiteEventStore(path, **options)  # type: ignore[arg-type]
