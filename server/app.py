"""Wiring: the store, the lobby, the websocket server and HTTP routes; startup and
graceful shutdown.

Shutdown order (SIGTERM/SIGINT): stop accepting connections; every match
finishes its current tick and flushes its events durably, then is marked
interrupted; connections are closed with 1001; the store is closed (flushed).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from replay import protocol as p
from replay.errors import ReplayError
from replay.games import load_games
from replay.leaderboards.definitions import load_definitions
from replay.leaderboards.projection import LeaderboardProjection, boards_path_for
from replay.leaderboards.service import Leaderboards
from replay.protocol import LEADERBOARD_PREFIX
from replay.store import open_store, store_file
from replay.store.base import EventStore
from server import auth, http
from server.cluster import Cluster
from server.config import Settings
from server.connection import GameConnection
from server.follower import Follower
from server.http_keepalive import HttpChannel, PlainHttp
from server.lobby import Lobby
from server.metrics import Metrics
from server.session import Session, SessionDeps
from server.spectators import Spectators
from server.viewer_api import ViewerApi, viewer_routes

__all__ = ["App", "run"]

log = logging.getLogger(__name__)

SIGNAL_REPEAT_WINDOW_S = 1.0
"""A second SIGTERM (or SIGINT) this soon after the first is the same stop request."""


class App:
    def __init__(self, settings: Settings, store: EventStore | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.games = load_games(settings.game_specs)
        if store is None:
            if (db_file := store_file(settings.db)) is not None:
                Path(db_file).parent.mkdir(parents=True, exist_ok=True)
            store = open_store(
                settings.db, catalogs=self.games.catalogs(), synchronous=settings.synchronous
            )
        self.store = store
        self.secret = auth.load_secret(settings.secret, settings.secret_file, settings.data_dir)
        self.secret_origin = auth.secret_origin(
            settings.secret, settings.secret_file, settings.data_dir
        )
        self.lobby = Lobby(self.store, self.metrics, settings, self.games)
        self.cluster: Cluster | None = None
        """A cluster node's membership, leases and placement (server/cluster.py)."""
        if settings.node:
            self.cluster = self.lobby.cluster = Cluster(
                self.store, self.lobby, settings.node, settings.lease_ttl, self._load
            )
        self.spectators = self.lobby.spectators = Spectators(
            self.store,
            self.games,
            settings.spectator_delay,
            settings.spectator_queue_bytes,
            settings.spectator_stall_seconds,
            settings.spectator_max_skips,
            on_slow=self.metrics.slow_consumers.inc,
        )
        if self.cluster is not None:
            sp = self.spectators
            sp.follower = Follower(self.store, sp.engine, sp.make_hub, sp.retire)
        # The global leaderboards: a read model of the same store, followed by a
        # background task, queried over HTTP and the websocket protocol.
        metrics = self.games.leaderboard_metrics()
        self.projection = LeaderboardProjection(
            self.store,
            settings.boards_db or self._boards_path(),
            load_definitions(settings.boards_config, metrics)
            if settings.boards_config
            else self.games.default_boards(),
            metrics,
        )
        self.leaderboards = Leaderboards(self.projection)
        self._projection_task: asyncio.Task[None] | None = None
        self.connections = 0
        # Each handler gets the narrow things it uses, never the app.
        self.sessions = SessionDeps(
            settings, self.store, self.lobby, self.spectators, self.leaderboards, self.metrics
        )
        authenticator = http.Authenticator(self.secret, self.secret_origin)
        api = [
            *http.ops_routes(
                http.Ops(
                    self.metrics,
                    self.lobby,
                    self.open_connections,
                    self.projection,
                    self.cluster.nodes_json if self.cluster is not None else None,
                )
            ),
            *http.match_routes(
                http.MatchApi(
                    self.lobby,
                    self.store,
                    self.spectators,
                    authenticator,
                    self.games.default,
                    settings.token_ttl,
                    self.cluster,
                )
            ),
            *http.leaderboard_routes(http.BoardsApi(self.leaderboards, authenticator)),
        ]
        viewer = ViewerApi(
            self.store,
            self.lobby,
            self.spectators,
            self.spectators.engine,
            authenticator,
            self.games,
            leaderboards=http.Router(api).serves(LEADERBOARD_PREFIX),
        )
        # The viewer's last: its catch-all /static/ routes must not shadow the API.
        self.router = http.Router([*api, *viewer_routes(viewer)])
        # Plain HTTP requests go to the router from the connection itself, kept alive
        # between requests (server/http_keepalive.py); only upgrades reach websockets.
        self.http = PlainHttp(
            self.router.dispatch,
            max_requests=settings.http_max_requests,
            idle_timeout=settings.http_idle_timeout,
            first_request_timeout=settings.open_timeout,
            close_timeout=settings.close_timeout,
            max_connections=settings.max_connections,
            websockets=lambda: self.connections,
            at_once=self.router.at_once,
        )
        self.server: Server | None = None
        self.stopped = asyncio.Event()

    def _boards_path(self) -> str:
        """The leaderboards' read model: one per node of a cluster (each follows the
        global stream: a replica that answers locally), else beside the store."""
        default = boards_path_for(getattr(self.store, "path", self.settings.db))
        if self.cluster is None:
            return default
        name = Path(default).name.removesuffix(".boards.sqlite")
        Path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)
        return str(Path(self.settings.data_dir) / f"{name}.{self.settings.node}.boards.sqlite")

    def open_connections(self) -> int:
        """Websocket sessions and plain HTTP connections open now (``max_connections``)."""
        return self.connections + self.http.open

    def _load(self) -> dict[str, Any]:
        """What this node tells the cluster with each heartbeat (placement reads it)."""
        return self.lobby.headroom.report(self.lobby.seated()) | {"matches": len(self.lobby.live)}

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # A failed start (port taken, unreadable store, read model held by another
            # server) releases what it opened: the store's threads would keep the process.
            await self._release()
            raise

    async def _start(self) -> None:
        await self.store.open()
        # Before recover(): the read model's lock is taken first, so a second server on
        # the same store fails here instead of marking the first one's matches interrupted.
        await self.projection.open()
        # A cluster node leaves unfinished matches to the leases: other nodes carry
        # them on (or this one, once their lease lapses).
        if self.cluster is None and await self.lobby.recover():
            await self.projection.retire_finished()  # their tallies can go now
        self._projection_task = asyncio.create_task(
            self.projection.run(), name="leaderboard-projection"
        )
        self._projection_task.add_done_callback(_report_crash)
        s = self.settings
        self.server = await serve(
            self._handler,
            s.host,
            s.port,
            process_request=self._process_request,
            create_connection=functools.partial(
                GameConnection, open_channel=functools.partial(HttpChannel, http=self.http)
            ),
            subprotocols=[p.SUBPROTOCOL],  # type: ignore[list-item]
            max_size=s.max_frame_bytes,
            max_queue=16,
            open_timeout=s.open_timeout,
            close_timeout=s.close_timeout,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            compression=None,  # 64 KiB per connection, and msgpack barely compresses
        )
        log.info("listening on ws://%s:%d", s.host, self.port)
        if self.cluster is not None:
            await self.cluster.start(s.public_url or f"ws://{s.host}:{self.port}/ws")
            log.info("cluster node %s (%s)", self.cluster.instance, self.cluster.url)
        self.lobby.headroom.measure_from_now()

    async def stop(self) -> None:
        """Graceful shutdown (idempotent)."""
        if self.stopped.is_set() or self.server is None:
            return
        self.stopped.set()
        self.server.server.close()  # stop accepting; open connections stay for now
        self.http.shut()  # idle keep-alive connections close; busy ones after their answer
        if self.cluster is not None:
            # With live peers, every match moves to one (its players with one redirect);
            # the ones left (no peer) stop as on a single server.
            try:
                await self.cluster.hand_over_all()
            except ReplayError as exc:
                log.error("hand-over failed (%s): the matches left are interrupted", exc)
        await self.lobby.stop_all()  # finish ticks, flush, mark interrupted, send ENDED
        self.server.close()  # close the remaining connections with 1001
        try:
            async with asyncio.timeout(self.settings.close_timeout + 1.0):
                await self.server.wait_closed()
        except TimeoutError:
            # Each close is bounded by close_timeout already; this is the backstop for
            # a connection stuck on a write that never drains.
            for conn in list(self.server.connections):
                conn.transport.abort()
            await self.server.wait_closed()
        await self.http.wait_closed(self.settings.close_timeout)
        await self._release()
        log.info("stopped")

    async def _release(self) -> None:
        if self.cluster is not None:
            await self.cluster.close()
        if self.spectators.follower is not None:
            await self.spectators.follower.close()
        if self._projection_task is not None:
            # A cancelled step writes nothing: the checkpoint stays with the boards.
            self._projection_task.cancel()
            await asyncio.gather(self._projection_task, return_exceptions=True)
        await self.projection.close()
        await self.store.close()

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        # Only websocket upgrades get here: GameConnection answers plain HTTP itself.
        offered = [
            v.strip()
            for h in request.headers.get_all("Sec-WebSocket-Protocol")
            for v in h.split(",")
        ]
        if p.SUBPROTOCOL not in offered:
            return conn.respond(
                HTTPStatus.BAD_REQUEST,
                f"unsupported protocol {', '.join(offered) or '(none)'}: this server speaks"
                f" {p.SUBPROTOCOL} (Sec-WebSocket-Protocol)\n",
            )
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        self.metrics.connections.inc()
        try:
            s = self.settings
            if self.open_connections() > s.max_connections:
                await conn.close(p.CLOSE_TOO_MANY_CONNECTIONS, "too many connections")
                return
            token = http.request_token(conn.request) if conn.request is not None else None
            if not token:
                identity = auth.ANONYMOUS  # may only spectate public matches
                # The last seats are kept for connections with a token: token-less
                # connections cannot lock players out.
                if self.open_connections() > s.max_connections * (1.0 - s.authenticated_reserve):
                    await conn.close(
                        p.CLOSE_TOO_MANY_CONNECTIONS, "too many connections without a token"
                    )
                    return
            else:
                try:
                    identity = auth.verify(self.secret, token, self.secret_origin)
                except auth.AuthError as exc:
                    await conn.close(p.CLOSE_UNAUTHORIZED, str(exc)[:120])
                    return
            await Session(self.sessions, conn, identity).run()
        except Exception:
            log.exception("session failed")  # one connection's bug never reaches the others
        finally:
            self.connections -= 1
            self.metrics.connections.dec()


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the leaderboard projection stopped", exc_info=task.exception())


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a dependency on Linux and macOS): its event loop
    and transports are C; a player costs the server about a fifth less CPU on it than
    on asyncio's default loop (benchmarks/ingest.py, 200 players). None: the default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def run(settings: Settings, on_ready: object = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    app = App(settings)
    await app.start()
    # What start-up made (modules, games, read models) lives as long as the process: out
    # of the collector's full passes, each of which otherwise held the event loop ~50 ms
    # every few seconds, every match at once (benchmarks/ingest.py, matches of 10).
    gc.collect()
    gc.freeze()
    app.lobby.headroom.measure_from_now()  # not load either
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    last_signal: dict[int, float] = {}

    def on_signal(sig: int) -> None:
        # A repeat of the same signal within SIGNAL_REPEAT_WINDOW_S is the same request:
        # GNU timeout, for one, signals the command and then its process group. Only a
        # later one (or the other signal) means "stop now".
        now = loop.time()
        if now - last_signal.get(sig, -SIGNAL_REPEAT_WINDOW_S) < SIGNAL_REPEAT_WINDOW_S:
            return
        last_signal[sig] = now
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if callable(on_ready):
        await on_ready(app)
    await stop.wait()
    log.info("signal received: shutting down")
    stop.clear()
    stopping = asyncio.ensure_future(app.stop())
    again = asyncio.ensure_future(stop.wait())
    await asyncio.wait(
        {stopping, again}, timeout=settings.shutdown_timeout, return_when="FIRST_COMPLETED"
    )
    again.cancel()
    if not stopping.done():
        # Stuck (a store that never answers, a peer that never closes) or told twice:
        # exit anyway. Nothing acknowledged is lost (acknowledged means durable) and the
        # next start marks the matches left running as interrupted.
        why = "a second signal" if stop.is_set() else f"{settings.shutdown_timeout:g} s"
        log.error("graceful shutdown unfinished after %s; exiting. Still waiting:", why)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                log.error("  %s", _where(task))
        # Not SystemExit: unwinding would wait for the very tasks (and threads) that are
        # stuck. Exiting here is a crash as far as the store is concerned, which it survives.
        logging.shutdown()
        os._exit(1)
    stopping.result()


def _where(task: asyncio.Task[Any]) -> str:
    """A task's name and the innermost line it waits at (for the shutdown report)."""
    frames = task.get_stack()
    at = f"{frames[-1].f_code.co_filename}:{frames[-1].f_lineno}" if frames else "?"
    return f"{task.get_name()} at {at}"
