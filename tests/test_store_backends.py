"""The event store contract over every recorder: memory, SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_contract import CATALOGS, EventStoreContract

from replay.store import open_store
from replay.store.base import EventStore

BACKENDS = ["memory", "sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new, empty store of each backend is."""
    if request.param == "memory":
        return "memory:"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("pg_url")


class TestEventStoreContract(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _url(self, store_url: str) -> None:
        self.url = store_url

    def make_store(self) -> EventStore:
        return open_store(self.url, catalogs=CATALOGS)
