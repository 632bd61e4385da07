"""A real server's global leaderboards after rewinds and a fork (issue 17): SDK bots on
real websockets play a public match that an admin rewinds twice over HTTP (the second
time into the first rewind's abandoned branch) after the server's projection counted
the abandoned ticks; then a fork of the ended match is played. Over HTTP the boards
equal a fresh rebuild over the same store and the surviving timelines' tally."""

from __future__ import annotations

import asyncio
from pathlib import Path

from games import METRICS
from server_helpers import FAST_SETTINGS, call, running_app, token, url
from test_leaderboard_rewind import BOARDS, IDS, surviving_kills

import replay.games.arena.events as ev
from client_sdk.bots import run_bots
from replay.events import SYSTEM_REWOUND
from replay.leaderboards.projection import LeaderboardProjection

PUBLIC = {"public_spectating": True, "spectator_delay": 0.0}


async def kills_over_http(app, position: int) -> dict[str, int]:
    """As a caller with a token: the fork is a private match (its players are hidden
    from anonymous callers)."""
    path = f"/api/leaderboards/kills?wait={position}&limit=100"
    status, top = await call(app, "GET", path, token("someone"))
    assert status == 200 and top["reached"] is True, top
    return {e["owner"]: e["value"] for e in top["entries"]}


async def test_a_server_counts_the_surviving_timeline_and_a_fork_s_own_play(
    tmp_path: Path,
) -> None:
    admin = token("ref", "admin")
    players = ["ann", "bob", "cid", "dee", "eve", "fay"]
    async with running_app(tmp_path) as app:
        settings = FAST_SETTINGS | PUBLIC | {"time_limit_s": 10.0, "max_players": 6}
        match = await app.lobby.create("arena", settings, start_players=6, seed=3)
        mid = match.match_id
        bots = asyncio.create_task(run_bots(url(app), mid, [token(p, match=mid) for p in players]))

        async def until_tick(tick: int) -> None:
            while match.tick < tick:
                await asyncio.sleep(0.02)

        async def rewind(to: int) -> int:
            status, body = await call(app, "POST", f"/api/matches/{mid}/rewind?to={to}", admin)
            assert status == 200, body
            return body["rewound_tick"]

        await until_tick(150)
        # The projection follows within ~25 ms: the ticks about to be abandoned are counted.
        await kills_over_http(app, await app.store.last_position())
        first = await rewind(30)
        await until_tick(first + 90)
        second = await rewind(40)  # a tick of the abandoned branch 31..first-1
        await asyncio.wait_for(bots, 60)
        assert (await app.store.get_match(mid)).status == "ended"

        status, fork = await call(app, "POST", f"/api/matches/{mid}/fork?at=60", admin)
        assert status == 201, fork
        fid = fork["match_id"]
        await asyncio.wait_for(
            run_bots(url(app), fid, [token(p, match=fid) for p in fork["forked_from"]["players"]]),
            60,
        )
        assert (await app.store.get_match(fid)).status == "ended"

        events = await app.store.read(mid)
        assert [(e.tick, e.data[1]) for e in events if e.type == SYSTEM_REWOUND] == [
            (first, 30),
            (second, 40),
        ]
        everything = sum(1 for e in events if e.type == ev.KILLED)
        surviving = await surviving_kills(app.store, [mid])
        assert sum(surviving.values()) < everything, "no abandoned kill: the test is vacuous"
        position = await app.store.last_position()
        served = await kills_over_http(app, position)
        assert served == dict(await surviving_kills(app.store, [mid, fid]))
        live_rows = sorted(app.projection.state.rows(IDS))

        fresh = LeaderboardProjection(app.store, str(tmp_path / "fresh.sqlite"), BOARDS, METRICS)
        await fresh.open()
        try:
            await fresh.catch_up()
            assert fresh.position == position
            assert live_rows == sorted(fresh.state.rows(IDS))
        finally:
            await fresh.close()
