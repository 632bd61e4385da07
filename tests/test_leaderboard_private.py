"""A private match's players are not exposed to anonymous callers (issue 18), over HTTP
and the websocket protocol of a real server, with bots playing on real websockets.

The rule (docs/leaderboards.md, "What the boards may show"): a private match's results
count like any other's, but an entry one fed is shown to a caller without a token with
no owner (``"owner": null``, ``"reached_at": null``), and asking for that owner's entry
or the entries around it answers ``unknown_player``, as for a player with no entry.
Callers with a token see every name."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import quote

from server_helpers import FAST_SETTINGS, call, raw_connect, running_app, token, unpack, url
from test_leaderboard_ws import ask

from client_sdk.bots import run_bots
from replay import protocol as p

PUBLIC = ["pub-a", "pub-b", "both"]
PRIVATE = ["sec-a", "sec-b", "both"]
"""``both`` plays both matches: its entry holds a private match's result."""
HIDDEN = {"sec-a", "sec-b", "both"}


async def play(app, public: bool, players: list[str]) -> str:
    settings = FAST_SETTINGS | {
        "max_players": 4,
        "time_limit_s": 3.0,
        "spectator_delay": 0.0,
        "public_spectating": public,
    }
    status, created = await call(
        app,
        "POST",
        f"/api/matches?game=arena&settings={quote(json.dumps(settings))}&start_players=3",
        token("root", "admin"),
    )
    assert status == 201, created
    match_id = created["match_id"]
    await run_bots(url(app), match_id, [token(p, match=match_id) for p in players], seed=3)
    return match_id


async def test_anonymous_callers_see_private_matches_entries_without_their_players(
    tmp_path: Path,
) -> None:
    async with running_app(tmp_path) as app:
        await asyncio.gather(play(app, True, PUBLIC), play(app, False, PRIVATE))
        last = await app.store.last_position()
        rating = f"/api/leaderboards/rating?wait={last}&limit=100"

        # With a token (any player's): every entry with its owner.
        status, full = await call(app, "GET", rating, token("pub-a"))
        assert status == 200 and full["reached"] is True, full
        assert {e["owner"] for e in full["entries"]} == set(PUBLIC) | set(PRIVATE)

        # Anonymous: the same ranking, values and count, the private players unnamed.
        status, anon = await call(app, "GET", rating)
        assert status == 200, anon
        assert anon["count"] == full["count"] == 5
        by_rank = {e["rank"]: e for e in full["entries"]}
        for e in anon["entries"]:
            mine = by_rank[e["rank"]]
            assert (e["value"], e["subscore"]) == (mine["value"], mine["subscore"])
            if mine["owner"] in HIDDEN:
                assert e["owner"] is None and e["reached_at"] is None, e
            else:
                assert e == mine
        assert {e["owner"] for e in anon["entries"]} == {"pub-a", "pub-b", None}

        # A hidden owner's entry or neighbourhood is "no such entry" to anonymous callers.
        for player in HIDDEN:
            for path in (f"players/{player}", f"players/{player}/around"):
                status, body = await call(app, "GET", f"/api/leaderboards/rating/{path}")
                assert status == 404 and body["error"]["code"] == "unknown_player", body
                status, body = await call(
                    app, "GET", f"/api/leaderboards/rating/{path}", token(player)
                )
                assert status == 200, body
        status, body = await call(app, "GET", "/api/leaderboards/rating/players/pub-a/around")
        assert status == 200
        assert {e["owner"] for e in body["entries"]} == {"pub-a", "pub-b", None}
        status, body = await call(app, "GET", "/api/leaderboards/rating/players/pub-b")
        assert status == 200 and body["entry"]["owner"] == "pub-b"
        # A token that is sent must be valid: it is refused, not read as anonymous.
        status, body = await call(app, "GET", rating, "not-a-token")
        assert status == 401 and body["error"]["code"] == "unauthorized"

        # The websocket protocol: the same rule by the connection's token.
        everyone = {e["owner"] for e in full["entries"]}
        for tok, named in ((None, {"pub-a", "pub-b", None}), (token("x"), everyone)):
            ws = await raw_connect(app, tok)
            try:
                assert unpack(await ws.recv())[0] == p.WELCOME
                reply = await ask(ws, 1, "top", board="rating", limit=100)
                assert isinstance(reply, p.LeaderboardReply), reply
                assert {e["owner"] for e in reply.body["entries"]} == named
                reply = await ask(ws, 2, "entry", board="rating", player="sec-a")
                if tok is None:
                    assert isinstance(reply, p.Error) and reply.code == "unknown_player"
                else:
                    assert isinstance(reply, p.LeaderboardReply), reply
            finally:
                await ws.close()
