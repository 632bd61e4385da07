"""The global leaderboards served by a real server: a bot match is played over real
websockets, the server's projection folds it, and HTTP queries read it back."""

from __future__ import annotations

from games import ARENA, GAMES
from leaderboard_fixtures import record_matches
from server_helpers import call, running_app

from replay.engine import ReplayEngine
from replay.offline import bot_ids


async def test_board_answers_reflect_a_finished_match(tmp_path):
    """A 20-second bot match, generated through the match machine into the running
    server's store (what its own matches write, without playing it in real time): the
    server's projection folds it and the HTTP queries read it back."""
    async with running_app(tmp_path) as app:
        [match_id] = await record_matches(app.store, 1, players=4, seconds=20.0, prefix="bots")
        players = bot_ids(4)

        record = await app.store.get_match(match_id)
        assert record.status == "ended"
        position = await app.store.last_position()
        engine = ReplayEngine(app.store, GAMES)
        final = await engine.scoreboard_at(match_id, record.last_tick)
        winner = ARENA.result(await engine.state_at(match_id, record.last_tick)).winner
        kills = {row["player"]: row["kills"] for row in final}
        assert sum(kills.values()) > 0, "bots that never score make this test vacuous"

        # Read-your-writes: wait until the board reflects the match's last event.
        for player in players:
            status, body = await call(
                app,
                "GET",
                f"/api/leaderboards/kills/players/{player}?wait={position}&timeout=10",
            )
            if kills[player] == 0 and status == 404:
                continue  # a player who never scored has no entry on an incr board
            assert status == 200, body
            assert body["reached"] is True and body["position"] >= position
            assert body["entry"]["value"] == kills[player]

        status, top = await call(app, "GET", "/api/leaderboards/kills?limit=10")
        assert status == 200
        ranked = [(e["owner"], e["value"]) for e in top["entries"]]
        assert [r["rank"] for r in top["entries"]] == list(range(1, len(ranked) + 1))
        assert sorted(v for _, v in ranked) == sorted(v for v in kills.values() if v)
        assert [v for _, v in ranked] == sorted((v for _, v in ranked), reverse=True)

        status, wins = await call(app, "GET", "/api/leaderboards/wins?limit=10")
        assert status == 200
        assert [(e["owner"], e["value"]) for e in wins["entries"]] == (
            [(winner, 1)] if winner else []
        )


async def test_bad_board_queries_get_4xx_json(tmp_path):
    async with running_app(tmp_path) as app:
        for path, status, code in [
            ("/api/leaderboards/nope", 404, "unknown_board"),
            ("/api/leaderboards/kills?limit=5000", 400, "limit_too_large"),
            ("/api/leaderboards/kills?cursor=%%%", 400, "bad_cursor"),
            ("/api/leaderboards/kills/players/nobody", 404, "unknown_player"),
            ("/api/leaderboards/kills?period=1999-01-01", 404, "unknown_period"),
        ]:
            got, body = await call(app, "GET", path)
            assert (got, body["error"]["code"]) == (status, code), (path, body)
