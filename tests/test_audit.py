"""The audit trail (replay/audit.py): every applied input once, at its tick; admin
actions; the CLI and the HTTP route with its access rule."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest
from games import GAMES, open_test_store
from replay_matches import record_match
from rewind_driver import Driver, create
from server_helpers import FAST_SETTINGS, running_app, token, url
from test_server_match import call

from client_sdk import ClientClosed, GameClient
from replay import protocol as p
from replay.audit import audit
from replay.engine import ReplayEngine
from replay.events import SYSTEM_TAKEOVER, NewEvent
from replay.keyframes import rebuild_keyframes
from replay.playback import Playback
from replay.timeline import Timeline


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


async def _until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def _drain(client: GameClient) -> int | None:
    """Read until the session ends for good; the close code then."""
    try:
        async for _ in client:
            pass
    except ClientClosed as exc:
        return exc.code
    return None


async def test_admin_actions_and_player_sessions_with_who_and_why(tmp_path: Path) -> None:
    """Create, start, kick and end over HTTP record the admin from the token and the reason
    given; a player's disconnect, reconnect and kick are its sessions; the kicked player
    cannot come back; the route and the CLI list all of it."""
    async with running_app(tmp_path) as app:
        chief = token("chief", "admin")
        q = urlencode(
            {"game": "arena", "start_players": 8, "match_id": "adm", "reason": "league night"}
            | {"settings": json.dumps(FAST_SETTINGS | {"time_limit_s": 0})}
        )
        status, created = await call(app, "POST", f"/api/matches?{q}", chief)
        assert status == 201, created
        match = app.lobby.get_live("adm")
        alice = GameClient(url(app), token("alice"), backoff=(0.02, 0.2), track_state=False)
        bob = GameClient(url(app), token("bob"), reconnect=False, track_state=False)
        for client in (alice, bob):
            await client.connect()
            await client.join("adm")
        readers = [asyncio.create_task(_drain(c)) for c in (alice, bob)]
        status, body = await call(app, "POST", "/api/matches/adm/start?reason=both+ready", chief)
        assert status == 200, body
        alice.ws.transport.abort()  # dropped: the SDK reconnects to its seat
        await _until(lambda: alice.reconnects == 1 and alice.slot is not None)
        status, _ = await call(app, "POST", "/api/matches/adm/kick?player=bob", token("alice"))
        assert status == 403  # a player cannot kick
        status, body = await call(app, "POST", "/api/matches/adm/kick", chief)
        assert status == 400 and body["error"]["code"] == "invalid_field"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "kick", "adm", "bob", "--reason", "abuse",
            "--server", f"http://127.0.0.1:{app.port}", "--token", chief,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert json.loads(out)["kicked"] == "bob"
        assert await asyncio.wait_for(readers[1], 10) == 4003  # closed: not to reconnect
        await _until(lambda: match.rules.seat_of(match.state, "bob") is None)
        status, body = await call(app, "POST", "/api/matches/adm/kick?player=bob", chief)
        assert status == 409 and body["error"]["code"] == "not_seated"
        # Kicked: no seat for it again in this match, over HTTP or the websocket.
        status, body = await call(app, "POST", "/api/matches/adm/reserve", token("bob"))
        assert status == 403 and body["error"]["code"] == "forbidden"
        again = GameClient(url(app), token("bob"), reconnect=False, track_state=False)
        with pytest.raises(p.ProtocolError) as refused:
            await again.join("adm")
        assert refused.value.code == "forbidden"
        await again.close()
        status, body = await call(app, "POST", "/api/matches/adm/end?reason=curfew", chief)
        assert status == 200, body

        status, page = await call(app, "GET", "/api/matches/adm/audit", chief)
        admin = [
            (e["actor"], e["action"], e["reason"], e["detail"])
            for e in page["entries"]
            if e["kind"] == "admin"
        ]
        assert admin == [
            ("chief", "create", "league night", None),
            ("chief", "start", "both ready", None),
            ("chief", "kick", "abuse", "bob"),
            ("chief", "end", "curfew", None),
        ]
        stamped = [e for e in page["entries"] if e["kind"] in ("admin", "session")]
        assert all(e["at_ms"] > 0 for e in stamped)
        assert [e["at_ms"] for e in stamped] == sorted(e["at_ms"] for e in stamped)
        ticks = [e["tick"] for e in page["entries"]]
        assert ticks == sorted(ticks)
        # A player's own trail: its seat, its sessions, no admin actions.
        status, mine = await call(app, "GET", "/api/matches/adm/audit", token("alice"))
        assert status == 200
        sessions = [(e["kind"], e.get("what")) for e in mine["entries"] if e["kind"] != "input"]
        assert sessions == [("joined", None), ("session", "disconnect"), ("session", "reconnect")]
        status, theirs = await call(app, "GET", "/api/matches/adm/audit?player=bob", chief)
        assert [(e["kind"], e.get("what")) for e in theirs["entries"] if e["kind"] != "input"] == [
            ("joined", None),
            ("session", "kicked"),
        ]
        for client in (alice, bob):
            await client.close()
        for reader in readers:
            reader.cancel()
        db = app.settings.db
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "audit", "adm", "--db", db,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert [line.split()[1] for line in lines if " admin " in line] == ["admin"] * 4
    assert any("action=kick" in line and "reason=abuse" in line for line in lines)
    assert any("what=reconnect" in line and "player=alice" in line for line in lines)


async def test_old_streams_without_admin_or_session_events_still_audit(tmp_path: Path) -> None:
    """A match recorded before these events existed (none in its stream) still plays and
    audits: inputs and joins, no admin or session entries."""
    async with open_test_store(tmp_path / "old.db") as store:
        await record_match(store, "old", players=2, seconds=2.0)
        engine = ReplayEngine(store, GAMES)
        entries = await _all_pages(engine, "old")
        kinds = {e["kind"] for e in entries}
        assert kinds == {"input", "joined"}
        record = await engine.match("old")
        assert GAMES["arena"].is_over(await engine.state_at("old", record.last_tick))


async def test_system_events_a_reader_does_not_know_are_skipped(tmp_path: Path) -> None:
    """A newer server's own events (codes from 0xFF00 up that this build does not define)
    change no state and break no reader: seeks, keyframe rebuilds, playback, the timeline
    and the audit read past them."""
    async with open_test_store(tmp_path / "new.db") as store:
        rec = await record_match(store, "n", players=2, seconds=2.0, end=False)
        record = await store.get_match("n")
        last = record.last_tick
        future = [
            NewEvent(0xFF3F, last + 1, ("from a newer server", 1)),
            NewEvent(SYSTEM_TAKEOVER, last + 1, ("node-a", "node-b", 2, 0, 1)),
        ]
        await store.append("n", future, record.version)
        engine = ReplayEngine(store, GAMES)
        before = await engine.state_at("n", last)
        after = await engine.state_at("n", last + 1)
        arena = GAMES["arena"]
        assert rec.hashes[last] == arena.state_hash(before)
        assert arena.state_hash(after) == arena.state_hash(arena.evolve(before, [], last + 1))
        await rebuild_keyframes(store, GAMES, "n")
        fresh = ReplayEngine(store, GAMES)
        assert arena.state_hash(await fresh.state_at("n", last + 1)) == arena.state_hash(after)
        frames = [f async for f in Playback(fresh, "n", start=last - 2, speed=None)]
        assert [f.tick for f in frames] == [last - 2, last - 1, last, last + 1]
        assert {e[0] for e in frames[-1].events} == {0xFF3F, SYSTEM_TAKEOVER}
        # A known one that is notable is a marker (the viewer shows a takeover); the
        # unknown one is passed over.
        markers = await Timeline(fresh).markers("n", last + 1)
        assert [(m.tick, m.kind) for m in markers] == [(last + 1, "takeover")]
        page = await audit(fresh, "n", from_tick=last)
        assert page["next_from"] is None and page["entries"]
        assert {e["kind"] for e in page["entries"]} == {"input"}
