"""Forking matches on a real server: from an ended (generated) match and from a running
one, forks of forks, played live by SDK bots; the parent's state, hash for hash."""

from __future__ import annotations

import asyncio

from games import GAMES
from replay_matches import record_match
from server_helpers import FAST_SETTINGS, running_app, token, url
from test_server_match import call

from client_sdk.bots import run_bots
from replay.engine import ReplayEngine
from replay.events import SYSTEM_FORKED

ARENA = GAMES["arena"]


async def _same_state(engine: ReplayEngine, a: str, a_tick: int, b: str, b_tick: int) -> None:
    left = await engine.state_at(a, a_tick)
    right = await engine.state_at(b, b_tick)
    assert ARENA.state_hash(left) == ARENA.state_hash(right)


async def test_fork_an_ended_match_play_it_and_fork_the_fork(tmp_path):
    async with running_app(tmp_path) as app:
        parent = await record_match(app.store, "parent", players=3, seconds=8.0, seed=11)
        admin = token("ref", "admin")
        status, body = await call(app, "POST", "/api/matches/parent/fork?at=150", token("bot-001"))
        assert status == 403
        status, body = await call(app, "POST", "/api/matches/parent/fork?at=99999", admin)
        assert status == 409 and body["error"]["code"] == "tick_out_of_range"
        status, body = await call(
            app, "POST", f"/api/matches/parent/fork?at={parent.last_tick}", admin
        )
        assert status == 409 and body["error"]["code"] == "fork_at_end"

        status, fork = await call(app, "POST", "/api/matches/parent/fork?at=150&match_id=f1", admin)
        assert status == 201, fork
        assert fork["forked_from"] == {
            "match_id": "parent",
            "tick": 150,
            "players": ["bot-001", "bot-002", "bot-003"],
        }
        engine = ReplayEngine(app.store, GAMES)
        await _same_state(engine, "parent", 150, "f1", 150)
        first = (await app.store.read("f1"))[0]
        assert (first.type, first.tick, first.data[0], first.data[1]) == (
            SYSTEM_FORKED,
            150,
            "parent",
            150,
        )
        # The parent's players take their own seats back and play the fork to its end.
        slots = {
            p: ARENA.seat_of(await engine.state_at("parent", 150), p)
            for p in fork["forked_from"]["players"]
        }
        bots = await asyncio.wait_for(
            run_bots(url(app), "f1", [token(p, match="f1") for p in slots]), 60
        )
        assert {b.slot for b in bots} == set(slots.values())
        record = await app.store.get_match("f1")
        assert record.status == "ended" and record.last_tick > 150
        final = await engine.state_at("f1", record.last_tick)
        assert ARENA.is_over(final)
        status, page = await call(app, "GET", "/api/matches/f1/audit?limit=10", admin)
        assert [(e["kind"], e.get("parent")) for e in page["entries"]][:1] == [("forked", "parent")]
        fork_admin = [e for e in page["entries"] if e["kind"] == "admin"]
        assert [(e["actor"], e["action"]) for e in fork_admin] == [("ref", "fork")]
        # A fork of the fork, at a tick the fork played itself.
        at = 150 + (record.last_tick - 150) // 2
        status, grand = await call(app, "POST", f"/api/matches/f1/fork?at={at}&match_id=f2", admin)
        assert status == 201, grand
        await _same_state(engine, "f1", at, "f2", at)
        status, _ = await call(app, "POST", "/api/matches/f2/end", admin)
        assert status == 200


async def test_fork_a_running_match(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 4.0})
        bots = asyncio.create_task(run_bots(url(app), match.match_id, [token("a"), token("b")]))
        while match.tick < 40:
            await asyncio.sleep(0.02)
        admin = token("ref", "admin")
        status, fork = await call(app, "POST", f"/api/matches/{match.match_id}/fork?at=30", admin)
        assert status == 201, fork
        assert fork["forked_from"]["players"] == ["a", "b"]
        engine = ReplayEngine(app.store, GAMES)
        await _same_state(engine, match.match_id, 30, fork["match_id"], 30)
        forked = asyncio.create_task(run_bots(url(app), fork["match_id"], [token("a"), token("b")]))
        await asyncio.wait_for(asyncio.gather(bots, forked), 60)
        record = await app.store.get_match(fork["match_id"])
        assert record.status == "ended"
        assert ARENA.is_over(await engine.state_at(fork["match_id"], record.last_tick))


async def test_new_players_take_the_seats_the_parents_players_leave(tmp_path):
    """The documented seat mapping (docs/replay.md "Forks: who sits where"): each parent
    player seated at the fork tick keeps its slot, held for it for the grace period; the
    fork is full while they are held; a seat not taken back is given up at the end of the
    grace period (a ``timeout`` session and the game's leave), and new players then take
    those slots, starting afresh (the game's join), and play the fork to its end."""
    async with running_app(tmp_path, grace_period=1.0) as app:
        await record_match(app.store, "full", players=3, seconds=20.0, seed=5)
        admin = token("ref", "admin")
        status, fork = await call(app, "POST", "/api/matches/full/fork?at=150&match_id=f", admin)
        assert status == 201, fork
        engine = ReplayEngine(app.store, GAMES)
        parent_state = await engine.state_at("full", 150)
        slots = {p: ARENA.seat_of(parent_state, p) for p in ("bot-001", "bot-002", "bot-003")}
        first = (await app.store.read("f"))[0]
        assert first.data[4] == ["bot-001", "bot-001", "bot-002", "bot-002", "bot-003", "bot-003"]
        # Every seat is held for the parent's players: no room for anyone else yet.
        status, body = await call(app, "POST", "/api/matches/f/reserve", token("fresh-1"))
        assert status == 409 and body["error"]["code"] == "match_full"
        returning = asyncio.create_task(run_bots(url(app), "f", [token("bot-002", match="f")]))
        live = app.lobby.get_live("f")
        async with asyncio.timeout(20):  # the other two seats time out
            while {"bot-001", "bot-003"} & set(live.seats):
                await asyncio.sleep(0.02)
        fresh = await asyncio.wait_for(
            run_bots(url(app), "f", [token("fresh-1", match="f"), token("fresh-2", match="f")]),
            60,
        )
        await asyncio.wait_for(returning, 60)
        assert {b.slot for b in fresh} == {slots["bot-001"], slots["bot-003"]}
        record = await app.store.get_match("f")
        assert record.status == "ended"
        status, page = await call(app, "GET", "/api/matches/f/audit", admin)
        trail = [
            (e["kind"], e["player"], e.get("what", e.get("seat")))
            for e in page["entries"]
            if e["kind"] in ("joined", "session")
        ]
        assert ("session", "bot-002", "join") in trail  # took its held seat back
        assert {("session", p, "timeout") for p in ("bot-001", "bot-003")} <= set(trail)
        joins = [(who, seat) for kind, who, seat in trail if kind == "joined"]
        assert sorted(joins) == sorted(
            (b_id, b.slot) for b_id, b in zip(("fresh-1", "fresh-2"), fresh, strict=True)
        )
        # A new player starts afresh in its slot; the returning one keeps its tallies.
        tick = next(e["tick"] for e in page["entries"] if e["kind"] == "joined")
        at_join = await engine.state_at("f", tick)
        for b in fresh:
            assert (at_join.kills[b.slot], at_join.deaths[b.slot], at_join.score[b.slot]) == (
                0,
                0,
                0,
            )
        kept = slots["bot-002"]
        assert at_join.players[kept] == "bot-002"
        assert at_join.kills[kept] >= parent_state.kills[kept]
