"""The nodes of a cluster a client knows, and the order to try them in.

Any node of a cluster is a front door (docs/protocol.md section 14): a client that
lost its node reconnects through another one. It knows the websocket URLs its caller
gave, the ones a redirect named, and the ones ``GET /api/nodes`` lists as ``up`` on
any node (fetched with :mod:`client_sdk.http_client`, as
:mod:`client_sdk.leaderboards` does: no HTTP dependency). A node that failed (the
connection dropped without a close frame, or could not be opened) is tried last
until it answers again. One server alone is a cluster of one: the same rules give
"reconnect to that server".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from client_sdk.http_client import HttpConnection

__all__ = ["NODES_PATH", "NODES_TIMEOUT", "NODE_GONE", "Nodes", "http_base", "is_ws_url"]

log = logging.getLogger(__name__)

NODES_PATH = "/api/nodes"
"""The HTTP route listing a cluster's nodes (docs/operations.md, docs/protocol.md 14)."""
NODES_TIMEOUT = 2.0
"""Seconds one ``GET /api/nodes`` may take: a node that slow is passed over."""
NODE_GONE = frozenset({1006, 1001, 1011})
"""Closes after which the node itself may be gone (dropped without a close frame,
shutting down, internal error): it is tried last."""


def is_ws_url(text: str) -> bool:
    """Whether ``text`` is a websocket URL a client may connect to (a redirect's reason)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("ws", "wss") and bool(parts.netloc)


def http_base(ws_url: str) -> str:
    """``ws://host:port/ws`` -> ``http://host:port`` (``wss`` -> ``https``): the node's
    HTTP routes are on the same port as its websocket."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


class Nodes:
    """Known websocket URLs (``ws://host:port/ws``, without a token), in the order
    they were learned; :meth:`after` walks them with the failed ones last."""

    def __init__(self, urls: Iterable[str]) -> None:
        self.urls: list[str] = list(dict.fromkeys(urls))
        self.failed: set[str] = set()
        """Nodes whose last connection failed: tried after every other one."""

    def __len__(self) -> int:
        return len(self.urls)

    def learn(self, url: str) -> None:
        if url not in self.urls:
            self.urls.append(url)

    def fail(self, url: str) -> None:
        self.learn(url)
        self.failed.add(url)

    def answered(self, url: str) -> None:
        self.failed.discard(url)

    def order(self) -> list[str]:
        """Every known node: the live ones first, then the failed ones."""
        return [u for u in self.urls if u not in self.failed] + [
            u for u in self.urls if u in self.failed
        ]

    def after(self, url: str | None) -> str:
        """The node to try after ``url``: the next one in :meth:`order`, cyclically, so
        successive tries go round every node, live ones first."""
        order = self.order()
        if url not in order:
            return order[0]
        return order[(order.index(url) + 1) % len(order)]

    async def refresh(self, token: str | None = None) -> bool:
        """Ask the known nodes for ``GET /api/nodes``, live ones first, until one answers;
        learn the nodes it lists as ``up`` and mark the others failed. False when no
        node answered (a single server without the route answers 404: nothing to learn)."""
        for url in self.order():
            try:
                listed = await _fetch_nodes(url, token)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.debug("no node list from %s: %s", url, exc)
                continue
            for node in listed:
                node_url = node.get("url")
                if not isinstance(node_url, str) or not is_ws_url(node_url):
                    continue
                if node.get("status") == "up":
                    self.learn(node_url)
                    self.answered(node_url)
                elif node_url in self.urls:
                    self.failed.add(node_url)
            return True
        return False


async def _fetch_nodes(ws_url: str, token: str | None) -> list[dict[str, Any]]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with HttpConnection(http_base(ws_url), timeout=NODES_TIMEOUT) as http:
        response = await http.request("GET", NODES_PATH, headers)
    if response.status != 200:
        raise ValueError(f"GET {NODES_PATH}: HTTP {response.status}")
    listed = json.loads(response.body)["nodes"]
    if not isinstance(listed, list):
        raise TypeError(f"nodes is a {type(listed).__name__}, not a list")
    return [n for n in listed if isinstance(n, dict)]
