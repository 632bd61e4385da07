"""Example games used by the tests (not shipped): proof that the rules interface
is not shaped around arena alone. ``GAMES`` is the registry the tests hand to
everything that needs games by name."""

from __future__ import annotations

from pathlib import Path

from games.tug import TugRules
from replay.games import builtin_games
from replay.rules import GameRegistry
from replay.store import open_store
from replay.store.base import EventStore
from replay.store.recorder import Recorder

GAMES = GameRegistry([*builtin_games().values(), TugRules()])
ARENA = GAMES["arena"]
METRICS = GAMES.leaderboard_metrics()
TUG_SPEC = "games.tug:TugRules"
"""The tug-of-war game as a server's ``games`` setting loads it."""


def open_test_store(path: str | Path, **options: object) -> EventStore:
    """A store that knows the test games' catalogs (upcasting on read)."""
    return open_store(str(path), catalogs=GAMES.catalogs(), **options)


def store_over(recorder: Recorder) -> EventStore:
    """A store (to open) over ``recorder`` that knows the test games' catalogs: e.g. over
    a copy of memory rows recorded once (``MemoryRecorder.clone``)."""
    return EventStore(recorder, catalogs=GAMES.catalogs())
