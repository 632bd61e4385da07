"""Spectating over the network (docs/protocol.md section 11): a real server on
loopback, real bot players, real SQLite. The client-side state is checked against
the server's ``state_at`` by hash after resets, frames, seeks and steps."""

from __future__ import annotations

import asyncio
import socket
import time

import msgpack
from games import GAMES
from server_helpers import (
    FAST_SETTINGS,
    raw_connect,
    running_app,
    stalled_client,
    start_bots,
    token,
    url,
)

from client_sdk.game_client import GameClient
from client_sdk.replay_file import ReplayFile
from client_sdk.spectator import Spectator
from replay import protocol as p
from replay.engine import ReplayEngine
from replay.replay_file import export_match

DELAY = 1.0


async def _same(engine: ReplayEngine, spec, match_id: str, tick: int | None = None) -> None:
    """The spectator's local state (taken now, before awaiting) is the server's."""
    have, at = spec.rules.state_hash(spec.state), spec.tick
    assert tick is None or at == tick
    want = await engine.state_at(match_id, at)
    assert have == spec.rules.state_hash(want), at


async def test_live_with_delay_is_never_early_and_seeks_are_clamped(tmp_path):
    async with running_app(tmp_path) as app:
        settings = FAST_SETTINGS | {"time_limit_s": 4.0}
        settings |= {"spectator_delay": DELAY, "public_spectating": True}
        match = await app.lobby.create("arena", settings, start_players=3)
        # A player's view: when each tick became durable (its UPDATE arrived).
        durable_at: dict[int, float] = {}
        bots = await start_bots(app, match.match_id)
        watcher = GameClient(url(app), token("admin", "admin"))
        await watcher.connect()
        await watcher.join(match.match_id)

        async def durable() -> None:
            async for m in watcher:
                if isinstance(m, p.Update):
                    durable_at.setdefault(m.tick, time.monotonic())

        watching = asyncio.create_task(durable())
        spec = await Spectator.connect(url(app))  # no token: the match is public
        info = await spec.watch(match.match_id, "live")
        assert info["spectator_delay"] == DELAY and info["live"] is True
        assert spec.status is not None and spec.status.mode == "live"
        frames = 0
        async for frame in spec:
            now = time.monotonic()
            # Never newer than now minus the delay (0.25 s slack for loop scheduling
            # between the player's UPDATE and this frame in the same process).
            if frame.tick in durable_at:
                assert now - durable_at[frame.tick] >= DELAY - 0.25, frame.tick
            frames += 1
            if frames == 40:
                status = await spec.seek(10**6)  # far beyond the live edge
                assert status.clamped and status.tick <= status.live_edge
                assert status.live_edge <= watcher.tick - 0.5 * DELAY * 30
                await _same(ReplayEngine(app.store, GAMES), spec, match.match_id, status.tick)
                await spec.live()
            if frames > 80:
                break
        # Markers and scoreboards are capped too.
        status = await spec.pause()
        tick, rows = await spec.scoreboard()
        assert tick == status.tick <= status.live_edge and len(rows) == 3
        assert all(m["tick"] <= watcher.tick - 0.5 * DELAY * 30 for m in await spec.markers())
        await bots
        watching.cancel()
        await spec.close()
        await watcher.close()


async def test_late_join_seek_and_step_match_state_at_then_replay_to_the_end(tmp_path):
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 5.0})
        bots = await start_bots(app, match.match_id, 2)
        engine = ReplayEngine(app.store, GAMES)
        while match.tick < 100:
            await asyncio.sleep(0.02)
        # Late join: a keyframe STATE and the frames after it, then live frames.
        spec = await Spectator.connect(url(app), token("viewer", "spectator"))
        await spec.watch(match.match_id, "live")
        first = await spec.__anext__()
        assert first.reset
        await _same(engine, spec, match.match_id)
        for _ in range(5):
            await spec.__anext__()
            await _same(engine, spec, match.match_id)
        await bots
        while app.spectators.hubs.get(match.match_id):
            await asyncio.sleep(0.05)  # the match finished and its hub retired
        record = await app.store.get_match(match.match_id)
        last = record.last_tick
        # Seeks (keyframe ticks, in between, backwards) and steps both ways.
        for target in (last // 2, 151, 150, 7, last - 1, 0):
            status = await spec.seek(target)
            assert status.tick == target and not status.clamped, (target, last, record)
            await _same(engine, spec, match.match_id, target)
        await spec.seek(last - 40)
        for n in (-1, -12, 3, 1, 20):
            status = await spec.step(n)
            await _same(engine, spec, match.match_id, status.tick)
        assert spec.tick == last - 40 - 1 - 12 + 3 + 1 + 20
        status = await spec.step(100)  # past the end: clamped
        assert status.clamped and status.tick == last == spec.tick
        # The whole finished match, start to end, over the network at 16x.
        await spec.seek(0)
        await spec.play(16.0)
        ticks = []
        async for frame in spec:
            ticks.append(frame.tick)
            if frame.tick == last:
                break
        assert ticks[-1] == last and len(set(ticks)) == len(ticks)
        final = await engine.state_at(match.match_id, last)
        assert spec.rules.state_hash(spec.state) == spec.rules.state_hash(final)
        # Markers and a clip before a kill.
        kills = [m for m in await spec.markers() if "killer" in m["data"]]
        if kills:
            clip = await spec.clip(kills[0]["tick"], 2.0)
            assert clip["to_tick"] == kills[0]["tick"] and clip["from_tick"] < clip["to_tick"]
        # A finished match exported and opened locally with the same API.
        path = tmp_path / "m.mrp"
        await export_match(app.store, match.match_id, path)
        await spec.close()
    async with await ReplayFile.open(path) as replay:
        await replay.watch(from_=0)
        assert replay.tick == 0
        await replay.seek(last // 2)
        status = await replay.step(-3)
        assert status.tick == last // 2 - 3
        state_mid = replay.rules.state_hash(replay.state)
        await replay.live()
        assert replay.tick == last
        assert replay.rules.state_hash(replay.state) == replay.rules.state_hash(final)
        await replay.seek(last // 2 - 3)
        assert replay.rules.state_hash(replay.state) == state_mid


async def test_spectators_cannot_play_and_tokens_are_scoped(tmp_path):
    async with running_app(tmp_path) as app:
        delayed = await app.lobby.create("arena", FAST_SETTINGS | {"spectator_delay": 30})
        private = await app.lobby.create("arena", FAST_SETTINGS)
        ws = await raw_connect(app, token("eve", "spectator"))
        await ws.recv()  # WELCOME

        async def answer(frame: bytes) -> list:
            await ws.send(frame)
            return msgpack.unpackb(await ws.recv())

        # Player messages from a spectator: ERROR forbidden; the connection goes on.
        assert (await answer(p.encode_inputs([(1, [0, 0, 0, False])])))[:2] == [20, "forbidden"]
        assert (await answer(p.encode_join(delayed.match_id, None)))[:2] == [20, "forbidden"]
        assert (await answer(p.encode_seek(3)))[:2] == [20, "not_watching"]
        assert (await answer(msgpack.packb([p.PLAY, 99.0])))[:2] == [20, "invalid_field"]
        assert (await answer(p.encode_watch("nope")))[:2] == [20, "unknown_match"]
        assert (await answer(p.encode_watch(delayed.match_id)))[0] == p.WATCHING
        await ws.recv()  # STATE
        assert msgpack.unpackb(await ws.recv())[0] == p.PLAYBACK
        assert (await answer(p.encode_command(5, "chat", {"text": "hi"})))[:2] == [20, "forbidden"]
        assert (await answer(p.encode_join(delayed.match_id, None)))[:2] == [20, "forbidden"]
        await ws.close()
        # Without a token only public matches are visible; players do not WATCH.
        anon = await Spectator.connect(url(app))
        assert await anon.list_matches() == []
        try:
            await anon.watch(private.match_id)
            raise AssertionError("watched a private match without a token")
        except p.ProtocolError as exc:
            assert exc.code == "forbidden"
        await anon.close()
        player = await Spectator.connect(url(app), token("p1"))
        try:
            await player.watch(private.match_id)
            raise AssertionError("a player watched")
        except p.ProtocolError as exc:
            assert exc.code == "forbidden"
        await player.close()
        status, body = await _create(app, {"spectator_delay": 601})
        assert status == 400 and body["error"]["code"] == "invalid_settings"


async def _create(app, settings: dict) -> tuple[int, dict]:
    import json
    from urllib.parse import quote

    from server_helpers import call

    path = f"/api/matches?game=arena&settings={quote(json.dumps(settings))}"
    return await call(app, "POST", path, token("root", "admin"))


async def test_100_stalled_spectators_do_not_disturb_the_match(tmp_path):
    queue = 4096
    async with running_app(
        tmp_path, spectator_queue_bytes=queue, spectator_stall_seconds=1.0
    ) as app:
        match = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 8.0})
        bots = await start_bots(app, match.match_id, 6)
        watch = p.encode_watch(match.match_id, "live")
        stalled = [
            await stalled_client(app.port, token("s", "spectator"), watch) for _ in range(100)
        ]
        # Kernel buffers are outside our control: shrink the server's side too, so
        # the stall reaches the server's own queue within the test.
        await asyncio.sleep(0.3)
        for conn in list(app.server.connections):
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2048)
        reader = await Spectator.connect(url(app), token("ok", "spectator"))
        await reader.watch(match.match_id, "live")
        hub = app.spectators.hubs[match.match_id]
        worst = 0
        ticks = []
        while not hub.finished:
            ticks.append(match.tick)
            sizes = hub.queue_sizes()
            worst = max([worst, *sizes])
            await asyncio.sleep(0.1)
        clients = await bots
        # The players kept playing: every tick ran, inputs were acknowledged.
        assert ticks == sorted(ticks) and ticks[-1] > ticks[0] + 60
        assert all(c.acked_seq > 0 for c in clients)
        record = await app.store.get_match(match.match_id)
        assert record.status == "ended"
        # Bounded: no spectator queue beyond the limit plus one frame.
        assert worst <= queue + 2048
        closed = app.metrics.registry.get_sample_value("matchreplay_slow_consumers_total")
        # The stalled ones were skipped, then closed (4010) or dropped.
        assert closed is not None and closed >= 50, (worst, closed)
        # The reading spectator was not disturbed: its state is the server's.
        engine = ReplayEngine(app.store, GAMES)
        while reader.tick < record.last_tick and reader.ended is None:
            await reader.__anext__()
        await _same(engine, reader, match.match_id)
        await reader.close()
        for s in stalled:
            s.close()


async def test_a_quiet_live_match_past_a_keyframe_is_listed_and_watched(tmp_path):
    """Players who send no input make no events: the hub publishes the keyframe tick
    (150 at 30 Hz) while the store's last tick stays at the join. Every read path must
    stay within what the store holds (issue 18: the viewer's list was a 400)."""
    from server_helpers import call

    async with running_app(tmp_path) as app:
        settings = FAST_SETTINGS | {"time_limit_s": 60.0, "public_spectating": True}
        match = await app.lobby.create("arena", settings, start_players=2)
        idle = [GameClient(url(app), token(f"idle{i}")) for i in range(2)]
        for client in idle:
            await client.connect()
            await client.join(match.match_id)
        hub = app.spectators.hubs[match.match_id]
        while hub.edge(False) < 150:  # the first keyframe after the start, ~5 s of play
            await asyncio.sleep(0.1)
        record = await app.store.get_match(match.match_id)
        assert 0 <= record.last_tick < hub.edge(False)  # quiet: nothing stored since the joins
        status, body = await call(app, "GET", "/api/viewer/matches")
        assert status == 200, body
        (item,) = body["matches"]
        assert item["tick"] <= record.last_tick and len(item["standings"]) == 2
        status, listed = await call(app, "GET", f"/api/matches/{match.match_id}")
        assert status == 200 and listed["tick"] <= record.last_tick
        # A spectator going live is reset to the quiet keyframe tick; what it shows is
        # answerable (SCOREBOARD) and a seek back and forth stays exact.
        spec = await Spectator.connect(url(app))
        info = await spec.watch(match.match_id, "live")
        assert info["last_tick"] <= record.last_tick
        status = spec.status
        assert status.mode == "live" and status.tick <= status.live_edge
        tick, rows = await spec.scoreboard()
        assert tick == spec.tick and len(rows) == 2
        engine = ReplayEngine(app.store, GAMES)
        status = await spec.seek(10**6)
        stored = await app.store.get_match(match.match_id)
        assert status.clamped and status.tick <= stored.last_tick
        await _same(engine, spec, match.match_id, status.tick)
        await spec.close()
        for client in idle:
            await client.close()


async def test_seeks_reach_ticks_through_the_engine_and_skip_a_bad_keyframe(tmp_path):
    """A spectator's reset is the engine's keyframe selection: a corrupt keyframe in the
    server's store is skipped (once, remembered), the STATE is the one before it, and
    the client's fold is exact."""
    import sqlite3

    from games import open_test_store
    from replay_matches import record_match

    from replay.codec import decode_batch

    async with open_test_store(str(tmp_path / "server.db")) as store:
        rec = await record_match(store, "kf", seconds=20, hash_ticks={470, 520, 160})
    with sqlite3.connect(tmp_path / "server.db") as db:
        db.execute("UPDATE keyframes SET data = ? WHERE tick = 450", (b"\x00garbage",))
    async with running_app(tmp_path) as app:
        rules = GAMES["arena"]
        ws = await raw_connect(app, token("root", "admin"))
        await ws.recv()  # WELCOME

        async def answer(request: bytes) -> tuple[list[int], object]:
            """STATE tick(s) received, and the folded state, up to the PLAYBACK."""
            if request:
                await ws.send(request)
            resets, state = [], None
            while True:
                msg = msgpack.unpackb(await ws.recv())
                if msg[0] == p.STATE:
                    resets.append(msg[1])
                    state = rules.decode_state(msg[3], msg[2])
                elif msg[0] == p.FRAME:
                    events = decode_batch(msg[2], msg[1]) if msg[2] is not None else []
                    state = rules.evolve(state, events, msg[1])
                elif msg[0] == p.PLAYBACK:
                    return resets, state

        await ws.send(p.encode_watch("kf", 470))
        assert msgpack.unpackb(await ws.recv())[0] == p.WATCHING
        resets, state = await answer(b"")  # the WATCH's STATE, FRAMEs and PLAYBACK
        assert resets == [300] and rules.state_hash(state) == rec.hashes[470]
        resets, state = await answer(p.encode_seek(520))
        assert resets == [300] and rules.state_hash(state) == rec.hashes[520]
        resets, state = await answer(p.encode_seek(160))
        assert resets == [150] and rules.state_hash(state) == rec.hashes[160]
        assert app.spectators.engine.stats.keyframes_skipped == 1
        await ws.close()


async def test_an_unwatched_delay_costs_no_timer_and_a_late_spectator_gets_the_delayed_edge(
    tmp_path,
):
    """A match nobody spectates arms no release timer for its delay (no wake-up per
    tick); the first spectator still goes live exactly at the delayed edge, never early."""
    async with running_app(tmp_path) as app:
        settings = FAST_SETTINGS | {"time_limit_s": 6.0}
        settings |= {"spectator_delay": DELAY, "public_spectating": True}
        match = await app.lobby.create("arena", settings, start_players=2)
        bots = await start_bots(app, match.match_id, 2)
        while match.durable_tick < 3 * 30:  # three delays' worth of ticks, all unwatched
            await asyncio.sleep(0.05)
        hub = match.hub
        assert hub is not None and hub._timer is None
        spec = await Spectator.connect(url(app))
        before = match.durable_tick
        status = await spec.watch(match.match_id, "live")
        live_tick = match.durable_tick
        assert status["live"] is True
        # The edge is the tick durable DELAY ago (a quarter second of slack for
        # scheduling): not stale although nothing was released on time, never early.
        assert before - (DELAY + 0.25) * 30 <= spec.tick <= live_tick - (DELAY - 0.25) * 30
        assert hub._timer is not None  # watched: released on time from now on
        async for frame in spec:
            assert frame.tick <= match.durable_tick - (DELAY - 0.25) * 30
            if frame.tick >= live_tick:
                break
        await spec.close()
        await bots
