"""This node's part in a cluster of nodes sharing one PostgreSQL store.

Membership: every node writes a heartbeat row (its URL, status and load) every
third of the lease length; ``GET /api/nodes`` lists them. A node whose heartbeat is
older than the lease is not live.

Ownership: a match runs on one node at a time, the holder of its lease (owner,
epoch, expiry; ``replay.store`` keeps it). The owner renews all its leases with its
heartbeat, in one statement, and passes its epoch with every append: an append or
status change under an older epoch is refused by the store (``lease_lost``), so a
node that was paused (SIGSTOP) and wakes after a takeover can never write again; it
drops its copy of the match as soon as an append or a renewal tells it.

Failover: a lease that lapses (its owner died without a word) is taken by a live
node with room, the least loaded first: it bumps the epoch, rebuilds the match at
its last durable tick (replay/resume.py), writes a ``takeover`` event (old and new
node, epoch, ticks skipped) and carries on; the players reconnect through any node
and are sent to it. A node that is stopped (SIGTERM) hands its matches to its peers
instead: each lease goes straight to a peer (epoch + 1) and the players are sent
there with one redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from replay.errors import ReplayError, UnknownMatchError
from replay.store.base import READ_ONLY_STATUSES, EventStore
from replay.store.records import Lease, NodeRow
from server.lobby import Lobby, MatchMovingError, ServerFullError

if TYPE_CHECKING:
    from server.match import Match

__all__ = ["Cluster"]

log = logging.getLogger(__name__)

FORGET_NODES_AFTER_S = 3600.0
"""A node not heard from for this long leaves ``GET /api/nodes`` (its row is deleted)."""
TAKE_PER_SWEEP = 8
"""Lapsed matches one node takes over per heartbeat (the rest wait for the next one, or
for a less loaded node)."""


class Cluster:
    def __init__(
        self,
        store: EventStore,
        lobby: Lobby,
        name: str,
        ttl: float,
        load: Callable[[], dict[str, Any]],
    ) -> None:
        self.store = store
        self.lobby = lobby
        self.name = name
        self.instance = f"{name}/{secrets.token_hex(4)}"
        """This process's identity in leases: a restarted node is a new instance, so it
        never renews the leases of the process it replaces."""
        self.url = ""
        """This node's public websocket URL (set once it listens)."""
        self.ttl = ttl
        self.status = "up"
        self._load = load
        self._nodes: list[NodeRow] = []
        self._fetched = 0.0
        """When ``_nodes`` was read (monotonic)."""
        self._placed: list[tuple[str, float]] = []
        """(node, when) of the matches this node placed elsewhere lately (monotonic)."""
        self._task: asyncio.Task[None] | None = None
        self._adopting: dict[str, asyncio.Task[Match | None]] = {}
        self._wake = asyncio.Event()

    # -- membership ------------------------------------------------------------------

    async def start(self, url: str) -> None:
        self.url = url
        await self.store.forget_nodes(FORGET_NODES_AFTER_S)
        await self._beat()
        self._task = asyncio.create_task(self._run(), name="cluster-heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.ttl / 3):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._beat()
            except ReplayError as exc:  # the store is down: the leases lapse on their own
                log.warning("cluster heartbeat failed: %s", exc)
            except Exception:
                log.exception("cluster heartbeat failed")

    async def _beat(self) -> None:
        await self.store.heartbeat(self.instance, self.name, self.url, self.status, self._load())
        asked = time.monotonic()
        held = await self.store.renew_leases(self.instance, self.ttl)
        self._reconcile(held, asked)
        await self._refresh_nodes()
        horizon = self._fetched - 2 * self.ttl  # every live node has beaten since
        self._placed = [(node, at) for node, at in self._placed if at > horizon]
        if self.status == "up":
            await self._sweep()

    def nodes(self) -> list[NodeRow]:
        """Every node heard from lately (the last heartbeat's view)."""
        return list(self._nodes)

    def live_nodes(self) -> list[NodeRow]:
        return [n for n in self._nodes if n.status == "up" and self._age(n) < self.ttl]

    def _row(self, instance: str) -> NodeRow | None:
        for n in self._nodes:
            if n.node == instance:
                return n
        return None

    def place(self, name: str | None = None) -> str | None:
        """The websocket URL of the node a new match goes to: ``name`` if given and live,
        else the live node with room holding the fewest players, then the fewest matches
        (this node on a tie). None: this node.
        Raises LookupError (no such live node) and ServerFullError (every node is full).

        Loads come with heartbeats, a third of a lease apart: matches placed since a
        node's last heartbeat count on top of its figures, so a burst of creations
        spreads instead of piling onto whichever node looked emptiest."""
        live = self.live_nodes()
        if name is not None:
            for n in live:
                if n.name == name:
                    return None if n.node == self.instance else n.url
            raise LookupError(f"no live node named {name!r}")
        best: NodeRow | None = None
        least: tuple[int, int] | None = None
        if not self.lobby.refusal():
            least = (self.lobby.seated(), len(self.lobby.live))
        for n in live:
            if n.node == self.instance or n.load.get("full"):
                continue
            load = (self._seated(n), int(n.load.get("matches", 0)) + self._unseen(n))
            if least is None or load < least:
                best, least = n, load
        if least is None:
            raise ServerFullError("every node of the cluster is full")
        if best is None:
            return None
        self._placed.append((best.node, time.monotonic()))
        return best.url

    def _unseen(self, n: NodeRow) -> int:
        """Matches placed on ``n`` after its last heartbeat: not in its load yet."""
        beat = self._fetched - n.age
        return sum(1 for node, at in self._placed if node == n.node and at > beat)

    @staticmethod
    def _seated(n: NodeRow) -> int:
        return int(n.load.get("players", 0))

    # -- ownership ---------------------------------------------------------------------

    async def claim_new(self, match_id: str) -> int:
        """The first lease of a match this node just created: its epoch."""
        lease = await self.store.acquire_lease(match_id, self.instance, self.ttl, epoch=0)
        if lease is None:  # nobody else knows the id yet: cannot happen but by a bug
            raise ReplayError(f"match {match_id!r}: its first lease was taken")
        return lease.epoch

    async def owner(self, match_id: str) -> str:
        lease = await self.store.lease(match_id)
        if lease is None or not lease.owner or lease.expires_in <= 0:
            return ""
        return lease.owner.rpartition("/")[0]

    async def locate(self, match_id: str) -> Match | str | None:
        """Where ``match_id`` runs: the live Match (taken over here if its lease is this
        node's or lapsed and this node has room), the owner's websocket URL, or None when
        it runs nowhere (over, or a single server's). Raises UnknownMatchError,
        MatchMovingError."""
        match = self.lobby.get_live(match_id)
        if match is not None:
            return match
        adopting = self._adopting.get(match_id)
        if adopting is not None:
            return await asyncio.shield(adopting) or await self._elsewhere(match_id)
        lease = await self.store.lease(match_id)
        if lease is None:
            raise UnknownMatchError(match_id)
        return await self._route(lease)

    async def _route(self, lease: Lease) -> Match | str | None:
        if lease.owner == self.instance:  # handed to this node, not yet rebuilt
            return await asyncio.shield(self._adopt(lease, None))
        if not lease.owner:
            return None
        if lease.expires_in > 0:
            return await self._owner_url(lease)
        record = await self.store.get_match(lease.match_id)
        if record.status in READ_ONLY_STATUSES:
            return None
        if self.lobby.refusal() or self.status != "up":
            raise _moving(lease.match_id)
        claimed = await self.store.acquire_lease(lease.match_id, self.instance, self.ttl)
        if claimed is None:  # another node was faster
            return await self._elsewhere(lease.match_id)
        return await asyncio.shield(self._adopt(claimed, lease))

    async def _elsewhere(self, match_id: str) -> Match | str | None:
        lease = await self.store.lease(match_id)
        if lease is None:
            raise UnknownMatchError(match_id)
        if lease.owner == self.instance:
            match = self.lobby.get_live(match_id)
            if match is not None:
                return match
        if lease.owner and lease.expires_in > 0 and lease.owner != self.instance:
            return await self._owner_url(lease)
        raise _moving(match_id)

    async def _owner_url(self, lease: Lease) -> str:
        """Where the holder of a live lease runs. Raises MatchMovingError when that node is
        not up: dead (its lease still runs), or an earlier process of this very node (a
        restart keeps the URL): a redirect there would come straight back here."""
        row = self._row(lease.owner)
        if row is None or self._age(row) >= self.ttl / 2:  # unknown yet, or maybe dead
            await self._refresh_nodes()
            row = self._row(lease.owner)
        # Silent for half a lease (it beats every third): likely dead. Sending players to
        # a dead node's URL only bounces them back; "try again" lets the lease lapse.
        if (
            row is None
            or row.status != "up"
            or row.url == self.url
            or self._age(row) >= self.ttl / 2
        ):
            raise _moving(lease.match_id)
        return row.url

    async def _refresh_nodes(self) -> None:
        self._fetched, self._nodes = time.monotonic(), await self.store.nodes()

    def _age(self, row: NodeRow) -> float:
        """Seconds since ``row``'s node was last heard from, now (the row is cached)."""
        return row.age + (time.monotonic() - self._fetched)

    def _adopt(self, lease: Lease, previous: Lease | None) -> asyncio.Task[Match | None]:
        """The rebuild of ``lease``'s match (one at a time per match); awaiters shield it."""
        task = self._adopting.get(lease.match_id)
        if task is None:
            task = asyncio.ensure_future(self._rebuild(lease, previous))
            self._adopting[lease.match_id] = task
            task.add_done_callback(lambda _: self._adopting.pop(lease.match_id, None))
        return task

    async def _rebuild(self, lease: Lease, previous: Lease | None) -> Match | None:
        from_node = previous.owner if previous is not None else ""
        skipped_s = (self.ttl - previous.expires_in) if previous is not None else 0.0
        try:
            match = await self.lobby.adopt(
                lease.match_id,
                lease.epoch,
                from_node=from_node,
                to_node=self.instance,
                skipped_s=skipped_s,
            )
        except ReplayError as exc:
            # A damaged match stays where it is (contained); the lease lapses again and
            # the sweep leaves it to the operator (store verify names it).
            log.error("match %s: cannot take it over: %s", lease.match_id, exc)
            await self.store.release_lease(lease.match_id, self.instance, lease.epoch)
            return None
        log.info(
            "match %s taken over (epoch %d, from %s)",
            lease.match_id,
            lease.epoch,
            from_node or "a hand-over",
        )
        return match

    def _reconcile(self, held: dict[str, int], asked: float) -> None:
        """After a renewal (sent at ``asked``): drop matches this node no longer holds
        (another took them over while this one was paused), rebuild the ones handed to
        it. A match leased after ``asked`` (created or taken over meanwhile) is not in
        the answer yet: left alone."""
        for match_id, match in list(self.lobby.live.items()):
            if match.epoch is None or match.leased_at > asked:
                continue
            if held.get(match_id) != match.epoch:
                match.lost()
        for match_id, epoch in held.items():
            match = self.lobby.get_live(match_id)
            if match is None and match_id not in self._adopting:
                lease = Lease(match_id, self.instance, epoch, self.ttl)
                self._adopt(lease, None)

    async def _sweep(self) -> None:
        """Take over lapsed matches while this node has room. The least loaded live node
        goes first; the others join in once a lease has been lapsed a whole lease
        length (that node may be dying too)."""
        if self.lobby.refusal():
            return
        live = self.live_nodes()
        first = min(live, key=lambda n: (self._seated(n), n.node), default=None)
        leader = first is None or first.node == self.instance
        taken = 0
        for lease in await self.store.lapsed_leases(limit=TAKE_PER_SWEEP * 4):
            if taken >= TAKE_PER_SWEEP or self.lobby.refusal():
                break
            if lease.match_id in self._adopting or self.lobby.get_live(lease.match_id):
                continue
            if not leader and lease.expires_in > -self.ttl:
                continue
            claimed = await self.store.acquire_lease(lease.match_id, self.instance, self.ttl)
            if claimed is not None:
                taken += 1
                self._adopt(claimed, lease)

    # -- leaving -------------------------------------------------------------------------

    async def hand_over_all(self) -> bool:
        """SIGTERM with live peers: every match goes to a peer (least loaded first), its
        players with one redirect. False when no peer is live (then the matches are
        stopped as on a single server)."""
        self.status = "draining"
        await self.store.heartbeat(self.instance, self.name, self.url, self.status, self._load())
        await self._refresh_nodes()
        peers = [n for n in self.live_nodes() if n.node != self.instance]
        if not peers:
            return False
        loads = {n.node: self._seated(n) for n in peers}
        by_node = {n.node: n for n in peers}

        async def one(match: Match) -> None:
            target = by_node[min(loads, key=lambda k: (loads[k], k))]
            loads[target.node] += len(match.seats)
            await match.hand_over(lambda: self._release_to(match, target.node), target.url)

        await asyncio.gather(
            *(one(m) for m in list(self.lobby.live.values()) if m.epoch is not None)
        )
        return True

    async def _release_to(self, match: Match, node: str) -> bool:
        assert match.epoch is not None
        lease = await self.store.release_lease(
            match.match_id, self.instance, match.epoch, to=node, ttl=self.ttl
        )
        return lease is not None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._adopting.values()):
            task.cancel()
        with contextlib.suppress(ReplayError):
            await self.store.heartbeat(self.instance, self.name, self.url, "stopped", self._load())

    def nodes_json(self) -> list[dict[str, Any]]:
        now = time.time()
        return [
            {
                "name": n.name,
                "node": n.node,
                "url": n.url,
                "status": n.status if self._age(n) < self.ttl or n.status == "stopped" else "gone",
                "age": round(self._age(n), 3),
                "started_at": n.started_at,
                "uptime": round(now - n.started_at, 1),
                "load": n.load,
                "self": n.node == self.instance,
            }
            for n in self._nodes
        ]


def _moving(match_id: str) -> MatchMovingError:
    return MatchMovingError(f"match {match_id!r} is moving between nodes")
