"""Admission control: a full process refuses new players and matches with
``server_full``, keeps its seated players (resumes included) and says why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from server_helpers import FAST_SETTINGS, running_app, token, url

from client_sdk import GameClient
from replay import protocol as p
from server.headroom import Headroom, Limits
from server.lobby import ServerFullError


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), 10)


ENDLESS = FAST_SETTINGS | {"time_limit_s": 0, "min_players": 1}


async def test_a_full_process_refuses_new_players_and_matches_but_not_resumes(tmp_path):
    async with running_app(tmp_path, max_seated_players=3, grace_period=30.0) as app:
        match = await app.lobby.create("arena", ENDLESS, start_players=1)
        other = await app.lobby.create("arena", ENDLESS, start_players=1)
        seated = []
        for name in ("a", "b", "c"):
            client = GameClient(url(app), token(name, match=match.match_id))
            await client.connect()
            await client.join(match.match_id)
            seated.append(client)
        assert app.lobby.refusal().startswith("3 players seated")

        late = GameClient(url(app), token("d", match="*"))
        await late.connect()
        with pytest.raises(p.ProtocolError) as refused:
            await late.join(other.match_id)
        assert refused.value.code == p.E_SERVER_FULL
        await late.close()
        assert "d" not in other.seats

        with pytest.raises(ServerFullError) as no_match:
            await app.lobby.create("arena", ENDLESS, start_players=1)
        assert no_match.value.code == p.E_SERVER_FULL

        # A seated player who drops and comes back keeps its seat: resumes are let in.
        await seated[0].close()
        back = GameClient(url(app), token("a", match=match.match_id))
        await back.connect()
        joined = await back.join(match.match_id)
        assert joined.resumed and joined.slot == seated[0].slot

        # The seated players still play: their inputs are acknowledged.
        seq = seated[1].send_input([1.0, 0.0, 0.0, False])
        await until(lambda: seated[1].acked_seq >= seq)

        # A seat given up frees room for one more player.
        await seated[2].leave()
        await until(lambda: "c" not in match.seats)
        late = GameClient(url(app), token("d", match="*"))
        await late.connect()
        assert (await late.join(other.match_id)).slot is not None
        for client in (back, seated[1], late):
            await client.close()


async def test_a_process_whose_ticks_run_late_refuses_new_players_until_they_catch_up(tmp_path):
    async with running_app(tmp_path, max_tick_lateness_ms=50.0) as app:
        match = await app.lobby.create("arena", ENDLESS, start_players=1)
        assert app.lobby.refusal() == ""
        # Keep the event loop busy past due ticks, again and again: the ticker runs late.
        for _ in range(12):
            time.sleep(0.15)
            await asyncio.sleep(0.02)
        assert "late" in app.lobby.refusal()
        client = GameClient(url(app), token("a", match=match.match_id))
        await client.connect()
        with pytest.raises(p.ProtocolError) as refused:
            await client.join(match.match_id)
        assert refused.value.code == p.E_SERVER_FULL and "late" in str(refused.value)
        report = app.lobby.headroom.report(app.lobby.seated())
        assert report["full"] and report["tick_lateness_p90_s"] > 0.05

        # Punctual ticks for a window: the process takes players again.
        await until(lambda: app.lobby.refusal() == "")
        assert (await client.join(match.match_id)).slot is not None
        await client.close()


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_start_up_is_not_load_and_a_short_span_refuses_nobody() -> None:
    """A server just up must not refuse its first match because starting used the CPU:
    the figure is judged only over half a window at least, and start-up is forgotten."""
    headroom = Headroom(Limits(max_cpu=0.5, window_s=0.4))
    _busy(0.1)  # start-up work, over less than half a window
    assert headroom.cpu() > 0.5 and headroom.full_reason(0) == ""
    _busy(0.15)  # busy over half a window: that is load, and it refuses
    assert "CPU at" in headroom.full_reason(0)
    headroom.measure_from_now()  # what App.start and serve call once up
    assert headroom.full_reason(0) == ""
    time.sleep(0.25)  # idle since: measured, and room
    assert headroom.cpu() < 0.5 and headroom.full_reason(0) == ""
