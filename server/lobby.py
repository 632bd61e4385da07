"""The matches of one server process: create, list, look up, and stop them all."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any, Protocol

from replay import protocol
from replay.errors import ReplayError
from replay.events import SYSTEM_TAKEOVER, NewEvent
from replay.protocol import match_info
from replay.resume import resume_point
from replay.rules import GameRegistry, Rules
from replay.store.base import EventStore, MatchRecord
from server.config import Settings
from server.forking import ForkStart
from server.headroom import Headroom, Limits
from server.live_hub import LiveHub
from server.match import Match
from server.metrics import Metrics
from server.spectator_options import SpectatingOptions, split_options
from server.spectators import Spectators
from server.ticker import Ticker

__all__ = ["Lobby", "LobbyError", "MatchMovingError", "ServerFullError"]

log = logging.getLogger(__name__)

MATCH_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""The match id alphabet: safe in a URL path, a file name and a log line as it is
(docs/protocol.md). Ids are chosen at creation; others are refused there."""
MAX_LIVE_MATCHES = 1000
"""Matches ticking in one process. A 64-slot arena match holds ~10 KiB of state."""


class LobbyError(ReplayError, ValueError):
    """Invalid match settings or request (``code`` ``invalid_settings``)."""

    code = "invalid_settings"


class BadMatchIdError(LobbyError):
    """A match id outside :data:`MATCH_ID`."""

    code = "bad_match_id"


class ServerFullError(LobbyError):
    """The process is at its limit (server/headroom.py): it takes no new match."""

    code = protocol.E_SERVER_FULL


class MatchMovingError(ReplayError):
    """A cluster's match between nodes: its node is gone and its lease has not lapsed
    yet, or another node is rebuilding it (``match_moving``: retry in a moment)."""

    code = protocol.E_MATCH_MOVING


class Placement(Protocol):
    """Where matches run when this process is a cluster node (server/cluster.py)."""

    async def claim_new(self, match_id: str) -> int: ...

    async def locate(self, match_id: str) -> Match | str | None: ...

    async def owner(self, match_id: str) -> str:
        """The name of the node that holds the match's lease ("" when none)."""
        ...


class Lobby:
    def __init__(
        self, store: EventStore, metrics: Metrics, settings: Settings, games: GameRegistry
    ) -> None:
        self.store = store
        self.games = games
        self.metrics = metrics
        self.settings = settings
        self.live: dict[str, Match] = {}
        self.headroom = Headroom(
            Limits(
                max_players=settings.max_seated_players,
                max_cpu=settings.max_cpu,
                max_lateness_s=settings.max_tick_lateness_ms / 1000,
            )
        )
        self.ticker = Ticker(self.headroom)
        """One clock for every match of the process (server/ticker.py)."""
        self.spectators: Spectators | None = None
        """Set by the app: live spectator hubs are created with the matches."""
        self.cluster: Placement | None = None
        """Set by the app on a cluster node: leases for new matches, and where others run."""

    async def recover(self) -> list[str]:
        """After a restart: matches a previous process left created or running can no
        longer continue (their live state and seats are gone): mark them interrupted.
        Their events stay replayable."""
        stale = await self.store.list_matches(status=["created", "running"], limit=100_000)
        for record in stale:
            await self.store.update_match(
                record.match_id, status="interrupted", ended_at=time.time()
            )
        if stale:
            log.warning("marked %d unfinished matches as interrupted", len(stale))
        return [r.match_id for r in stale]

    async def create(
        self,
        game: str,
        settings: Mapping[str, Any] | None = None,
        *,
        start_players: int | None = None,
        match_id: str | None = None,
        seed: int | None = None,
        fork: ForkStart | None = None,
    ) -> Match:
        """A new match; with ``fork``, one that starts from a parent's state (server/forking.py)."""
        if len(self.live) >= MAX_LIVE_MATCHES:
            raise ServerFullError(f"this server already runs {MAX_LIVE_MATCHES} matches")
        full = self.refusal()
        if full:
            raise ServerFullError(f"this server is full: {full}")
        try:
            rules = self.games[game]
        except LookupError as exc:
            raise LobbyError(str(exc)) from None
        try:
            game_settings, spectating = split_options(settings or {}, self.settings.spectator_delay)
            normalized = rules.normalize_settings(game_settings)
        except (ValueError, TypeError) as exc:
            raise LobbyError(f"invalid settings: {exc}") from None
        if match_id is not None and (
            not isinstance(match_id, str) or not MATCH_ID.fullmatch(match_id)
        ):
            raise BadMatchIdError(
                f"match_id must be 1..64 characters of A-Z a-z 0-9 . _ - (got {match_id!r:.80})"
            )
        limits = rules.limits(normalized)
        need = start_players if start_players is not None else limits.min_players
        # Below the game's own minimum the rules would refuse every start: refused here.
        if not limits.min_players <= need <= limits.max_players:
            raise LobbyError(
                f"start_players must be in [{limits.min_players}, {limits.max_players}]"
                f" for {rules.name}"
            )
        record = MatchRecord(
            match_id=match_id or secrets.token_hex(6),
            game=rules.name,
            rules_version=rules.version,
            tick_rate=limits.tick_rate,
            settings=normalized,
            seed=seed if seed is not None else secrets.randbits(63),
            options=spectating.as_record(),
        )
        record = await self.store.create_match(record)  # MatchExistsError
        if fork is not None:
            record = await fork.record_origin(self.store, record)
        epoch = await self.cluster.claim_new(record.match_id) if self.cluster else None
        match = self._launch(
            record,
            rules,
            need,
            spectating,
            state=fork.state if fork is not None else None,
            epoch=epoch,
        )
        if fork is not None:
            fork.hold_seats(match)
        match.start()
        log.info("match %s created (%s, start at %d players)", record.match_id, game, need)
        return match

    def _launch(
        self,
        record: MatchRecord,
        rules: Rules[Any],
        need: int,
        spectating: SpectatingOptions,
        *,
        state: Any,
        epoch: int | None,
        hub: LiveHub | None = None,
    ) -> Match:
        s = self.settings
        match = Match(
            record,
            rules,
            self.store,
            self.metrics,
            start_players=need,
            seat_timeout=s.seat_timeout,
            grace_period=s.grace_period,
            send_buffer_bytes=s.send_buffer_bytes,
            ticker=self.ticker,
            admission=self.refusal,
            on_finished=self._finished,
            rewind_horizon_s=s.rewind_horizon_s,
            state=state,
            epoch=epoch,
        )
        match.node = s.node
        self.live[record.match_id] = match
        if self.spectators is not None:
            self.spectators.options[record.match_id] = spectating
            if hub is None:
                hub = self.spectators.make_hub(record, rules, match.state)
            match.hub = self.spectators.hubs[record.match_id] = hub
        return match

    async def adopt(
        self, match_id: str, epoch: int, *, from_node: str, to_node: str, skipped_s: float
    ) -> Match:
        """Carry on another node's match here, under lease ``epoch``: rebuilt at its last
        durable tick (replay/resume.py), its players' seats held for the grace period,
        and a ``takeover`` event first in the next tick. Raises ReplayError (unknown or
        damaged match)."""
        if self.spectators is None:
            raise LobbyError("no spectators: the lobby is not wired to an app")
        point = await resume_point(self.spectators.engine, match_id)
        if (running := self.live.get(match_id)) is not None:
            return running  # created here meanwhile (the lease it holds is this one)
        hub = await self.spectators.take_followed(match_id)  # its spectators stay
        if (running := self.live.get(match_id)) is not None:
            return running
        record = point.record
        rules = self.games[record.game]
        spectating = self.spectators.learn(record)
        limits = rules.limits(record.settings)
        match = self._launch(
            record, rules, limits.min_players, spectating, state=point.state, epoch=epoch, hub=hub
        )
        match.machine.resume(point.acked, point.stepping, point.seats)
        match.restore_seats(point.seats, point.acked)
        skipped = max(0, round(skipped_s * record.tick_rate))
        match.machine.note(
            NewEvent(
                SYSTEM_TAKEOVER,
                0,
                (from_node, to_node, epoch, skipped, int(time.time() * 1000)),
            )
        )
        match.start()
        return match

    def _finished(self, match: Match) -> None:
        self.live.pop(match.match_id, None)
        if match.hub is not None and self.spectators is not None:
            if match.moved:
                self.spectators.left(match.record, match.hub)
            else:
                self.spectators.retire(match.hub)

    def seated(self) -> int:
        """Players holding (or reserving) a seat in this process's matches."""
        return sum(len(m.seats) for m in self.live.values())

    def refusal(self) -> str:
        """Why this process takes no new player or match now ("" when it does)."""
        return self.headroom.full_reason(self.seated())

    def get_live(self, match_id: str) -> Match | None:
        return self.live.get(match_id)

    async def locate(self, match_id: str) -> Match | str | None:
        """The live match here, the websocket URL of the node it runs on (a cluster), or
        None when it runs nowhere. Raises UnknownMatchError and (a cluster)
        ``match_moving`` while its node is gone and nobody carries it yet."""
        if self.cluster is None:
            return self.live.get(match_id)
        return await self.cluster.locate(match_id)

    async def describe(self, match_id: str) -> dict[str, Any]:
        match = self.live.get(match_id)
        if match is not None:
            return match.info()
        info = _record_info(await self.store.get_match(match_id))  # UnknownMatchError
        if self.cluster is not None and info["status"] not in ("ended", "interrupted"):
            info["node"] = await self.cluster.owner(match_id)
        return info

    async def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        records = await self.store.list_matches(status=status, limit=limit)
        if self.spectators is not None:
            for r in records:  # callers filter the list by visibility, a stored option
                self.spectators.learn(r)
        return [
            self.live[r.match_id].info() if r.match_id in self.live else _record_info(r)
            for r in records
        ]

    async def stop_all(self) -> None:
        """Graceful shutdown: every match finishes its tick, flushes, and is marked interrupted."""
        await asyncio.gather(*(m.stop("interrupted") for m in list(self.live.values())))
        await self.ticker.close()


def _record_info(r: MatchRecord) -> dict[str, Any]:
    """A match that is not live here, as an admin sees it (with ``last_seq``)."""
    return match_info(r) | {"last_seq": r.version}
