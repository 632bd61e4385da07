"""Spectator: watch a match over the network, live behind its delay or any past tick.

::

    spec = await Spectator.connect("ws://host:8765/ws", token=None)  # None: public matches
    # in a cluster, optionally: Spectator.connect(url, token, nodes=["ws://other:8765/ws"])
    info = await spec.watch("m1", from_="live")
    async for frame in spec:                 # frame.tick, frame.events, frame.state
        draw(frame.state)
    await spec.seek(300); await spec.play(2.0); await spec.pause(); await spec.step(-1)

The local state follows docs/protocol.md section 11.4: a STATE replaces it, a
FRAME is folded into it with the game's rules, so after every frame it equals
the server's ``state_at`` for that tick. Controls return the PLAYBACK status
that answers them (all STATE/FRAMEs sent before it are already applied).

Reconnecting. When the connection is lost (a network failure, a server restart,
a slow-consumer close), the spectator reconnects by itself: up to
``reconnect_attempts`` tries (:data:`RECONNECT_ATTEMPTS`), waiting
:data:`RECONNECT_BACKOFF` (doubling, with jitter) before each, through any known
node of the cluster (:class:`client_sdk.nodes.Nodes`: ``url``, ``nodes``, and
``GET /api/nodes``; the node that failed is tried last). Every node answers WATCH
(docs/protocol.md section 14), so a spectator is never redirected. It then WATCHes the
same match again where it was: ``"live"`` if it followed live, else the tick of its
local state, and PLAYs again at the same speed if it was playing. The server
answers with a STATE (a ``reset`` frame) and iteration goes on. Requests in flight
when the connection dropped fail with :class:`ConnectionError`; controls issued
while reconnecting wait for it. A close that reconnecting cannot fix
(``replay.protocol.NO_RETRY``: refused token, protocol errors, replaced; unlike a
player, a spectator retries 1001: the match stays watchable once the server is back)
or a refused WATCH (``forbidden``, ``unknown_match``) ends the session: iteration raises
:class:`~client_sdk.game_client.ClientClosed` or the :class:`ProtocolError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from client_sdk.game_client import ClientClosed
from client_sdk.nodes import NODE_GONE, Nodes
from client_sdk.view import FrameBuffer, ViewFrame
from replay import protocol as p
from replay.codec import decode_batch
from replay.fold import fold_events
from replay.games import builtin_games
from replay.rules import GameRegistry, Rules

__all__ = ["RECONNECT_ATTEMPTS", "RECONNECT_BACKOFF", "Spectator"]

log = logging.getLogger(__name__)

RECONNECT_ATTEMPTS = 8
"""Reconnect tries after a lost connection before the session ends (about 20 s of
trying with the default backoff: enough for a server restart)."""
RECONNECT_BACKOFF = (0.1, 5.0)
"""Seconds before the first try, and the cap; doubled per try, times 0.5-1.5 (jitter)."""
RESTORE_TIMEOUT = 10.0
"""Seconds a reconnected session waits for the server to answer its WATCH (and PLAY)."""


class Spectator:
    def __init__(
        self,
        ws: ClientConnection,
        welcome: p.Welcome,
        *,
        url: str | None = None,
        token: str | None = None,
        nodes: Sequence[str] = (),
        reconnect_attempts: int = RECONNECT_ATTEMPTS,
        games: GameRegistry | None = None,
    ) -> None:
        self.ws = ws
        self.games = games or builtin_games()
        """The games whose matches this spectator can rebuild."""
        self.welcome = welcome
        self.url = url
        """The node connected to (without the token); None: never reconnect."""
        self.token = token
        self.nodes = Nodes([url, *nodes] if url is not None else nodes)
        """Where to reconnect: any node of the cluster answers WATCH."""
        self.reconnect_attempts = reconnect_attempts if url is not None else 0
        self.reconnects = 0
        """Successful reconnects so far."""
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
        self._online = asyncio.Event()
        """Set while connected and not restoring; controls wait for it."""
        self._online.set()
        self._closing = False
        self._ended: BaseException | None = None
        """Why the session ended for good (set once, with the frames closed)."""
        self._reader = asyncio.get_running_loop().create_task(self._run())

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None = None,
        *,
        nodes: Sequence[str] = (),
        reconnect_attempts: int = RECONNECT_ATTEMPTS,
        games: GameRegistry | None = None,
    ) -> Spectator:
        """Connect and read WELCOME. ``nodes``: other websocket URLs of the same
        cluster to reconnect through. ``reconnect_attempts=0`` turns reconnecting off."""
        ws, welcome = await _open(url, token)
        return cls(
            ws,
            welcome,
            url=url,
            token=token,
            nodes=nodes,
            reconnect_attempts=reconnect_attempts,
            games=games,
        )

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
        await self._wait_online()
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
        self._closing = True
        if not self._online.is_set():  # between connections: stop trying
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.ws.close()  # the current connection, maybe one opened by a reconnect
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

    async def _wait_online(self) -> None:
        """Wait out a reconnect; raise if the session is over."""
        await self._online.wait()
        if self._ended is not None:
            raise self._ended
        if self._closing:
            raise ConnectionError("the spectator was closed")

    async def _control(self, frame: bytes) -> p.Playback:
        # Registered after the reconnect, so a restore's PLAYBACK never answers it.
        await self._wait_online()
        fut = self._expect_status()
        await self.ws.send(frame)
        return await fut

    async def _request(self, encode: Any) -> Any:
        await self._wait_online()
        ref = next(self._refs)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[ref] = fut
        try:
            await self.ws.send(encode(ref))
            return await fut
        finally:
            self._replies.pop(ref, None)

    async def _run(self) -> None:
        """Read and apply server messages; reconnect when the connection is lost."""
        ended: BaseException | None = None
        try:
            while True:
                with contextlib.suppress(ConnectionClosed):
                    async for data in self.ws:
                        self._process(p.decode_server(data))  # type: ignore[arg-type]
                code, reason = self.ws.close_code, self.ws.close_reason or ""
                self._online.clear()
                self._fail_pending(ConnectionError(f"connection closed ({code})"))
                if self._closing:
                    return
                if code in p.NO_RETRY or not self.reconnect_attempts:
                    ended = ClientClosed(code, reason)
                    return
                log.info("spectator connection lost (%s %s): reconnecting", code, reason)
                ended = await self._reconnect(code, reason)
                if ended is not None:
                    return
                self._online.set()
        finally:
            self._end(ended)

    async def _reconnect(self, code: int | None, reason: str) -> BaseException | None:
        """Connect again and put the session back where it was: None once back, else
        why it cannot be (the session ends with it)."""
        assert self.url is not None
        if code in NODE_GONE:
            self.nodes.fail(self.url)  # the node itself may be gone: try it last
        lo, hi = RECONNECT_BACKOFF
        last: BaseException = ClientClosed(code, reason)
        for attempt in range(self.reconnect_attempts):
            await asyncio.sleep(min(hi, lo * 2**attempt) * (0.5 + random.random()))
            if attempt == 0:  # after the jitter: the spectators of a node spread out
                await self.nodes.refresh(self.token)  # learn the cluster's nodes, if any
            url = self.nodes.after(self.url)
            try:
                ws, self.welcome = await _open(url, self.token)
            except InvalidStatus as exc:
                if exc.response.status_code in (400, 401, 403):
                    return exc
                self.nodes.fail(url)
                self.url, last = url, exc
                continue
            except ConnectionClosed as exc:  # e.g. 4001: the token expired meanwhile
                if exc.rcvd is not None and exc.rcvd.code in p.NO_RETRY:
                    return ClientClosed(exc.rcvd.code, exc.rcvd.reason)
                self.url, last = url, exc
                continue
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                self.nodes.fail(url)
                self.url, last = url, exc
                continue
            self.nodes.answered(url)
            self.ws, self.url = ws, url
            try:
                async with asyncio.timeout(RESTORE_TIMEOUT):
                    await self._restore()
            except p.ProtocolError as exc:  # forbidden, unknown_match: final
                await ws.close()
                return exc
            except (ConnectionClosed, TimeoutError) as exc:
                await ws.close()
                if isinstance(exc, ConnectionClosed) and ws.close_code in p.NO_RETRY:
                    return ClientClosed(ws.close_code, ws.close_reason or "")
                last = exc
                continue
            self.reconnects += 1
            return None
        tries = self.reconnect_attempts
        return ClientClosed(code, f"{reason} (no reconnect in {tries} tries: {last})")

    async def _restore(self) -> None:
        """WATCH the match again at the tick (or live) and mode it had; PLAY if it played."""
        if self.info is None:
            return  # nothing was watched yet
        status = self.status
        mode = status.mode if status is not None else "paused"
        start: str | int = "live" if mode == "live" else max(0, self.tick)
        await self.ws.send(p.encode_watch(self.info["match_id"], start))
        await self._until_status()
        if mode == "replay" and status is not None:
            await self.ws.send(p.encode_play(status.speed))
            await self._until_status()

    async def _until_status(self) -> None:
        """Apply messages up to the PLAYBACK that answers a control; raise its ERROR."""
        while True:
            msg = p.decode_server(await self.ws.recv())  # type: ignore[arg-type]
            if isinstance(msg, p.Error) and msg.ref is None:
                raise p.ProtocolError(msg.code, msg.message)
            self._process(msg)
            if isinstance(msg, p.Playback):
                return

    def _fail_pending(self, exc: BaseException) -> None:
        for fut in [*self._statuses, *self._replies.values(), self._watching]:
            if fut is not None and not fut.done():
                fut.set_exception(exc)
        self._statuses.clear()

    def _end(self, error: BaseException | None) -> None:
        """The session is over: ``error`` None after :meth:`close`, else why."""
        if error is not None:
            self._ended = error
        self._fail_pending(error or ConnectionError(f"connection closed ({self.ws.close_code})"))
        self._frames.close(error)
        self._online.set()  # wake waiting controls: they raise

    def _process(self, msg: Any) -> None:
        if isinstance(msg, p.Frame):
            assert self.rules is not None
            events = decode_batch(msg.events, msg.tick) if msg.events is not None else []
            self.state = fold_events(self.rules, self.state, events, msg.tick)
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
            self.rules = self.games[msg.info["game"]]
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


async def _open(url: str, token: str | None) -> tuple[ClientConnection, p.Welcome]:
    if token:  # in the query: the same as browsers must (docs/protocol.md section 1)
        url = f"{url}{'&' if '?' in url else '?'}token={token}"
    ws = await connect(url, subprotocols=[p.SUBPROTOCOL], max_size=1 << 24)  # type: ignore[list-item]
    try:
        welcome = p.decode_server(await ws.recv())
    except BaseException:  # closed, or cancelled by close(): do not leave it open
        ws.transport.abort()
        raise
    if not isinstance(welcome, p.Welcome):
        await ws.close()
        raise p.ProtocolError(p.E_MALFORMED, f"expected WELCOME, got {welcome!r}")
    return ws, welcome
