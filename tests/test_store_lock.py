"""One writer process per SQLite store (replay/store/lock.py), with real processes: a
second writer (``import``, ``simulate``, ``serve``) is refused at open with an error
naming the holder; read-only commands keep working beside a running server; the
kernel releases the lock of a killed holder."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import SECRET, TIMEOUT, error_of, run
from store_contract import record, tick_batch
from test_cli_server import serving

from replay.errors import StoreLockedError
from replay.store import open_store
from server import auth


def _simulate(db: Path, match_id: str) -> object:
    return run(
        "simulate", "--db", str(db), "--players", "2", "--minutes", "0.02",
        "--match-id", match_id, cwd=db.parent,
    )  # fmt: skip


def test_a_second_writer_is_refused_naming_the_holder_and_readers_work(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    done = _simulate(db, "before")
    assert done.returncode == 0, done.stderr
    with serving(tmp_path, "--secret", SECRET) as server:
        admin = auth.issue(SECRET, "admin", "admin")
        # Readers beside the server: export and the leaderboards.
        replay_file = tmp_path / "before.mrp"
        done = run("export", "before", "-o", str(replay_file), "--db", str(db), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        # The store does not refuse it (the leaderboards' own read model lock still may).
        done = run("leaderboards", "show", "kills", "--db", str(db), cwd=tmp_path)
        assert done.returncode == 0 or error_of(done)["code"] != "store_busy", done.stderr
        # Writers are refused, naming the server.
        for done in (
            run("import", str(replay_file), "--db", str(db), cwd=tmp_path),
            _simulate(db, "during"),
        ):
            assert done.returncode == 1, done.stderr
            error = error_of(done)
            assert error["code"] == "store_busy", done.stderr
            assert f"pid {server.proc.pid}" in error["message"], done.stderr
            assert "(matchreplay serve) since" in error["message"], done.stderr
            assert SECRET not in error["message"]
        # The refused writers left nothing in the store; the server still serves it.
        assert [m["match_id"] for m in server.admin("GET", "/api/matches", admin)] == ["before"]
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=TIMEOUT)
    # The kernel released the killed server's lock: a writer may open the store now.
    done = _simulate(db, "after")
    assert done.returncode == 0, done.stderr


async def test_in_one_process_a_second_writer_is_refused_a_reader_is_not(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    async with open_store(db) as writer:
        m = (await writer.create_match(record())).match_id
        await writer.append(m, tick_batch(0), 0)
        with pytest.raises(StoreLockedError, match=r"pid \d+ \(.*\) since "):
            async with open_store(db):
                pass
        async with open_store(db, read_only=True) as reader:
            assert [e.seq for e in await reader.read(m)] == [1, 2, 3, 4]
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await reader.create_match(record())
        # The writer still writes after the refused open and the reader's close.
        await writer.append(m, tick_batch(1), 4)
    async with open_store(db) as again:  # released on close
        assert (await again.get_match(m)).version == 8
