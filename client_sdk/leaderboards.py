"""``Leaderboards``: an async client for the leaderboards HTTP JSON API.

Point it at the server's HTTP port (``http://host:8765``); the routes are in
docs/leaderboards.md. Requests use the stdlib (``urllib`` on a worker thread),
so the SDK needs no HTTP dependency. A 4xx answer raises
:class:`LeaderboardError` with the server's ``code`` and ``message``.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["Entry", "LeaderboardError", "Leaderboards", "Page"]


class LeaderboardError(Exception):
    """An error answer: ``status`` (HTTP), ``code`` (stable, documented), ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Entry:
    rank: int
    owner: str
    value: int
    subscore: int
    reached_at: int
    """Global position of the event that set this value (the first-reached tie-break)."""


@dataclass(frozen=True)
class Page:
    board: str
    period: str
    position: int
    """The global event position the board reflected when answering."""
    count: int
    """Entries in the board period."""
    entries: list[Entry]
    next_cursor: str | None = None
    reached: bool | None = None
    """With ``wait``: whether the board had reached that position."""


def _page(body: dict[str, Any]) -> Page:
    return Page(
        body["board"],
        body["period"],
        body["position"],
        body["count"],
        [Entry(**e) for e in body.get("entries", ())],
        body.get("next_cursor"),
        body.get("reached"),
    )


class Leaderboards:
    """Queries against ``base_url`` (scheme, host and port of the server)."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    async def boards(self) -> dict[str, Any]:
        """Every board's definition and current period, with the position."""
        return await self._get("", {})

    async def periods(self, board: str) -> dict[str, Any]:
        return await self._get(f"/{quote(board, safe='')}/periods", {})

    async def top(
        self,
        board: str,
        *,
        limit: int = 100,
        cursor: str | None = None,
        period: str | None = None,
        wait: int | None = None,
        timeout: float | None = None,
    ) -> Page:
        """The best ``limit`` entries, or the page after ``cursor``."""
        params = {"limit": limit, "cursor": cursor, "period": period}
        return _page(await self._get(f"/{quote(board, safe='')}", params, wait, timeout))

    async def entry(
        self,
        board: str,
        player: str,
        *,
        period: str | None = None,
        wait: int | None = None,
        timeout: float | None = None,
    ) -> tuple[Entry, Page]:
        """``player``'s rank and entry (the page has the board, period, position, count)."""
        path = f"/{quote(board, safe='')}/players/{quote(player, safe='')}"
        body = await self._get(path, {"period": period}, wait, timeout)
        return Entry(**body["entry"]), _page(body)

    async def around(
        self,
        board: str,
        player: str,
        *,
        limit: int = 21,
        period: str | None = None,
        wait: int | None = None,
        timeout: float | None = None,
    ) -> Page:
        """``limit`` entries around ``player``, ``player`` included."""
        path = f"/{quote(board, safe='')}/players/{quote(player, safe='')}/around"
        return _page(await self._get(path, {"limit": limit, "period": period}, wait, timeout))

    async def count(self, board: str, *, period: str | None = None) -> int:
        return (await self._get(f"/{quote(board, safe='')}/count", {"period": period}))["count"]

    async def _get(
        self,
        path: str,
        params: dict[str, Any],
        wait: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        params = params | {"wait": wait, "timeout": timeout}
        query = urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.base_url}/api/leaderboards{path}" + (f"?{query}" if query else "")
        # A waiting query may take its whole timeout on the server: allow for it.
        deadline = self.timeout + (timeout or 0)
        return await asyncio.to_thread(self._fetch, url, deadline)

    def _fetch(self, url: str, timeout: float) -> dict[str, Any]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())["error"]
            except (ValueError, KeyError, TypeError):
                raise LeaderboardError(exc.code, "http_error", str(exc)) from None
            raise LeaderboardError(exc.code, err["code"], err["message"]) from None
