"""Typed errors of the event-sourced core.

Every error a caller can provoke with bad input is one of these, with a
stable ``code`` string (used verbatim in the network protocol's error
messages) and a message that says what was wrong.
"""

from __future__ import annotations

__all__ = [
    "ConcurrencyError",
    "CorruptEventError",
    "EventEncodeError",
    "EventTooLargeError",
    "MatchEndedError",
    "MatchExistsError",
    "ReplayError",
    "StoreClosedError",
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


class CorruptEventError(ReplayError):
    """A stored event could not be decoded. Names the match and seq range when known."""

    code = "corrupt_event"


class StoreClosedError(ReplayError):
    """The store was closed; no more appends are accepted."""

    code = "store_closed"
