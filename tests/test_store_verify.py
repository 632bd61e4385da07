"""``matchreplay store verify`` and ``store backup`` as real processes on real SQLite
files: verify finds a flipped byte, a damaged row and a damaged keyframe, with exit
codes 0/1/2; a backup taken while another process appends opens and verifies; every
command on an unreadable file exits non-zero at once with one line (never a hang)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cli_helpers import ROOT, TIMEOUT, env, error_of, run

from replay.store import open_store

CHILD = ROOT / "tests" / "store_writer_child.py"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with two simulated matches and their keyframes."""
    db = tmp_path_factory.mktemp("verify") / "orig.db"
    for match_id, minutes in (("m1", "0.5"), ("m2", "0.3")):
        done = run(
            "simulate", "--db", str(db), "--players", "4", "--minutes", minutes,
            "--tick-rate", "10", "--match-id", match_id, cwd=db.parent,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return db


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "events.db"
    shutil.copyfile(src, dst)
    return dst


def test_verify_passes_a_sound_store_and_lists_each_damage(simulated: Path, tmp_path: Path) -> None:
    db = _copy(simulated, tmp_path)
    done = run("store", "verify", "--db", str(db), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 matches" in done.stdout and "no damage found" in done.stdout
    with sqlite3.connect(db) as conn:
        pos, blob = conn.execute(
            "SELECT position, blob FROM batches WHERE mkey = 1 ORDER BY position LIMIT 1 OFFSET 3"
        ).fetchone()
        flipped = bytearray(blob)
        flipped[len(flipped) // 2] ^= 0x01  # one bit
        conn.execute("UPDATE batches SET blob = ? WHERE position = ?", (bytes(flipped), pos))
        conn.execute("UPDATE matches SET settings = '{oops' WHERE match_id = 'm2'")
        (tick,) = conn.execute("SELECT min(tick) FROM keyframes WHERE mkey = 2").fetchone()
        conn.execute(
            "UPDATE keyframes SET data = zeroblob(length(data)) WHERE mkey = 2 AND tick = ?",
            (tick,),
        )
    done = run("store", "verify", "--db", str(db), "--no-progress", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert any("'m1' seq" in line and "checksum mismatch" in line for line in lines), lines
    assert any("'m2'" in line and "settings is not JSON" in line for line in lines), lines
    assert any(f"'m2' keyframe {tick}: " in line for line in lines), lines
    assert len(lines) == 3, lines
    assert "3 problems found" in done.stderr


def test_verify_usage_and_missing_store(tmp_path: Path) -> None:
    done = run("store", "verify", "--bogus", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    done = run("store", "verify", "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert done.returncode == 1 and error_of(done)["code"] == "no_store"
    assert not (tmp_path / "none.db").exists()


async def test_backup_while_another_process_appends_opens_and_verifies(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    writer = subprocess.Popen(
        [sys.executable, str(CHILD), "write", str(db), "w", "4", "100000"],
        cwd=ROOT, env=env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert writer.stdin is not None and writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "ready"
        writer.stdin.write("go\n")
        writer.stdin.flush()
        acked = [writer.stdout.readline() for _ in range(40)]  # appends under way
        assert all(line.startswith("ack") for line in acked)
        # Keep reading its acks: a full pipe would stop the writer, and the store with it.
        threading.Thread(target=writer.stdout.read, daemon=True).start()
        backup = tmp_path / "backup.db"
        done = run("store", "backup", str(backup), "--db", str(db), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "verified" in done.stdout
        assert writer.poll() is None  # taken while the appends went on
        async with (
            open_store(str(backup), read_only=True) as copy,
            open_store(str(db), read_only=True) as live,
        ):
            copied = 0
            for i in range(4):
                kept = await copy.read(f"w-{i}")
                # A prefix of each stream: one moment of the store, nothing torn.
                assert kept == (await live.read(f"w-{i}"))[: len(kept)]
                copied += len(kept)
            assert copied >= 40 * 4  # at least what was acknowledged before it began
            assert await live.last_position() > await copy.last_position()
    finally:
        writer.kill()
        writer.wait(TIMEOUT)
    # One file out: no journal or partial file beside it.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("backup.db.")]
    done = run("store", "verify", "--db", str(backup), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_backup_refuses_an_existing_file_and_postgresql(tmp_path: Path) -> None:
    (tmp_path / "there.db").write_bytes(b"")
    done = run("store", "backup", str(tmp_path / "there.db"), "--db", "x.db", cwd=tmp_path)
    assert done.returncode == 2 and error_of(done)["code"] == "bad_argument"
    done = run("store", "backup", "b.db", "--db", "postgresql://u@127.0.0.1:1/x", cwd=tmp_path)
    assert done.returncode == 2 and "pg_dump" in error_of(done)["message"]


@pytest.mark.parametrize("damage", ["truncated", "garbage_page"])
def test_every_command_on_an_unreadable_store_ends_at_once_with_one_line(
    simulated: Path, tmp_path: Path, damage: str
) -> None:
    db = _copy(simulated, tmp_path)
    size = db.stat().st_size
    with db.open("r+b") as f:
        if damage == "truncated":
            f.truncate(size // 2)
        else:  # the file's header is fine, pages in the middle are noise
            start, end = size // 2 // 4096 * 4096, size * 3 // 4 // 4096 * 4096
            f.seek(start)
            f.write(bytes(range(256)) * 16 * ((end - start) // 4096 or 1))
    replay_file = tmp_path / "x.mrp"
    replay_file.write_bytes(b"")
    commands = [
        ["export", "m1", "-o", str(tmp_path / "out.mrp"), "--db", str(db)],
        ["store", "verify", "--db", str(db), "--no-progress"],
        ["store", "backup", str(tmp_path / "b.db"), "--db", str(db), "--no-progress"],
        ["keyframes", "rebuild", "--db", str(db)],
    ]
    if damage == "truncated":
        commands += [
            ["serve", "--port", "0", "--db", str(db)],
            ["leaderboards", "show", "kills", "--db", str(db)],
            ["simulate", "--db", str(db), "--minutes", "0.05", "--match-id", "m9"],
        ]
    for args in commands:
        done = run(*args, cwd=tmp_path)  # a hang fails as subprocess.TimeoutExpired
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        if args[:2] == ["store", "verify"] and damage == "garbage_page":
            assert "problem" in done.stderr  # verify lists what it found
            continue
        if args[0] == "keyframes":  # its progress bar is on stderr too: the last line
            assert "Traceback" not in done.stderr
            done.stderr = done.stderr.strip().splitlines()[-1]
        error = error_of(done)
        assert error["code"] in {"not_a_store", "store_unreadable", "backup_damaged"}, args
    assert not (tmp_path / "b.db").exists()
