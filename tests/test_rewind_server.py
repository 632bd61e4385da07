"""Rewinding a live match on a real server: SDK players on real websockets, a delayed
spectator, the admin HTTP route and websocket command, the store."""

from __future__ import annotations

import asyncio
import json
import sys

from games import GAMES
from server_helpers import FAST_SETTINGS, running_app, token, url
from test_server_match import call

from client_sdk.bots import run_bots
from client_sdk.game_client import GameClient
from client_sdk.spectator import Spectator
from replay import protocol as p
from replay.engine import ReplayEngine
from replay.events import SYSTEM_REWOUND

MOVES = [[1, 0, 0.1, True], [0, 1, 1.6, False], [-1, 0, 3.1, True]]


async def _play(client: GameClient, order: list[tuple[str, int]]) -> p.Ended:
    """Send an input on every UPDATE until ENDED; note when each tick's UPDATE came."""
    i = 0
    async for message in client:
        if isinstance(message, p.Update):
            order.append((client.identity, message.tick))
            client.send_input(MOVES[i % len(MOVES)])
            i += 1
        if isinstance(message, p.Ended):
            return message
    raise AssertionError("the stream ended without ENDED")


async def test_rewind_live_match_players_keep_seats_and_a_delayed_spectator_follows(tmp_path):
    async with running_app(tmp_path) as app:
        settings = FAST_SETTINGS | {"time_limit_s": 5.0, "max_players": 4}
        settings |= {"spectator_delay": 1.0}
        match = await app.lobby.create("arena", settings, start_players=2)
        mid = match.match_id
        order: list[tuple[str, int]] = []
        players = [GameClient(url(app), token(f"p{i}", match=mid)) for i in range(2)]
        for i, c in enumerate(players):
            c.identity = f"p{i}"
            await c.connect()
            await c.join(mid)
        slots = {c.identity: c.slot for c in players}
        games = asyncio.gather(*(_play(c, order) for c in players))
        spec = await Spectator.connect(url(app), token("watcher", "spectator"))
        await spec.watch(mid, "live")
        seen: list[tuple[int, bool]] = []

        async def watch() -> None:
            async for frame in spec:
                rewound = any(e[0] == SYSTEM_REWOUND for e in frame.events)
                seen.append((frame.tick, rewound))
                if rewound:
                    order.append(("spectator", frame.tick))

        watching = asyncio.create_task(watch())
        while match.tick < 60:
            await asyncio.sleep(0.02)

        # Only an admin may rewind; bad ticks are refused with codes.
        status, body = await call(app, "POST", f"/api/matches/{mid}/rewind?to=20", token("p0"))
        assert status == 403
        status, body = await call(app, "POST", f"/api/matches/{mid}/rewind", token("a", "admin"))
        assert status == 400 and body["error"]["code"] == "invalid_field"
        status, body = await call(
            app, "POST", f"/api/matches/{mid}/rewind?to=999999", token("a", "admin")
        )
        assert status == 409 and body["error"]["code"] == "rewind_ahead"

        status, body = await call(
            app,
            "POST",
            f"/api/matches/{mid}/rewind?to=20&reason=lag%20spike",
            token("ref", "admin"),
        )
        assert status == 200, body
        boundary = body["rewound_tick"]
        assert body["to_tick"] == 20 and boundary > 60

        # A second rewind over the websocket, as an admin COMMAND.
        while match.tick < boundary + 30:
            await asyncio.sleep(0.02)
        admin = GameClient(url(app), token("ref2", "admin"))
        await admin.connect()
        await admin.join(mid, history=False)
        ok = await admin.command("rewind", {"to": boundary - 10, "reason": "again"})
        second = ok.tick
        assert second > boundary + 30

        ended = await asyncio.wait_for(games, 30)
        assert {e.status for e in ended} == {"ended"}

        async def shown_second() -> None:
            while not any(t >= second + 5 for t, _ in seen):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(shown_second(), 30)
        watching.cancel()

        record = await app.store.get_match(mid)
        engine = ReplayEngine(app.store, GAMES)
        rules = players[0].rules
        events = await app.store.read(mid)
        rewinds = [e for e in events if e.type == SYSTEM_REWOUND]
        assert [(e.tick, e.data[1], e.data[2], e.data[3]) for e in rewinds] == [
            (boundary, 20, "ref", "lag spike"),
            (second, boundary - 10, "ref2", "again"),
        ]
        assert [e.tick for e in events] == sorted(e.tick for e in events)
        for e, to_tick in ((rewinds[0], 20), (rewinds[1], boundary - 10)):
            at_b = await engine.state_at(mid, e.tick)
            assert (
                rules.state_hash(rules.rebase(at_b, to_tick))
                == rules.state_hash(await engine.state_at(mid, to_tick))
                or to_tick > boundary
            )  # the second target lies after the first rewind
        # The second target (boundary - 10) is a tick of the abandoned branch of the
        # first rewind: its state is that branch's, and the rewind restored exactly it.
        back = rules.rebase(await engine.state_at(mid, second), boundary - 10)
        assert rules.state_hash(back) == rules.state_hash(await engine.state_at(mid, boundary - 10))
        # Players kept their seats and folded the restored state like the server.
        final = await engine.state_at(mid, record.last_tick)
        for c in players:
            assert c.slot == slots[c.identity]
            assert rules.state_hash(c.state) == rules.state_hash(final)
        # The delayed spectator showed each rewind at its tick, after the players got it,
        # and folded through both to the engine's state (a frame's state is the live one,
        # folded on in place: compare the newest).
        assert [t for t, r in seen if r] == [boundary, second]
        assert rules.state_hash(spec.state) == rules.state_hash(
            await engine.state_at(mid, spec.tick)
        )
        for who in ("p0", "p1"):
            assert order.index((who, boundary)) < order.index(("spectator", boundary))
        await spec.close()
        await admin.close()
        for c in players:
            await c.close()


async def _cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_rewind_cli_and_the_configured_horizon(tmp_path):
    async with running_app(tmp_path, rewind_horizon_s=10.0) as app:
        match = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 120.0})
        mid = match.match_id
        bots = asyncio.create_task(run_bots(url(app), mid, [token("b0"), token("b1")]))
        while match.tick < 320:
            await asyncio.sleep(0.02)
        server = f"http://127.0.0.1:{app.port}"
        admin = token("cli-admin", "admin")
        # 10 s at 30 Hz: tick 1 is out of reach by now.
        code, _, err = await _cli("rewind", mid, "--to", "1", "--server", server, "--token", admin)
        assert code == 1 and "[rewind_beyond_horizon]" in err
        code, _, err = await _cli(
            "rewind", mid, "--to", "50", "--server", server, "--token", token("b0")
        )
        assert code == 1 and "[forbidden]" in err
        code, _, err = await _cli("rewind", mid, "--to", "50", "--server", server)
        assert code == 2
        to_tick = match.tick - 10
        code, out, err = await _cli(
            "rewind",
            mid,
            "--to",
            str(to_tick),
            "--reason",
            "replay the fight",
            "--server",
            server,
            "--token",
            admin,
        )
        assert code == 0, err
        answer = json.loads(out)
        assert answer["to_tick"] == to_tick and answer["rewound_tick"] > to_tick
        status, _ = await call(app, "POST", f"/api/matches/{mid}/end", admin)
        assert status == 200
        await asyncio.wait_for(bots, 30)
        events = await app.store.read(mid)
        rewinds = [e for e in events if e.type == SYSTEM_REWOUND]
        assert [(e.tick, e.data[1:4]) for e in rewinds] == [
            (answer["rewound_tick"], (to_tick, "cli-admin", "replay the fight"))
        ]


async def test_rewind_to_a_tick_still_on_its_way_to_the_disk(tmp_path):
    """The tick an admin just saw may not be durable yet: the rewind waits for it
    instead of answering ``rewind_ahead``."""
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 60.0})
        mid = match.match_id
        bots = asyncio.create_task(run_bots(url(app), mid, [token("b0"), token("b1")]))
        while match.tick < 40:
            await asyncio.sleep(0.02)
        # Catch a moment when the last tick run is still in the store's hands.
        while match.durable_tick >= match.tick:
            await asyncio.sleep(0)
        to_tick = match.tick
        rewound = await match.rewind(to_tick, actor="ref", reason="just now")
        assert rewound > to_tick
        engine = ReplayEngine(app.store, GAMES)
        rules = match.rules
        # The rewind's tick holds the state of the tick named, re-clocked.
        back = rules.rebase(await engine.state_at(mid, rewound), to_tick)
        assert rules.state_hash(back) == rules.state_hash(await engine.state_at(mid, to_tick))
        status, _ = await call(app, "POST", f"/api/matches/{mid}/end", token("a", "admin"))
        assert status == 200
        await asyncio.wait_for(bots, 30)
