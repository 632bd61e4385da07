"""Typed errors of the event-sourced core.

Every error a caller can provoke with bad input is one of these, with a
stable ``code`` string (used verbatim in the network protocol's error
messages) and a message that says what was wrong.
"""

from __future__ import annotations

__all__ = [
    "ConcurrencyError",
    "CorruptEventError",
    "CorruptMatchError",
    "EventEncodeError",
    "EventTooLargeError",
    "InvalidEventError",
    "LeaseLostError",
    "MatchEndedError",
    "MatchExistsError",
    "ReplayError",
    "ReplayFileCorruptError",
    "ReplayFileError",
    "ReplayFileTruncatedError",
    "ReplayFileUnsupportedError",
    "StoreClosedError",
    "StoreLockedError",
    "StoreSchemaError",
    "StoreUnavailableError",
    "TickOutOfRangeError",
    "UnknownMatchError",
]


class ReplayError(Exception):
    """Base class: every error matchreplay raises on purpose."""

    code = "error"


class ConcurrencyError(ReplayError):
    """An append's ``expected_version`` is not the match's current version. Nothing was written."""

    code = "concurrency"

    def __init__(self, match_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"match {match_id!r}: expected version {expected}, but the match is at {actual}"
        )
        self.match_id = match_id
        self.expected = expected
        self.actual = actual


class LeaseLostError(ReplayError):
    """A fenced write (an append or a match update with ``epoch=``) came from a node
    that no longer owns the match: its stored lease epoch is ``actual``, not the
    writer's ``epoch``, because another node took the match over or was handed it.
    Nothing was written; the writer must drop its copy of the match."""

    code = "lease_lost"

    def __init__(self, match_id: str, epoch: int, actual: int) -> None:
        super().__init__(
            f"match {match_id!r}: lease epoch {epoch} is no longer the owner's"
            f" (the match is at epoch {actual})"
        )
        self.match_id = match_id
        self.epoch = epoch
        self.actual = actual


class UnknownMatchError(ReplayError, LookupError):
    """No match with this id exists in the store."""

    code = "unknown_match"

    def __init__(self, match_id: str) -> None:
        super().__init__(f"unknown match {match_id!r}")
        self.match_id = match_id


class MatchExistsError(ReplayError):
    """A match with this id already exists."""

    code = "match_exists"

    def __init__(self, match_id: str) -> None:
        super().__init__(f"match {match_id!r} already exists")
        self.match_id = match_id


class MatchEndedError(ReplayError):
    """The match has ended (or was interrupted) and is read-only."""

    code = "match_ended"

    def __init__(self, match_id: str, status: str) -> None:
        super().__init__(f"match {match_id!r} is {status} and read-only")
        self.match_id = match_id


class EventTooLargeError(ReplayError, ValueError):
    """An encoded event exceeds the store's per-event size limit. Nothing was written."""

    code = "event_too_large"


class EventEncodeError(ReplayError, ValueError):
    """An event's payload cannot be encoded with msgpack. Nothing was written."""

    code = "event_encode"


class InvalidEventError(ReplayError, ValueError):
    """A batch breaks a store rule: it is empty, or its ticks go backwards (within the
    batch or against the match's last stored tick). Nothing was written."""

    code = "invalid_event"


class CorruptEventError(ReplayError):
    """A stored event could not be decoded. Names the match and seq range when known."""

    code = "corrupt_event"


class StoreClosedError(ReplayError):
    """The store was closed; no more appends are accepted."""

    code = "store_closed"


class StoreUnavailableError(ReplayError):
    """The store's database cannot be reached (a PostgreSQL server stopped, a network
    cut). Appends in flight failed and nothing of them was acknowledged; the store
    reconnects by itself on the next call."""

    code = "store_unavailable"


class StoreSchemaError(ReplayError):
    """The store was written by a newer matchreplay (its schema version is higher
    than this build knows); it is refused rather than misread."""

    code = "store_schema"


class StoreLockedError(ReplayError):
    """Another process has the store open for writing (an SQLite file has one writer
    process at a time); the message names that process."""

    code = "store_busy"


class CorruptMatchError(ReplayError):
    """A stored match row (its players, settings or options) cannot be decoded. Only
    that match is affected: listings skip it and report it."""

    code = "corrupt_match"

    def __init__(self, match_id: str, reason: str) -> None:
        super().__init__(f"match {match_id!r}: stored record is damaged ({reason})")
        self.match_id = match_id
        self.reason = reason


class NotRewindableError(ReplayError):
    """The game's rules have no ``rebase`` (replay/rules.py): its matches cannot be
    rewound, and a stream with a ``rewound`` event cannot be folded with them."""

    code = "rewind_unsupported"


class TickOutOfRangeError(ReplayError, ValueError):
    """A replay asked for a tick outside ``0..last durable tick`` of the match."""

    code = "tick_out_of_range"

    def __init__(self, match_id: str, tick: int, last_tick: int) -> None:
        super().__init__(
            f"match {match_id!r} has ticks 0..{last_tick}; tick {tick} is outside the match"
        )
        self.match_id = match_id
        self.tick = tick
        self.last_tick = last_tick


class ReplayFileError(ReplayError):
    """A replay file (``.mrp``, docs/replay-format.md) that cannot be read. Nothing was imported."""

    code = "replay_file"


class ReplayFileTruncatedError(ReplayFileError):
    """The file ends before its trailer, or an offset points past its end."""

    code = "replay_file_truncated"


class ReplayFileCorruptError(ReplayFileError):
    """A checksum does not match, or a section does not decode."""

    code = "replay_file_corrupt"


class ReplayFileUnsupportedError(ReplayFileError):
    """The file's format version (or its game) is unknown to this build."""

    code = "replay_file_unsupported_version"
