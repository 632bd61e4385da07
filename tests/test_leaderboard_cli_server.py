"""``matchreplay leaderboards show`` beside a running ``matchreplay serve`` on the same
store (issue 18): real processes. ``show`` only reads the read model (no lock, nothing
written), so it answers while the server's projection holds the file, with the server's
own boards; ``rebuild`` (a writer) is still handed to the server."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path

from cli_helpers import SECRET, TIMEOUT, run
from test_cli_server import serving

from server import auth


def shown(done) -> dict[str, int]:
    """player -> value of a ``show`` listing (title and header skipped)."""
    assert done.returncode == 0, done.stderr
    _title, _header, *rows = done.stdout.splitlines()
    return {r.split()[1]: int(r.split()[2]) for r in rows}


def test_show_answers_beside_a_running_server_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    for match_id in ("one", "two"):
        done = run(
            "simulate", "--db", str(db), "--players", "6", "--minutes", "0.3",
            "--match-id", match_id, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    boards = Path(str(db) + ".boards.sqlite")
    with serving(tmp_path, "--secret", SECRET) as server:
        admin = auth.issue(SECRET, "admin", "admin")
        # Once the server's projection has folded both matches (it holds the read model).
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as store:
            (last,) = store.execute("SELECT max(position) FROM batches").fetchone()
        request = urllib.request.Request(
            server.base + f"/api/leaderboards/kills?limit=100&wait={last}&timeout=30",
            headers={"Authorization": f"Bearer {admin}"},
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            top = json.load(answer)
        assert top["reached"] is True, top
        served = {e["owner"]: e["value"] for e in top["entries"]}
        assert served, "simulated bots that never kill make this test vacuous"
        before = boards.read_bytes()
        done = run("leaderboards", "show", "kills", "--limit", "100", "--db", str(db), cwd=tmp_path)
        assert shown(done) == served
        assert f"at position {top['position']}:" in done.stdout.splitlines()[0]
        assert boards.read_bytes() == before  # nothing written (the server is idle)
        # A writer still needs the lock: the rebuild is handed to the server.
        done = run("leaderboards", "rebuild", "--no-progress", "--db", str(db), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "in the running server" in done.stdout
        assert server.proc.poll() is None
    # Without a server, on a read model that does not exist: folded in memory, not created.
    elsewhere = tmp_path / "none.sqlite"
    done = run(
        "leaderboards", "show", "kills", "--limit", "100", "--db", str(db),
        "--boards-db", str(elsewhere), cwd=tmp_path,
    )  # fmt: skip
    assert shown(done) == served
    assert not elsewhere.exists()
