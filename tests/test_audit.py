"""The audit trail (replay/audit.py): every applied input once, at its tick; admin
actions; the CLI and the HTTP route with its access rule."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from games import GAMES, open_test_store
from replay_matches import record_match
from rewind_driver import Driver, create
from server_helpers import running_app, token
from test_server_match import call

from replay.audit import audit
from replay.engine import ReplayEngine


async def _all_pages(engine: ReplayEngine, match_id: str, **kwargs) -> list[dict]:
    entries, start = [], 0
    while start is not None:
        page = await audit(engine, match_id, from_tick=start, **kwargs)
        entries += page["entries"]
        start = page["next_from"]
    return entries


async def test_every_applied_input_once_at_its_tick_across_a_rewind(tmp_path: Path) -> None:
    async with open_test_store(tmp_path / "m.db") as store:
        rules, settings = await create(store, "m", players=4, seconds=30)
        driver = Driver(store, "m", rules, settings, seed=9)
        driver.join_all(4)
        await driver.play(120)
        dropped = driver.send_inputs()  # received before the rewind tick: never applied
        await driver.rewind(60, actor="ref", reason="audit me")
        await driver.play(200)
        engine = ReplayEngine(store, GAMES)
        entries = await _all_pages(engine, "m", limit=50)  # many pages
        applied = {
            (e["player"], e["seq"]): e["tick"] for e in entries if e["kind"] == "input" and e["seq"]
        }
        assert len(applied) == sum(1 for e in entries if e["kind"] == "input" and e["seq"])
        expected = {
            k: t for k, t in driver.played.sent.items() if (k[0], k[1]) not in dropped.items()
        }
        assert applied == expected
        # The inputs of the abandoned timeline: acknowledged at the rewind tick, not applied.
        at_rewind = [e for e in entries if e["kind"] == "input" and e["tick"] == 121]
        assert {(e["player"], e["acked"]) for e in at_rewind} == set(dropped.items())
        assert all(e["seq"] is None for e in at_rewind)
        admin = [e for e in entries if e["kind"] == "admin"]
        assert [(a["tick"], a["actor"], a["action"], a["reason"], a["detail"]) for a in admin] == [
            (121, "ref", "rewind", "audit me", {"from_tick": 120, "to_tick": 60})
        ]
        joined = [e["player"] for e in entries if e["kind"] == "joined"]
        assert sorted(joined) == ["bot-001", "bot-002", "bot-003", "bot-004"]
        # One player's view: only its own entries, the same ones.
        mine = await _all_pages(engine, "m", player="bot-002")
        assert mine == [e for e in entries if e.get("player") == "bot-002"]
        # A tick range.
        ranged = await _all_pages(engine, "m", to_tick=100)
        assert ranged == [e for e in entries if e["tick"] <= 100]


async def test_audit_route_and_cli(tmp_path: Path) -> None:
    async with running_app(tmp_path) as app:
        await record_match(app.store, "a1", players=3, seconds=3.0)
        status, page = await call(
            app, "GET", "/api/matches/a1/audit?limit=100", token("ref", "admin")
        )
        assert status == 200 and len(page["entries"]) >= 100 and page["next_from"] > 0
        status, page = await call(app, "GET", "/api/matches/a1/audit", token("bot-001"))
        assert status == 200
        assert {e["player"] for e in page["entries"]} == {"bot-001"}
        status, body = await call(
            app, "GET", "/api/matches/a1/audit?player=bot-002", token("bot-001")
        )
        assert status == 403 and body["error"]["code"] == "forbidden"
        status, _ = await call(app, "GET", "/api/matches/a1/audit", token("w", "spectator"))
        assert status == 403
        status, _ = await call(app, "GET", "/api/matches/nope/audit", token("ref", "admin"))
        assert status == 404
        db = app.settings.db
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "audit", "a1", "--db", db, "--player", "bot-003",
        "--json", "--all", "--limit", "40",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    pages = [json.loads(line) for line in out.decode().splitlines()]
    assert len(pages) > 1 and pages[-1]["next_from"] is None
    inputs = [e for page in pages for e in page["entries"] if e["kind"] == "input"]
    assert inputs and {e["player"] for e in inputs} == {"bot-003"}
    assert [e["tick"] for e in inputs] == sorted(e["tick"] for e in inputs)
