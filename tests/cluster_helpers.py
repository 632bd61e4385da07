"""A cluster of real ``matchreplay serve --node`` processes on loopback over one real
PostgreSQL: started, killed (SIGKILL), paused (SIGSTOP), stopped (SIGTERM), restarted."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cli_helpers import SECRET, TIMEOUT, env

from server import auth
from server.node_process import NodeProcess

LEASE_TTL = 1.0
"""Short leases keep the tests quick: a dead node's matches move about a second later."""


def token(player: str, role: str = "player", match: str = "*") -> str:
    return auth.issue(SECRET, player, role, match, 3600)


ADMIN = token("referee", "admin")


class Node(NodeProcess):
    """A node of the test cluster: short leases, a long grace period, admission by
    measured load off (a busy test machine must not refuse players at random)."""

    def __init__(self, name: str, store: str, data: Path, *args: str) -> None:
        super().__init__(
            name,
            store,
            data / name,
            ["--lease-ttl", str(LEASE_TTL), "--grace-period", "20", *args],
            env=env(
                MATCHREPLAY_SECRET=SECRET,
                MATCHREPLAY_MAX_CPU="0",
                MATCHREPLAY_MAX_TICK_LATENESS_MS="0",
            ),
        )

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
            n.stop(timeout=TIMEOUT)


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
