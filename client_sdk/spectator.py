"""Spectator: watch a match over the network, live behind its delay or any past tick.

::

    spec = await Spectator.connect("ws://host:8765/ws", token=None)  # None: public matches
    info = await spec.watch("m1", from_="live")
    async for frame in spec:                 # frame.tick, frame.events, frame.state
        draw(frame.state)
    await spec.seek(300); await spec.play(2.0); await spec.pause(); await spec.step(-1)

The local state follows docs/protocol.md section 11.4: a STATE replaces it, a
FRAME is folded into it with the game's rules, so after every frame it equals
the server's ``state_at`` for that tick. Controls return the PLAYBACK status
that answers them (all STATE/FRAMEs sent before it are already applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from client_sdk.view import FrameBuffer, ViewFrame
from replay import protocol as p
from replay.codec import decode_batch
from replay.rules import Rules, rules_for

__all__ = ["Spectator"]


class Spectator:
    def __init__(self, ws: ClientConnection, welcome: p.Welcome) -> None:
        self.ws = ws
        self.welcome = welcome
        self.info: dict[str, Any] | None = None
        """The WATCHING metadata of the match being watched."""
        self.rules: Rules[Any] | None = None
        self.state: Any = None
        self.tick = -1
        self.status: p.Playback | None = None
        self.scoreboard_rows: list[dict[str, Any]] | None = None
        """The latest pushed scoreboard (SCOREBOARD with ref nil)."""
        self.skipped: list[p.Skipped] = []
        self.ended: p.Ended | None = None
        self._frames = FrameBuffer()
        self._refs = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._statuses: list[asyncio.Future[p.Playback]] = []
        self._watching: asyncio.Future[dict[str, Any]] | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str, token: str | None = None) -> Spectator:
        if token:
            url = f"{url}{'&' if '?' in url else '?'}token={token}"
        ws = await connect(url, subprotocols=[p.SUBPROTOCOL], max_size=1 << 24)  # type: ignore[list-item]
        welcome = p.decode_server(await ws.recv())
        if not isinstance(welcome, p.Welcome):
            await ws.close()
            raise p.ProtocolError(p.E_MALFORMED, f"expected WELCOME, got {welcome!r}")
        return cls(ws, welcome)

    async def __aenter__(self) -> Spectator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ------------------------------------------------------------------------

    async def list_matches(
        self, status: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        reply = await self._request(lambda ref: p.encode_list(ref, status, limit))
        return reply.matches

    async def watch(self, match_id: str, from_: str | int = "live") -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self._watching = loop.create_future()
        status = self._expect_status()
        await self.ws.send(p.encode_watch(match_id, from_))
        info = await self._watching
        await status
        return info

    async def seek(self, tick: int) -> p.Playback:
        return await self._control(p.encode_seek(tick))

    async def play(self, speed: float = 1.0) -> p.Playback:
        return await self._control(p.encode_play(speed))

    async def pause(self) -> p.Playback:
        return await self._control(p.encode_pause())

    async def step(self, n: int = 1) -> p.Playback:
        return await self._control(p.encode_step(n))

    async def live(self) -> p.Playback:
        return await self._control(p.encode_live())

    async def markers(self, from_tick: int = 0, to_tick: int | None = None) -> list[dict[str, Any]]:
        reply = await self._request(lambda ref: p.encode_markers(ref, from_tick, to_tick))
        return reply.markers

    async def clip(self, kill_tick: int, seconds: float = 5.0) -> dict[str, Any]:
        reply = await self._request(lambda ref: p.encode_clip(ref, kill_tick, seconds))
        return reply.clip

    async def scoreboard(self) -> tuple[int, list[dict[str, Any]]]:
        """(tick, rows) at the tick being watched."""
        reply = await self._request(p.encode_scoreboard)
        return reply.tick, reply.rows

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    # -- frames ---------------------------------------------------------------------------

    def __aiter__(self) -> Spectator:
        return self

    async def __anext__(self) -> ViewFrame:
        return await self._frames.get()

    # -- internals ----------------------------------------------------------------------

    def _expect_status(self) -> asyncio.Future[p.Playback]:
        fut: asyncio.Future[p.Playback] = asyncio.get_running_loop().create_future()
        self._statuses.append(fut)
        return fut

    async def _control(self, frame: bytes) -> p.Playback:
        fut = self._expect_status()
        await self.ws.send(frame)
        return await fut

    async def _request(self, encode: Any) -> Any:
        ref = next(self._refs)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[ref] = fut
        try:
            await self.ws.send(encode(ref))
            return await fut
        finally:
            self._replies.pop(ref, None)

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                self._process(p.decode_server(data))  # type: ignore[arg-type]
        except ConnectionClosed:
            pass
        finally:
            self._frames.close()
            exc = ConnectionError(f"connection closed ({self.ws.close_code})")
            for fut in [*self._statuses, *self._replies.values(), self._watching]:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)

    def _process(self, msg: Any) -> None:
        if isinstance(msg, p.Frame):
            assert self.rules is not None
            events = decode_batch(msg.events, msg.tick) if msg.events is not None else []
            self.state = self.rules.evolve(self.state, events, msg.tick)
            self.tick = msg.tick
            self._frames.put(ViewFrame(msg.tick, events, self.state))
        elif isinstance(msg, p.State):
            assert self.rules is not None
            self.state = self.rules.decode_state(msg.data, msg.state_format)
            self.tick = msg.tick
            self._frames.put(ViewFrame(msg.tick, [], self.state, reset=True))
        elif isinstance(msg, p.Playback):
            self.status = msg
            if self._statuses:
                fut = self._statuses.pop(0)
                if not fut.done():
                    fut.set_result(msg)
        elif isinstance(msg, p.Watching):
            self.info = msg.info
            self.rules = rules_for(msg.info["game"])
            if self._watching is not None and not self._watching.done():
                self._watching.set_result(msg.info)
        elif isinstance(msg, p.ScoreboardReply) and msg.ref is None:
            self.scoreboard_rows = msg.rows
        elif isinstance(msg, (p.Matches, p.MarkersReply, p.ClipReply, p.ScoreboardReply)):
            fut = self._replies.get(msg.ref)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif isinstance(msg, p.Skipped):
            self.skipped.append(msg)
        elif isinstance(msg, p.Ended):
            self.ended = msg
        elif isinstance(msg, p.Error):
            exc = p.ProtocolError(msg.code, msg.message, msg.ref)
            fut = self._replies.get(msg.ref) if isinstance(msg.ref, int) else None
            if fut is None and self._watching is not None and not self._watching.done():
                fut = self._watching
                if self._statuses:
                    self._statuses.pop(0).cancel()
            elif fut is None and self._statuses:
                fut = self._statuses.pop(0)
            if fut is not None and not fut.done():
                fut.set_exception(exc)
