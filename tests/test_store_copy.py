"""``matchreplay store copy``: SQLite -> PostgreSQL -> SQLite, resumed after an
interruption, verified, and refusing a destination that is not a copy of the source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from store_contract import record, tick_batch

import replay.store.copy as copy_module
from replay.errors import ReplayError
from replay.events import NewEvent
from replay.store import open_store
from replay.store.base import Keyframe
from replay.store.copy import CopyError, copy_store, stream_hash

ROOT = Path(__file__).parent.parent


async def fill(url: str) -> list[str]:
    async with open_store(url) as store:
        ids = []
        for i in range(4):
            m = await store.create_match(record(created_at=100.0 + i))
            ids.append(m.match_id)
            for b in range(6):
                # Old versions too: a copy keeps what is stored, it does not upcast.
                events = [*tick_batch(b, 2 + i), NewEvent(1, b, ("old",), version=1 + b % 2)]
                await store.append(m.match_id, events, b * (3 + i))
            await store.put_keyframe(Keyframe(m.match_id, 3, 1, b"state", b"c" * 16))
        await store.update_match(ids[1], status="ended", ended_at=5.0)
        await store.update_match(ids[2], status="interrupted", ended_at=6.0)
        return ids


async def test_copy_there_and_back_resumes_and_verifies(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src_url = f"sqlite:///{tmp_path / 'src.db'}"
    back_url = f"sqlite:///{tmp_path / 'back.db'}"
    ids = await fill(src_url)
    monkeypatch.setattr(copy_module, "PAGE_BATCHES", 5)

    class Interrupted(Exception):
        pass

    def interrupt(done: int, total: int) -> None:
        if done >= total // 2:
            raise Interrupted

    async with open_store(src_url) as src, open_store(pg_url) as dst:
        with pytest.raises(Interrupted):
            await copy_store(src, dst, interrupt)
        partial = await dst.last_position()
        assert 0 < partial < await src.last_position()
        seen: list[int] = []
        report = await copy_store(src, dst, lambda done, total: seen.append(done))
        assert report.events == await src.last_position()
        assert report.copied_events == report.events - partial
        assert seen[0] == partial and seen[-1] == report.events
    async with open_store(pg_url) as a, open_store(back_url) as b:
        await copy_store(a, b)
    async with open_store(src_url) as src, open_store(back_url) as back:
        assert await back.read_all(0, 10**6) == await src.read_all(0, 10**6)
        for match_id in ids:
            assert await stream_hash(back, match_id) == await stream_hash(src, match_id)
            assert await back.get_match(match_id) == await src.get_match(match_id)
            assert await back.get_keyframe(match_id, 10) == await src.get_keyframe(match_id, 10)
        assert {e.version for e in await back.read(ids[0])} == {1, 2}


async def test_copy_refuses_a_destination_that_is_not_a_copy(tmp_path: Path) -> None:
    src_url, dst_url = (f"sqlite:///{tmp_path / n}" for n in ("src.db", "dst.db"))
    await fill(src_url)
    async with open_store(dst_url) as dst:
        m = await dst.create_match(record())
        await dst.append(m.match_id, tick_batch(0), 0)
    async with open_store(src_url) as src, open_store(dst_url) as dst:
        with pytest.raises(CopyError) as err:
            await copy_store(src, dst)
        assert isinstance(err.value, ReplayError) and "not the source's" in str(err.value)


def test_the_command_copies_and_reports(tmp_path: Path) -> None:
    import asyncio

    src = str(tmp_path / "src.db")
    asyncio.run(fill(src))
    run = [sys.executable, "-m", "server.cli", "store", "copy", "--no-progress"]
    done = subprocess.run(
        [*run, src, str(tmp_path / "dst.db")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "copied 4 matches" in done.stdout and "verified" in done.stdout
    bad = subprocess.run(
        [*run, str(tmp_path / "dst.db"), src], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 0  # the same data both ways: nothing left to copy
    other = tmp_path / "other.db"
    asyncio.run(fill(str(other)))  # different match ids: not a copy of src
    refused = subprocess.run(
        [*run, src, str(other)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("matchreplay store copy:")
