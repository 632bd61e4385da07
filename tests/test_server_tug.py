"""A second game on the generic server: tug of war (tests/games/tug.py) loaded with the
``games`` setting, played over real websockets by SDK clients, its replay sought
exactly, its scoreboard pushed and a leaderboard over it served, while no file under
server/, replay/leaderboards/ or replay/store/ names a game (tests/test_imports.py)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from games import GAMES, TUG_SPEC
from server_helpers import call, running_app, token, url

from client_sdk import GameClient
from replay import protocol as p
from replay.engine import ReplayEngine


async def pull_until_won(
    client: GameClient, strength: float
) -> tuple[p.Ended, list[p.ScoreboardReply]]:
    boards = []
    async for message in client:
        if isinstance(message, p.Update):
            client.send_input([strength])
        elif isinstance(message, p.ScoreboardReply):
            boards.append(message)
        elif isinstance(message, p.Ended):
            return message, boards
    raise AssertionError("the stream ended without ENDED")


async def test_tug_of_war_is_served_replayed_and_ranked(tmp_path):
    async with running_app(tmp_path, games=TUG_SPEC) as app:
        admin = token("ref", "admin")
        settings = quote(json.dumps({"target": 6, "tick_rate": 20}))
        status, created = await call(
            app, "POST", f"/api/matches?game=tug&settings={settings}&start_players=2", admin
        )
        assert status == 201, created
        match_id = created["match_id"]
        assert created["game"] == "tug"

        clients = [
            GameClient(url(app), token(name, match=match_id), games=GAMES, keep_messages=True)
            for name in ("left", "right")
        ]
        for client in clients:
            await client.connect()
            joined = await client.join(match_id)
            assert joined.game == "tug" and joined.slot is not None
        # The right team pulls harder: it wins the rope.
        (ended, _), (_, right_boards) = await asyncio.wait_for(
            asyncio.gather(pull_until_won(clients[0], 0.2), pull_until_won(clients[1], 1.0)),
            30,
        )
        assert ended.status == "ended" and ended.reason == "team 1 won"
        assert {row["player"] for row in ended.scoreboard} == {"left", "right"}
        assert right_boards, "the scoreboard was pushed while the rope moved"
        assert set(right_boards[-1].rows[0]) >= {"player", "team", "pulls"}
        rules = GAMES["tug"]

        # Its replay seeks exactly: every tick's fold equals a state rebuilt from a keyframe.
        record = await app.store.get_match(match_id)
        assert record.status == "ended" and record.game == "tug"
        engine = ReplayEngine(app.store, GAMES)
        full = await engine.state_at(match_id, record.last_tick)
        assert rules.is_over(full) and full.winner == 1
        # The players' SDK folded the same stream to the same state.
        assert rules.state_hash(clients[1].state) == rules.state_hash(full)
        for tick in range(0, record.last_tick + 1, max(1, record.last_tick // 7)):
            state = await engine.state_at(match_id, tick)
            folded = rules.initial_state(record.settings, record.seed)
            events = await app.store.read(match_id)
            rules.evolve(
                folded,
                [(e.type, e.version, e.tick, e.data) for e in events if e.tick <= tick],
                tick,
            )
            assert rules.state_hash(state) == rules.state_hash(folded), tick

        # The game's own board: every player of the winning team has one win. The match
        # is private (the default): its players see their names, anonymous callers not.
        position = await app.store.last_position()
        status, body = await call(
            app,
            "GET",
            f"/api/leaderboards/tug_wins/players/right?wait={position}&timeout=10",
            token("right"),
        )
        assert status == 200, body
        assert body["entry"]["value"] == 1 and body["reached"] is True
        status, top = await call(app, "GET", "/api/leaderboards/tug_wins", token("left"))
        assert [e["owner"] for e in top["entries"]] == ["right"]
        status, top = await call(app, "GET", "/api/leaderboards/tug_wins")
        assert [e["owner"] for e in top["entries"]] == [None]
        for client in clients:
            await client.close()
