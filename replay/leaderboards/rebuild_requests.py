"""Rebuild requests from another process (``matchreplay leaderboards rebuild`` while a
server runs): a JSON file beside the read model, served by the running projection.

The file, ``<read model>.rebuild-request``, holds ``{"boards": [...] | null, "state":
"requested" | "running" | "failed", "done", "total", "error"}``: the requester writes
``requested``, the projection ``running`` with its progress, then removes the file
when the rebuild is swapped in (or writes ``failed`` with the error). Every write
replaces the file atomically, so a reader never sees half of one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from replay.leaderboards.errors import LeaderboardError

__all__ = ["Progress", "RebuildRequests", "rebuild_request_path", "write_json_atomically"]

Progress = Callable[[int], object]
"""Called with the number of events just folded (e.g. ``tqdm.update``)."""
Rebuild = Callable[[list[str] | None, Progress], Awaitable[int]]
"""Rebuild these boards (None: all), reporting progress; returns the events read."""
_STATUS_EVERY_S = 0.2


def rebuild_request_path(boards_path: str) -> str:
    return boards_path + ".rebuild-request"


def write_json_atomically(path: str, value: object) -> None:
    """Replace ``path`` atomically, so a reader never sees half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


class RebuildRequests:
    """Serves the requests for one read model, one rebuild at a time."""

    def __init__(self, boards_path: str, rebuild: Rebuild, total: Callable[[], int]) -> None:
        self.path = rebuild_request_path(boards_path)
        self._rebuild = rebuild
        self._total = total
        self._task: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Start serving a waiting request (one ``stat`` when there is none)."""
        if self._task is not None or not os.path.exists(self.path):
            return
        try:
            with open(self.path) as f:
                request = json.load(f)
        except (OSError, ValueError):
            return  # being written (it is replaced atomically): seen on the next check
        if isinstance(request, dict) and request.get("state") == "requested":
            boards = request.get("boards") or None
            self._task = asyncio.create_task(self._serve(boards))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _serve(self, boards: list[str] | None) -> None:
        status: dict[str, Any] = {
            "boards": boards,
            "state": "running",
            "done": 0,
            "total": self._total(),
        }
        last_write = 0.0

        def progress(n: int) -> None:
            nonlocal last_write
            status["done"] += n
            if time.monotonic() - last_write > _STATUS_EVERY_S:
                last_write = time.monotonic()
                write_json_atomically(self.path, status)

        try:
            write_json_atomically(self.path, status)
            await self._rebuild(boards, progress)
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        except (LeaderboardError, LookupError, TypeError) as exc:
            code = getattr(exc, "code", "bad_request")
            failed = {"state": "failed", "error": f"{code}: {exc}"}
            write_json_atomically(self.path, status | failed)
        finally:
            self._task = None
