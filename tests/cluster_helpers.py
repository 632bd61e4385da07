"""A cluster of real ``matchreplay serve --node`` processes on loopback over one real
PostgreSQL: started, killed (SIGKILL), paused (SIGSTOP), stopped (SIGTERM), restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cli_helpers import SECRET, TIMEOUT, command, env, free_port

from server import auth

LEASE_TTL = 1.0
"""Short leases keep the tests quick: a dead node's matches move about a second later."""


def token(player: str, role: str = "player", match: str = "*") -> str:
    return auth.issue(SECRET, player, role, match, 3600)


ADMIN = token("referee", "admin")


class Node:
    """One node process; its port stays the same across restarts (its URL too)."""

    def __init__(self, name: str, store: str, data: Path, *args: str) -> None:
        self.name = name
        self.store = store
        self.port = free_port()
        self.data = data / name
        self.data.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.log = self.data / "serve.log"
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> Node:
        with self.log.open("a") as stderr:
            self.proc = subprocess.Popen(
                command(
                    "serve",
                    "--node",
                    self.name,
                    "--store",
                    self.store,
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data),
                    "--lease-ttl",
                    str(LEASE_TTL),
                    "--grace-period",
                    "20",
                    *self.args,
                ),
                cwd=self.data,
                env=env(
                    MATCHREPLAY_SECRET=SECRET,
                    MATCHREPLAY_MAX_CPU="0",
                    MATCHREPLAY_MAX_TICK_LATENESS_MS="0",
                ),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        watchdog = threading.Timer(TIMEOUT, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                if line.strip().startswith("a player token:"):
                    # Keep draining stdout so the child never blocks on a full pipe.
                    threading.Thread(target=proc.stdout.read, daemon=True).start()
                    return
        finally:
            watchdog.cancel()
        raise AssertionError(f"node {self.name} exited {proc.wait()}: {self.log.read_text()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=TIMEOUT)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def http(self, method: str, path: str, tok: str | None = ADMIN) -> tuple[int, Any]:
        req = urllib.request.Request(self.base + path, method=method)
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def nodes(self) -> list[dict[str, Any]]:
        status, body = self.http("GET", "/api/nodes", None)
        assert status == 200, body
        return body["nodes"]


@contextmanager
def cluster(
    store: str, data: Path, names: tuple[str, ...] = ("n1", "n2", "n3"), *args: str
) -> Iterator[list[Node]]:
    nodes = [Node(name, store, data, *args) for name in names]
    try:
        for n in nodes:
            n.start()
        wait_for(
            lambda: all(len(live(n)) == len(nodes) for n in nodes), "every node sees the others"
        )
        yield nodes
    finally:
        for n in nodes:
            if n.alive:
                n.resume()
                n.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for n in nodes:
            if n.proc is not None:
                try:
                    n.proc.wait(timeout=TIMEOUT)
                except subprocess.TimeoutExpired:
                    n.proc.kill()


def live(node: Node) -> list[dict[str, Any]]:
    return [n for n in node.nodes() if n["status"] == "up"]


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def owner_of(node: Node, match_id: str) -> str:
    """The name of the node that runs ``match_id`` (as GET /api/matches/{id} says)."""
    status, info = node.http("GET", f"/api/matches/{match_id}")
    assert status == 200, info
    return info["node"]
