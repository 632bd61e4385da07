"""The viewer's end-to-end harness: a real server child process, real bot matches played
through the websocket protocol, Debian's chromium driven by Playwright, and the
replay engine opened on the server's SQLite file to say what every tick must look like.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from games import GAMES, open_test_store

from replay.codec import encode_batch
from replay.engine import ReplayEngine
from replay.timeline import Timeline, marker_json
from server import auth

SECRET = "viewer-test-secret-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A finished match long enough for kills, and a live one that outlasts the tests (15 min:
# the whole file takes 6 on a loaded 2-core machine).
FINISHED = {"tick_rate": 30, "time_limit_s": 8, "max_players": 8, "min_players": 2, "damage": 50}
LIVE = {"tick_rate": 30, "time_limit_s": 900, "max_players": 8, "min_players": 2}
# Spectating options (docs/protocol.md 11.2): both watchable without a token, the live
# one behind a delay.
FINISHED_OPTIONS = {"public_spectating": True}
LIVE_OPTIONS = {"public_spectating": True, "spectator_delay": 2.0}
_CLI = (sys.executable, "-m", "server")
ARTIFACTS = Path(
    os.environ.get("MATCHREPLAY_TEST_ARTIFACTS")
    or Path(__file__).resolve().parent.parent / "test-artifacts"
)
"""Screenshots a person looks at (the live view, an ended match, the home page):
``$MATCHREPLAY_TEST_ARTIFACTS``, default ``test-artifacts/`` (ignored by git)."""


def admin_token() -> str:
    return auth.issue(SECRET, "viewer-test-admin", "admin", "*", 3600)


def spectator_token(match: str) -> str:
    return auth.issue(SECRET, "viewer-test-caster", "spectator", match, 3600)


@dataclass
class ViewerServer:
    """A ``matchreplay serve`` child process with a finished and a live bot match."""

    tmp: Path
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    bots: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> str:
        return str(self.tmp / "server.db")

    def start(self, port: int = 0) -> None:
        """Start the server (again: on ``port``, the one it had, for a restart test)."""
        self.proc = subprocess.Popen(
            [
                *_CLI,
                "serve",
                "--port",
                str(port),
                "--db",
                self.db,
                "--data-dir",
                str(self.tmp),
                "--secret",
                SECRET,
            ],
            stdout=subprocess.PIPE,
            stderr=(self.tmp / "server.log").open("a"),  # kept for a failing test's reader
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r":(\d+)/", line)
        assert m, f"server did not start: {line!r}"
        self.port = int(m.group(1))

    def simulate(self, match_id: str, players: int, minutes: float, seed: int) -> None:
        """An offline-generated finished match in the server's store (before ``start``)."""
        subprocess.run(
            [
                *_CLI,
                "simulate",
                "--players",
                str(players),
                "--minutes",
                str(minutes),
                "--db",
                self.db,
                "--match-id",
                match_id,
                "--seed",
                str(seed),
            ],
            check=True,
            capture_output=True,
        )

    def request(self, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.base + path, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def create_match(self, match_id: str, settings: dict[str, Any], seed: int) -> None:
        q = urllib.parse.urlencode(
            {"game": "arena", "settings": json.dumps(settings), "match_id": match_id}
            | {"start_players": 4, "seed": seed}
        )
        status, body = self.request("POST", f"/api/matches?{q}", admin_token())
        assert status == 201, body

    def play(self, match_id: str, count: int = 4) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                *_CLI,
                "bots",
                "--url",
                f"ws://127.0.0.1:{self.port}/ws",
                "--match",
                match_id,
                "--count",
                str(count),
                "--secret",
                SECRET,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.bots.append(proc)
        return proc

    def wait_status(self, match_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            code, info = self.request("GET", f"/api/matches/{match_id}", admin_token())
            if code == 200 and info["status"] == status:
                return info
            assert time.monotonic() < deadline, f"{match_id} never reached {status}: {info}"
            time.sleep(0.2)

    def wait_tick(self, match_id: str, tick: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.last_tick(match_id) < tick:
            assert time.monotonic() < deadline, f"{match_id} never reached tick {tick}"
            time.sleep(0.2)

    def last_tick(self, match_id: str) -> int:
        """The match's newest durable tick (as an admin: no spectator delay)."""
        return int(self.request("GET", f"/api/matches/{match_id}", admin_token())[1]["tick"])

    def kill(self) -> None:
        """Kill the server process at once (no graceful shutdown), bots left running."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=15)

    def stop(self) -> None:
        for p in [*self.bots, self.proc]:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*self.bots, self.proc]:
            if p is not None:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()


def server_states(db: str, match_id: str, ticks: list[int]) -> dict[int, dict[str, Any]]:
    """``ReplayEngine.state_at`` for each tick, in the shape of the page's ``state()`` hook."""

    async def read() -> dict[int, dict[str, Any]]:
        store = open_test_store(db, read_only=True)  # beside the running server
        await store.open()
        try:
            engine = ReplayEngine(store, GAMES)
            return {t: plain(await engine.state_at(match_id, t)) for t in ticks}
        finally:
            await store.close()

    return _run(read())


def server_markers(db: str, match_id: str, abandoned: bool = False) -> list[dict[str, Any]]:
    """Every timeline marker of a match (replay/timeline.py), as the protocol sends them;
    ``abandoned``: those of abandoned branches too (flagged)."""

    async def read() -> list[dict[str, Any]]:
        store = open_test_store(db, read_only=True)  # beside the running server
        await store.open()
        try:
            engine = ReplayEngine(store, GAMES)
            last = (await engine.match(match_id)).last_tick
            found = await Timeline(engine).markers(match_id, 0, last, abandoned=abandoned)
            return [marker_json(m) for m in found]
        finally:
            await store.close()

    return _run(read())


def server_result(db: str, match_id: str, tick: int) -> dict[str, Any] | None:
    """``rules.result`` at ``tick`` with the winner's display name, as the page shows it."""

    async def read() -> dict[str, Any] | None:
        store = open_test_store(db, read_only=True)  # beside the running server
        await store.open()
        try:
            engine = ReplayEngine(store, GAMES)
            state = await engine.state_at(match_id, tick)
            outcome = engine.rules(await engine.match(match_id)).result(state)
            if outcome is None:
                return None
            slot = state.players.index(outcome.winner) if outcome.winner in state.players else -1
            name = state.names[slot] if slot >= 0 else outcome.winner
            return {"winner": outcome.winner, "winner_name": name, "reason": outcome.reason}
        finally:
            await store.close()

    return _run(read())


def first_batch(db: str, match_id: str) -> tuple[int, bytes]:
    """The first stored event of a match as a one-event batch (replay.codec): its tick and
    bytes, what a FRAME of that tick would carry (a fork's ``forked`` event)."""

    async def read() -> tuple[int, bytes]:
        store = open_test_store(db, read_only=True)  # beside the running server
        await store.open()
        try:
            first = (await store.read(match_id, 1, 1))[0]
            return first.tick, encode_batch([first.new_event()])
        finally:
            await store.close()

    return _run(read())


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot artifact (see ARTIFACTS) and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def run_async(coro: Any) -> Any:
    """Run a coroutine (e.g. a Python SDK session) from a Playwright sync test."""
    return _run(coro)


def server_scoreboard(db: str, match_id: str, tick: int) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = open_test_store(db, read_only=True)  # beside the running server
        await store.open()
        try:
            return await ReplayEngine(store, GAMES).scoreboard_at(match_id, tick)
        finally:
            await store.close()

    return _run(read())


def _run(coro: Any) -> Any:
    # Playwright's sync API keeps an event loop running in this thread: run ours in another.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def plain(s: Any) -> dict[str, Any]:
    """An ArenaState as docs/viewer.md's ``state()`` JSON."""
    players = [
        {
            "slot": slot,
            "id": s.players[slot],
            "name": s.names[slot],
            "x": int(s.x[slot]),
            "y": int(s.y[slot]),
            "aim": int(s.aim[slot]),
            "health": int(s.health[slot]),
            "alive": bool(s.alive[slot]),
            "kills": int(s.kills[slot]),
            "deaths": int(s.deaths[slot]),
            "score": int(s.score[slot]),
        }
        for slot in range(len(s.players))
        if s.present[slot]
    ]
    return {
        "tick": s.tick,
        "started_tick": s.started_tick,
        "ended": s.ended,
        "winner": s.winner,
        "players": players,
    }


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium. Missing, it fails the tests (never skips them): CI must not go
    green without the browser tests."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
