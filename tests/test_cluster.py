"""A cluster of real node processes on loopback over a real PostgreSQL: membership,
placement, redirects, spectators and leaderboards on any node, failover after SIGKILL,
the paused zombie, and the hand-over on SIGTERM (docs/operations.md, "A cluster")."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cluster_helpers import ADMIN, Node, cluster, owner_of, token, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from client_sdk.bots import run_bots
from client_sdk.game_client import GameClient
from client_sdk.spectator import Spectator
from replay import protocol as p
from replay.audit import audit
from replay.engine import ReplayEngine
from replay.events import SYSTEM_TAKEOVER
from replay.games import builtin_games
from replay.leaderboards.projection import LeaderboardProjection
from replay.leaderboards.service import Leaderboards
from replay.store import open_store
from replay.store.verify import verify_store
from replay.timeline import Timeline

# Long enough to span several failovers; bots keep sending inputs all the while.
LONG_MATCH = quote(
    json.dumps(
        {"tick_rate": 30, "time_limit_s": 600, "score_limit": 0, "min_players": 2, "max_players": 8}
    )
)


def create(node: Node, *, on: str | None = None, settings: str = LONG_MATCH, **q: str) -> dict:
    query = "&".join(f"{k}={v}" for k, v in q.items())
    where = f"&node={on}" if on else ""
    status, info = node.http("POST", f"/api/matches?game=arena&settings={settings}{where}&{query}")
    assert status == 201, info
    return info


async def players(nodes: list[Node], entry: Node, match_id: str, n: int) -> list[GameClient]:
    """``n`` SDK players that know every node, joined through ``entry``."""
    clients = []
    for i in range(n):
        c = GameClient(
            entry.url,
            token(f"p{i}", match=match_id),
            nodes=[x.url for x in nodes],
            keep_messages=False,
            max_attempts=40,
        )
        await c.connect()
        await c.join(match_id)
        clients.append(c)
    return clients


async def play(clients: list[GameClient], stop: asyncio.Event) -> None:
    """Every client sends one input per tick until ``stop``, through reconnects."""
    k = 0
    while not stop.is_set():
        for c in clients:
            if c.ended is None:
                # Circling, aiming and firing: the players hit each other (kills to count).
                c.send_input([math.cos(k / 5), math.sin(k / 5), k / 7, k % 10 == 0])
        k += 1
        await asyncio.sleep(1 / 30)


def check_inputs(entries: list[dict], acked: dict[str, int]) -> None:
    """No acknowledged input lost, none applied twice: ``acked`` is each player's
    highest seq its client saw acknowledged."""
    for player, seq in acked.items():
        mine = [e for e in entries if e["kind"] == "input" and e["player"] == player]
        applied = [e["seq"] for e in mine if e["seq"] is not None]
        assert len(applied) == len(set(applied)), f"{player}: an input applied twice"
        assert applied == sorted(applied)
        done = max((e["acked"] for e in mine), default=0)
        assert done >= seq, f"{player}: acked {seq}, stored {done}"


def test_nodes_register_and_new_matches_go_where_there_is_room(pg_url: str, tmp_path: Path) -> None:
    with cluster(pg_url, tmp_path) as (n1, n2, n3):
        for node in (n1, n2, n3):
            listed = {n["name"]: n for n in node.nodes()}
            assert set(listed) == {"n1", "n2", "n3"}
            assert all(
                n["status"] == "up" and n["url"].startswith("ws://") for n in listed.values()
            )
        # On a named node, through any node.
        info = create(n1, on="n2")
        assert info["node"] == "n2"
        assert owner_of(n3, info["match_id"]) == "n2"
        status, body = n1.http("POST", "/api/matches?game=arena&node=n9")
        assert status == 404 and body["error"]["code"] == "unknown_node"


def test_a_full_node_is_passed_over_and_a_full_cluster_refuses(pg_url: str, tmp_path: Path) -> None:
    with cluster(pg_url, tmp_path, ("n1", "n2"), "--max-seated-players", "2") as (n1, n2):
        first = create(n1, on="n1")["match_id"]
        seated = _hold(lambda: players([n1, n2], n1, first, 2))
        try:
            wait_for(lambda: _full(n2, "n1"), "n1 reports full")
            for _ in range(3):  # n1 is full: placement passes it over, even asked on n1
                assert create(n1)["node"] == "n2"
            second = create(n2, on="n2")["match_id"]
            also = _hold(lambda: players([n1, n2], n2, second, 2))
            try:
                wait_for(lambda: _full(n1, "n2"), "n2 reports full")
                status, body = n1.http("POST", "/api/matches?game=arena")
                assert status == 503 and body["error"]["code"] == "server_full", body
            finally:
                also.set()
        finally:
            seated.set()


def _full(node: Node, name: str) -> bool:
    return any(n["load"].get("full") for n in node.nodes() if n["name"] == name)


def _hold(make: Any) -> Any:
    """Run ``make()``'s clients in a thread of their own until the returned event is set."""
    import threading

    release = threading.Event()
    started = threading.Event()

    def run() -> None:
        async def main() -> None:
            clients = await make()
            started.set()
            await asyncio.to_thread(release.wait)
            for c in clients:
                await c.close()

        asyncio.run(main())

    threading.Thread(target=run, daemon=True).start()
    assert started.wait(30)
    return release


def test_a_player_is_sent_to_the_owner(pg_url: str, tmp_path: Path) -> None:
    with cluster(pg_url, tmp_path) as (n1, n2, n3):
        match_id = create(n1, on="n1")["match_id"]

        async def main() -> None:
            # The raw protocol (docs/protocol.md): ERROR moved with the URL, then 4011.
            async with connect(
                n2.url,
                subprotocols=[p.SUBPROTOCOL],  # type: ignore[list-item]
                additional_headers={"Authorization": f"Bearer {token('alice', match=match_id)}"},
            ) as ws:
                assert isinstance(p.decode_server(await ws.recv()), p.Welcome)
                await ws.send(p.encode_join(match_id, None))
                err = p.decode_server(await ws.recv())
                assert isinstance(err, p.Error) and err.code == p.E_MOVED
                assert err.message == n1.url
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (p.CLOSE_MOVED, n1.url)
            # The SDK follows it without the caller noticing.
            client = GameClient(n3.url, token("alice", match=match_id))
            await client.connect()
            joined = await client.join(match_id)
            assert joined.match_id == match_id and client.slot is not None
            await client.close()

        asyncio.run(main())
        # HTTP through any node is answered by the owner (forwarded).
        status, body = n3.http("POST", f"/api/matches/{match_id}/reserve?player=bob")
        assert status == 200 and body["player"] == "bob", body


def test_failover_after_sigkill_keeps_every_acknowledged_input(pg_url: str, tmp_path: Path) -> None:
    kills = 10
    with cluster(pg_url, tmp_path) as nodes:
        by_name = {n.name: n for n in nodes}
        match_id = create(nodes[0], on="n1")["match_id"]
        # A bot match on each node beside it: they move too when their node dies.
        others = [create(nodes[0], on=n.name)["match_id"] for n in nodes]

        async def main() -> list[GameClient]:
            clients = await players(nodes, nodes[1], match_id, 3)
            bots = [
                asyncio.create_task(
                    run_bots(
                        nodes[2].url,
                        other,
                        [token(f"bot{i}-{j}", match=other) for j in range(2)],
                        duration=kills * 6,
                        nodes=[n.url for n in nodes],
                    )
                )
                for i, other in enumerate(others)
            ]
            stop = asyncio.Event()
            pump = asyncio.create_task(play(clients, stop))
            for k in range(kills):
                before = [c.acked_seq for c in clients]
                await asyncio.sleep(1.0)
                owner = await asyncio.to_thread(owner_of, nodes[(k + 1) % 3], match_id)
                victim = by_name[owner]
                await asyncio.to_thread(victim.kill)
                # Every player's inputs are acknowledged again, by the new owner.
                deadline = time.monotonic() + 30
                while any(c.acked_seq <= b + 30 for c, b in zip(clients, before, strict=True)):
                    assert time.monotonic() < deadline, f"kill {k}: no acks after the failover"
                    assert all(c.ended is None for c in clients), "the match ended"
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(victim.start)  # back, as a new instance
            stop.set()
            await pump
            for task in bots:
                task.cancel()
            await asyncio.gather(*bots, return_exceptions=True)
            await asyncio.sleep(0.5)
            return clients

        clients = asyncio.run(main())
        # Seqs and positions gap-free, every takeover recorded, the replay plays through.
        report = asyncio.run(_stored(pg_url, match_id))
        assert report["takeovers"] == report["takeover_markers"] == kills
        assert report["seqs"] == list(range(1, len(report["seqs"]) + 1))
        assert report["replayed"]
        assert report["damage"] == []  # store verify: every position, seq and checksum
        check_inputs(
            report["audit"]["entries"], {f"p{i}": c.acked_seq for i, c in enumerate(clients)}
        )
        for other in others:  # the bot matches moved with their nodes and played through
            moved = asyncio.run(_stored(pg_url, other))
            assert moved["seqs"] == list(range(1, len(moved["seqs"]) + 1)) and moved["replayed"]
        assert sum(asyncio.run(_stored(pg_url, o))["takeovers"] for o in others) >= kills // 3


async def _stored(store_url: str, match_id: str) -> dict[str, Any]:
    store = open_store(store_url, catalogs=builtin_games().catalogs())
    async with store:
        events = await store.read(match_id)
        engine = ReplayEngine(store, builtin_games())
        record = await store.get_match(match_id)
        state = await engine.state_at(match_id, record.last_tick)
        return {
            "damage": (await verify_store(store)).damage,
            "head": await store.last_position(),
            "takeovers": sum(1 for e in events if e.type == SYSTEM_TAKEOVER),
            # What the viewer's timeline shows: one marker per takeover.
            "takeover_markers": len(await Timeline(engine).markers(match_id, kinds=["takeover"])),
            "seqs": [e.seq for e in events],
            "replayed": engine.rules(record).state_tick(state) == record.last_tick,
            "audit": await audit(engine, match_id, limit=10_000_000),
        }


async def _rebuilt_boards(store_url: str, boards: Path) -> list[tuple[str, Any]]:
    games = builtin_games()
    store = open_store(store_url, catalogs=games.catalogs())
    async with store:
        projection = LeaderboardProjection(
            store, str(boards), games.default_boards(), games.leaderboard_metrics()
        )
        await projection.open()
        try:
            await projection.catch_up()
            return _rows(Leaderboards(projection).top("kills", limit=100))
        finally:
            await projection.close()


def _rows(top: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(e["owner"], e["value"], e["subscore"]) for e in top["entries"]]


def test_a_paused_owner_never_writes_again(pg_url: str, tmp_path: Path) -> None:
    with cluster(pg_url, tmp_path) as (n1, n2, n3):
        match_id = create(n1, on="n1")["match_id"]

        async def main() -> int:
            clients = await players([n1, n2, n3], n2, match_id, 2)
            stop = asyncio.Event()
            pump = asyncio.create_task(play(clients, stop))
            await asyncio.sleep(1.0)
            n1.pause()
            try:
                # Another node takes it over and acknowledges inputs again.
                acked = [c.acked_seq for c in clients]
                deadline = time.monotonic() + 30
                while any(c.acked_seq <= a + 30 for c, a in zip(clients, acked, strict=True)):
                    assert time.monotonic() < deadline, "no takeover while n1 was paused"
                    await asyncio.sleep(0.05)
            finally:
                n1.resume()  # the zombie wakes up with its old copy of the match
            await asyncio.sleep(3 * 1.0)
            stop.set()
            await pump
            for c in clients:
                await c.close()
            return 0

        asyncio.run(main())
        report = asyncio.run(_stored(pg_url, match_id))
        assert report["takeovers"] == 1
        assert report["seqs"] == list(range(1, len(report["seqs"]) + 1))
        assert owner_of(n1, match_id) in ("n2", "n3")
        assert n1.alive  # it dropped the match, not itself
        assert "lease lost" in n1.log.read_text()


def test_sigterm_hands_matches_to_peers(pg_url: str, tmp_path: Path) -> None:
    with cluster(pg_url, tmp_path) as (n1, n2, n3):
        match_id = create(n1, on="n1")["match_id"]

        async def main() -> list[GameClient]:
            clients = await players([n1, n2, n3], n1, match_id, 2)
            stop = asyncio.Event()
            pump = asyncio.create_task(play(clients, stop))
            await asyncio.sleep(1.0)
            assert await asyncio.to_thread(n1.stop) == 0
            acked = [c.acked_seq for c in clients]
            deadline = time.monotonic() + 30
            while any(c.acked_seq <= a + 30 for c, a in zip(clients, acked, strict=True)):
                assert time.monotonic() < deadline, "no acks after the hand-over"
                await asyncio.sleep(0.05)
            stop.set()
            await pump
            return clients

        clients = asyncio.run(main())
        assert all(c.ended is None for c in clients)
        assert owner_of(n2, match_id) in ("n2", "n3")
        _, info = n2.http("GET", f"/api/matches/{match_id}")
        assert info["status"] == "running"
        report = asyncio.run(_stored(pg_url, match_id))
        assert report["takeovers"] == 1


def test_a_delayed_spectator_on_another_node_never_sees_a_tick_early(
    pg_url: str, tmp_path: Path
) -> None:
    delay = 2.0
    with cluster(pg_url, tmp_path) as (n1, n2, n3):
        settings = quote(
            json.dumps(
                {"tick_rate": 30, "time_limit_s": 600, "score_limit": 0, "spectator_delay": delay}
            )
        )
        match_id = create(n1, on="n1", settings=settings)["match_id"]
        samples: list[tuple[float, int]] = []  # (when, the owner's tick then)

        async def main() -> list[tuple[float, int]]:
            clients = await players([n1, n2, n3], n1, match_id, 2)
            stop = asyncio.Event()
            pump = asyncio.create_task(play(clients, stop))

            async def sample() -> None:
                while not stop.is_set():
                    # Stamped when asked: the tick answered is the owner's at that time or
                    # later, so it bounds what the owner had played by then from above.
                    asked = time.monotonic()
                    _, info = await asyncio.to_thread(n1.http, "GET", f"/api/matches/{match_id}")
                    samples.append((asked, info["tick"]))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            spectator = await Spectator.connect(n3.url, token("viewer", "spectator"))
            await spectator.watch(match_id, "live")
            seen: list[tuple[float, int]] = []
            async with asyncio.timeout(30):
                async for frame in spectator:
                    seen.append((time.monotonic(), frame.tick))
                    if len(seen) >= 120:
                        break
            await spectator.close()
            stop.set()
            await asyncio.gather(pump, sampler)
            for c in clients:
                await c.close()
            return seen

        seen = asyncio.run(main())
        assert seen[-1][1] > seen[0][1]
        for at, tick in seen:
            # The owner's tick a little after (at - delay) bounds what may be shown at ``at``.
            later = [t for when, t in samples if when >= at - delay]
            if later and samples[0][0] <= at - delay:
                assert tick <= later[0], f"tick {tick} shown at {at:.2f}, owner at {later[0]}"


def test_spectators_watch_on_any_node(pg_url: str, tmp_path: Path) -> None:
    with cluster(pg_url, tmp_path) as (n1, n2, n3):
        match_id = create(n1, on="n1")["match_id"]

        async def main() -> None:
            clients = await players([n1, n2, n3], n1, match_id, 2)
            stop = asyncio.Event()
            pump = asyncio.create_task(play(clients, stop))
            spectator = await Spectator.connect(n3.url, ADMIN)
            await spectator.watch(match_id, "live")
            ticks = []
            async with asyncio.timeout(20):  # frames keep coming, from the store
                async for frame in spectator:
                    ticks.append(frame.tick)
                    if len(ticks) >= 60:
                        break
            assert ticks[-1] > ticks[0]
            # Exactly the owner's state: the spectator's fold matches the store's.
            await spectator.close()
            stop.set()
            await pump
            for c in clients:
                await c.close()

        asyncio.run(main())


def test_matchreplay_cluster_starts_everything_in_one_command(tmp_path: Path) -> None:
    """``make cluster``: PostgreSQL, nodes and bot matches, then Ctrl-C stops it all."""
    import signal
    import subprocess
    import urllib.request

    from cli_helpers import command, env, free_port

    port = free_port()
    proc = subprocess.Popen(
        command(
            "cluster",
            "--nodes",
            "2",
            "--matches",
            "2",
            "--bots",
            "2",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "cluster"),
        ),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        guide = "".join(printed)
        assert "PostgreSQL  postgresql://" in guide, guide
        assert f"http://127.0.0.1:{port}/api/nodes" in guide
        # Both nodes up (on a crowded machine a heartbeat can be late for a moment).
        up: list[str] = []
        for _ in range(50):
            url = f"http://127.0.0.1:{port}/api/nodes"
            with urllib.request.urlopen(url, timeout=10) as answer:
                listed = json.load(answer)["nodes"]
            up = sorted(n["name"] for n in listed if n["status"] == "up")
            if up == ["n1", "n2"]:
                break
            time.sleep(0.2)
        assert up == ["n1", "n2"], listed
        placed = [line.split()[2] for line in printed if "  on n" in line]
        assert len(placed) == 2 and set(placed) <= {"n1", "n2"}, guide
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "stopped: nodes and PostgreSQL" in rest
