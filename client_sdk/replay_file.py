"""ReplayFile: an exported ``.mrp`` replay played locally with the Spectator's API.

::

    async with await ReplayFile.open("match.mrp") as replay:
        info = await replay.watch(from_=0)          # paused at tick 0
        await replay.play(4.0)
        async for frame in replay:                  # frame.tick, frame.events, frame.state
            ...

No server: the file is the source (``replay.replay_file.ReplayFileReader``), seeks
go through a local :class:`~replay.engine.ReplayEngine` (keyframes in the file),
and frames come from a :class:`~replay.playback.Playback` with the exact state
of every tick. ``live()`` jumps to the last tick (a file has no live edge).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from client_sdk.view import FrameBuffer, ViewFrame
from replay import protocol as p
from replay.engine import ReplayEngine
from replay.games import builtin_games
from replay.playback import Playback
from replay.replay_file import ReplayFileReader
from replay.rules import GameRegistry
from replay.timeline import Timeline

__all__ = ["ReplayFile"]


class ReplayFile:
    def __init__(self, reader: ReplayFileReader, games: GameRegistry) -> None:
        self.reader = reader
        self.record = reader.record
        self.engine = ReplayEngine(reader, games)
        self.timeline = Timeline(self.engine)
        self.rules = self.engine.rules(self.record)
        self.state: Any = None
        self.tick = -1
        self.info: dict[str, Any] | None = None
        self._playback: Playback | None = None
        self._frames = FrameBuffer()
        self._pump: asyncio.Task[None] | None = None
        self._moved = asyncio.Condition()

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], games: GameRegistry | None = None
    ) -> ReplayFile:
        """``games``: the games the file may hold (default: the built-in ones)."""
        games = games or builtin_games()
        return cls(ReplayFileReader(path, games.catalogs()), games)

    async def __aenter__(self) -> ReplayFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def list_matches(
        self, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        return [p.match_info(self.record)]

    async def watch(self, match_id: str | None = None, from_: str | int = 0) -> dict[str, Any]:
        r = self.record
        last = await self.engine.last_tick(r.match_id)
        start = last if from_ == "live" else min(int(from_), last)
        self._playback = Playback(self.engine, r.match_id, start=start, with_state=True)
        self._playback.pause()
        self._playback.step()  # show the start tick
        self._pump = asyncio.get_running_loop().create_task(self._run())
        self.info = r.describe() | {
            "state_format": self.rules.state_format,
            "spectator_delay": 0.0,
            "status": r.status,
            "live": False,
            "first_tick": 0,
            "last_tick": last,
        }
        await self._until(start)
        return self.info

    # -- controls (same shape as Spectator's) ------------------------------------------------

    async def seek(self, tick: int) -> p.Playback:
        pb = self._pb()
        tick = min(max(0, tick), await self.engine.last_tick(self.record.match_id))
        playing = not pb.paused
        await pb.seek(tick)
        if not playing:
            pb.step()
        await self._until(tick)
        return self._status()

    async def play(self, speed: float = 1.0) -> p.Playback:
        pb = self._pb()
        pb.set_speed(speed)
        pb.resume()
        return self._status()

    async def pause(self) -> p.Playback:
        self._pb().pause()
        return self._status()

    async def step(self, n: int = 1) -> p.Playback:
        pb = self._pb()
        pb.pause()
        last = await self.engine.last_tick(self.record.match_id)
        target = min(max(0, self.tick + n), last)
        if n < 0 or target != self.tick + n:
            await pb.seek(target)
            pb.step()
        else:
            for _ in range(target - self.tick):
                pb.step()
        await self._until(target)
        return self._status()

    async def live(self) -> p.Playback:
        return await self.seek(await self.engine.last_tick(self.record.match_id))

    async def markers(self, from_tick: int = 0, to_tick: int | None = None) -> list[dict[str, Any]]:
        found = await self.timeline.markers(self.record.match_id, from_tick, to_tick)
        return [{"tick": m.tick, "kind": m.kind, "data": m.data} for m in found]

    async def clip(self, kill_tick: int, seconds: float = 5.0) -> dict[str, Any]:
        found = await self.timeline.markers(self.record.match_id, kill_tick, kill_tick)
        kill = next((m for m in found if "killer" in m.data), None)
        if kill is None:
            raise p.ProtocolError("unknown_marker", f"no kill marker at tick {kill_tick}")
        c = await self.timeline.kill_clip(self.record.match_id, kill, seconds)
        return {
            "match_id": c.match_id,
            "from_tick": c.from_tick,
            "to_tick": c.to_tick,
            "follow": c.follow,
            "follow_player": c.follow_player,
        }

    async def scoreboard(self) -> tuple[int, list[dict[str, Any]]]:
        return self.tick, self.rules.scoreboard(self.state)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        self._frames.close()
        self.reader.close()

    # -- frames ---------------------------------------------------------------------------

    def __aiter__(self) -> ReplayFile:
        return self

    async def __anext__(self) -> ViewFrame:
        return await self._frames.get()

    # -- internals -------------------------------------------------------------------------

    def _pb(self) -> Playback:
        if self._playback is None:
            raise p.ProtocolError(p.E_NOT_WATCHING, "watch() first")
        return self._playback

    def _status(self) -> p.Playback:
        pb = self._pb()
        mode = "paused" if pb.paused else "replay"
        last = self.record.last_tick
        return p.Playback(mode, pb.speed or 0.0, self.tick, max(0, last), False)

    async def _run(self) -> None:
        assert self._playback is not None
        async for f in self._playback:
            # The playback's frames hold a copy of the state: the exact state_at(f.tick).
            reset = f.tick != self.tick + 1
            self.state, self.tick = f.state, f.tick
            self._frames.put(ViewFrame(f.tick, f.events, f.state, reset=reset))
            async with self._moved:
                self._moved.notify_all()
        self._frames.close()

    async def _until(self, tick: int) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: self.tick == tick)
