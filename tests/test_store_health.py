"""A server whose PostgreSQL goes away says so on /healthz (503 "unavailable") and
recovers by itself when it is back, without waiting for an append (a real server on
loopback over a real PostgreSQL cluster stopped with ``pg_ctl stop -m immediate``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import PgCluster
from server_helpers import call, running_app
from store_contract import tick_batch

from replay.errors import StoreUnavailableError
from replay.store.base import MatchRecord


async def test_healthz_is_unavailable_while_postgresql_is_away_then_recovers(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    async with running_app(
        tmp_path, db=pg_cluster.url, boards_db=str(tmp_path / "boards.sqlite")
    ) as app:
        status, health = await call(app, "GET", "/healthz")
        assert status == 200 and health["status"] == "ok", health
        # A match row no live match writes to (a live one now writes its ``admin`` create
        # event on its own, which would race with the appends here).
        match_id = "health"
        await app.store.create_match(MatchRecord(match_id, "arena", "1", 30))
        await app.store.append(match_id, tick_batch(0), 0)  # as a match's tick loop does
        await asyncio.to_thread(pg_cluster.stop, "immediate")
        with pytest.raises(StoreUnavailableError):
            await app.store.append(match_id, tick_batch(1), 4)
        status, health = await call(app, "GET", "/healthz")
        assert status == 503 and health["status"] == "unavailable", health
        assert health["unavailable"]
        await asyncio.to_thread(pg_cluster.start)
        status, health = await call(app, "GET", "/healthz")  # no append in between
        assert status == 200 and health["status"] == "ok", health
        assert (await app.store.append(match_id, tick_batch(1), 4)).last_seq == 8
