"""Event stores: :class:`EventStore` (:mod:`replay.store.base`) over a recorder
(:mod:`replay.store.recorder`): memory, SQLite or PostgreSQL."""

from replay.store.base import (
    AppendResult,
    EventBatch,
    EventIds,
    EventStore,
    Keyframe,
    Lease,
    MatchRecord,
    NodeRow,
)

__all__ = [
    "AppendResult",
    "EventBatch",
    "EventIds",
    "EventStore",
    "Keyframe",
    "Lease",
    "MatchRecord",
    "NodeRow",
    "open_store",
    "store_file",
]


def store_file(url: str) -> str | None:
    """The SQLite file of a store URL, or None when the store is not a local file
    (``postgresql://``, ``memory:``)."""
    if url.startswith(("postgresql://", "postgres://")) or url == "memory:":
        return None
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:") else url


def open_store(url: str, **options: object) -> EventStore:
    """The store at ``url``:

    * ``postgresql://user@host:port/db`` (or ``postgres://``): a PostgreSQL database
      shared by any number of processes and machines;
    * ``memory:``: an empty store in this process's memory (tests);
    * ``sqlite:///path/to/file.db`` or a plain file path: an SQLite file.

    ``catalogs`` (game name -> event catalog) makes old events upcast on read;
    ``max_event_bytes`` bounds one event; ``synchronous`` (FULL or NORMAL) is the
    SQLite durability level, ignored by the other backends. ``read_only`` opens an
    SQLite file without its writer lock (:mod:`replay.store.lock`) and refuses writes:
    for readers beside a running server; the other backends share their database
    between writers and ignore it.
    """
    catalogs = options.pop("catalogs", None)
    max_event_bytes = options.pop("max_event_bytes", None)
    store_options: dict = {"catalogs": catalogs}
    if max_event_bytes is not None:
        store_options["max_event_bytes"] = max_event_bytes
    if url.startswith(("postgresql://", "postgres://")):
        from replay.store.postgres import PostgresRecorder

        options.pop("synchronous", None)
        options.pop("read_only", None)
        return EventStore(PostgresRecorder(url, **options), **store_options)  # type: ignore[arg-type]
    if url == "memory:":
        options.pop("read_only", None)
        from replay.store.memory import MemoryRecorder

        return EventStore(MemoryRecorder(), **store_options)
    from replay.store.sqlite import SQLiteEventStore

    return SQLiteEventStore(store_file(url), **store_options, **options)  # type: ignore[arg-type]
