"""The leaderboard projection: the store's global stream folded into boards.

Each step reads a chunk of events after the checkpoint (reading.py), folds it in
memory (:class:`~replay.leaderboards.state.LeaderboardState`) and has the read
model (readmodel.py) write the changed entries, the running matches' tallies,
the holds and the new checkpoint in ONE transaction. Invariant: the stored
checkpoint is exactly the position the stored boards reflect, so after a crash
the projection resumes from it with no event counted twice and none missed.

The loop is the store's subscription loop (``scan`` after the checkpoint for the
event types some board reads, then ``wait_for_commit``) taken a chunk at a time,
so one transaction covers a whole chunk instead of one event. The checkpoint
moves to the scanned position: batches without a relevant event (movement, aim,
shots: nearly all of them) are passed over undecoded.

Two things keep events off the boards for a while or for good:

* visibility (visibility.py): a match's batches that its spectators may not see
  yet are held back, in memory and in the read model's ``held`` table (a restart
  reads them again from the store), and folded once visible, in their order;
* damage: a batch the store cannot decode, or whose events no metric can fold,
  is passed over and reported (:attr:`LeaderboardProjection.damaged`,
  :meth:`LeaderboardProjection.degraded`): one damaged match never stops the
  boards of the others.

Queries read the in-memory boards; they never wait for the disk, and a rebuild
builds aside and swaps (:meth:`LeaderboardProjection.rebuild`). One process
folds into a read model at a time (filelock.py); others ask it for rebuilds
(rebuild_requests.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from replay.errors import ReplayError
from replay.events import SYSTEM_REWOUND
from replay.leaderboards.definitions import BoardDefinition, validate_definitions
from replay.leaderboards.errors import UnknownBoardError
from replay.leaderboards.filelock import WriterLock
from replay.leaderboards.metrics import GameMetrics, MatchTally
from replay.leaderboards.reading import Chunk, ChunkReader, last_position, rewinds_until, until
from replay.leaderboards.readmodel import ReadModel, boards_path_for
from replay.leaderboards.rebuild_requests import (
    Progress,
    RebuildRequests,
    rebuild_request_path,
    write_json_atomically,
)
from replay.leaderboards.state import DamagedBatch, LeaderboardState, batch_tick
from replay.leaderboards.visibility import NOTHING, Visibility
from replay.store.base import (
    READ_ONLY_STATUSES,
    EventBatch,
    EventStore,
    MatchRecord,
    wait_event,
)

__all__ = [
    "LeaderboardProjection",
    # Where the read model and its rebuild requests live (their modules define them).
    "boards_path_for",
    "rebuild_request_path",
    "write_json_atomically",
]

log = logging.getLogger(__name__)

RECHECK_S = 0.25
"""Longest a looked-up edge of a match that is not shown at once is used (seconds)."""
SHOWN = Visibility(0.0, True)
"""The visibility of a match whose results may all be shown."""
_REWOUND = frozenset({SYSTEM_REWOUND})


class LeaderboardProjection:
    """Boards kept current from ``store``, persisted in ``path``."""

    def __init__(
        self,
        store: EventStore,
        path: str,
        definitions: Iterable[BoardDefinition],
        metrics: Mapping[str, GameMetrics],
        *,
        read_limit: int = 2_000,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
    ) -> None:
        self.store = store
        self.path = path
        self.definitions = validate_definitions(definitions, metrics)
        self.read_limit = read_limit
        """Stored batches per chunk (and per transaction; a tick is usually one batch of
        a few events): bounds memory and commit latency."""
        self.clock = clock
        """Wall time, against which spectator delays pass (visibility.py)."""
        self.state = LeaderboardState(self.definitions, metrics)
        self.damaged: list[DamagedBatch] = []
        """Batches passed over because they could not be read or folded, oldest first
        (kept in the read model: they stay reported across restarts)."""
        self.read_only = read_only
        """Only read the read model (no lock: it works beside the server that writes it)
        and fold what it lacks in memory, never writing it."""
        self._model = ReadModel(path, read_only)
        self._writer = WriterLock(path)
        self._requests = RebuildRequests(path, self._rebuild_for_request, lambda: self.position)
        # Held while folding and writing, so a rebuild's swap sees no half-applied chunk.
        self._lock = asyncio.Lock()
        self._advanced = asyncio.Event()
        self._visibility: dict[str, Visibility] = {}
        """Per match with a tally: who may see it when (from its record, which never
        changes them)."""
        self._edges: dict[str, tuple[float, int]] = {}
        """Per match not shown at once: (monotonic time, edge) of its last lookup."""
        self._retire_checked = 0
        """The position at the previous :meth:`retire_finished`."""
        self._refold_due = False
        """A rewind abandoned (or revived) ticks the boards count: a full rebuild is due
        (:meth:`_refold`); waiters wait for it."""
        self._refolding = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        """Load the stored boards and checkpoint; rebuild boards whose definition changed.

        Raises ReadModelBusyError when another projection has the file open: one
        writer per read model (a read-only projection takes no lock)."""
        if not self.read_only:
            self._writer.acquire()
        try:
            stored = await asyncio.to_thread(self._model.open, self.definitions)
        except BaseException:
            await self._model.close()
            self._writer.release()
            raise
        self.state.position = stored.position
        self.state.load_entries(stored.entries)
        self.state.load_marks(stored.marked)
        self.state.load_tallies(stored.tallies)
        self.damaged = sorted(stored.damaged)
        await self._reload_holds(stored.held)
        if stored.refold:  # a rewind's rebuild was due when the last run stopped
            await self.rebuild()
        elif stored.stale:
            await self.rebuild(stored.stale)
        await self.retire_finished()  # matches interrupted while no projection ran

    async def close(self) -> None:
        await self._requests.close()
        async with self._lock:
            await self._model.close()
        self._writer.release()

    async def __aenter__(self) -> LeaderboardProjection:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- position and health -----------------------------------------------------------

    @property
    def position(self) -> int:
        """The global position the boards reflect (except held batches: visibility.py)."""
        return self.state.position

    @property
    def skipped_batches(self) -> int:
        """How many damaged batches were passed over (a counter for /metrics)."""
        return len(self.damaged)

    def degraded(self) -> str | None:
        """Why the boards are incomplete (for /healthz), or None when they are not."""
        if not self.damaged:
            return None
        n, last = len(self.damaged), self.damaged[-1]
        return (
            f"the leaderboards passed over {n} damaged batch{'es' if n > 1 else ''};"
            f" latest at position {last.position}: {last.error}"
        )

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until the boards reflect ``position`` (read-your-writes); False on timeout.

        Held batches up to ``position`` are looked at once more first: a match that
        just ended (its record says so, not an event the loop would wake for) is then
        on the boards as soon as its spectators may see it. What is still not visible
        is not waited for. Waiters that come together share one look (one record
        lookup per match held back)."""
        asked = time.monotonic()
        deadline = asked + timeout
        while self.state.position < position or self._refold_due:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await wait_event(self._advanced, left)
        if any(bs[0].first_position <= position for bs in self.state.held.values()):
            await self.release_visible(asked)
        return True

    async def release_visible(self, since: float | None = None) -> None:
        """Fold the held batches that became visible (the loop does it every step),
        with their matches' records looked up at or after ``since`` (monotonic;
        None: now)."""
        since = time.monotonic() if since is None else since
        async with self._lock:
            start = self.state.position
            await self._fold(start, Chunk([], start, []), recheck_since=since)
        await self._refold()

    def _signal(self) -> None:
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    # -- folding -------------------------------------------------------------------

    def _reader(self, codes: frozenset[int], read_ahead: bool = True) -> ChunkReader:
        return ChunkReader(self.store, self.read_limit, codes, read_ahead)

    async def step(self) -> int:
        """Fold and persist the next chunk (and whatever held batches became visible);
        returns how many events it moved past (0: caught up)."""
        async with self._lock:
            start = self.state.position
            async with self._reader(self.state.codes, read_ahead=False) as reader:
                chunk = await reader.read(start)
            await self._fold(start, chunk)
        await self._refold()
        return self.state.position - start

    async def _fold(self, start: int, chunk: Chunk, recheck_since: float | None = None) -> None:
        """Under the lock: fold a chunk read from ``start`` and persist it. Waiters
        are woken as soon as the boards in memory (what queries read) reflect it, not
        after the write: under a busy event loop every await costs a loop turn."""
        edges = await self._prepare(chunk.batches, recheck_since)
        released = self._release(edges)
        if chunk.through == start and not released:
            return
        changes = self.state.apply(
            chunk.batches,
            chunk.through,
            hold=lambda b: b.match_id in edges and batch_tick(b) > edges[b.match_id],
            released=released,
        )
        changes.damaged += chunk.damaged
        self._report(changes.damaged)
        self._forget(changes.ended)
        self._refold_due |= changes.refold
        self._signal()
        await self._model.persist(self._model.write, changes)

    async def _refold(self) -> None:
        """When a rewind abandoned ticks already counted (or revived passed-over ones):
        rebuild every board from the log, which passes over every abandoned tick.

        Exact for every operator and metric (``best`` and ``set`` cannot be undone,
        and a metric may have looked up an entry an abandoned tick changed), and paid
        only then: a rewind folded before its abandoned ticks (a lagging projection, a
        match held back) passes over them at no cost. The due rebuild is kept in the
        read model with the checkpoint, so a restart does it."""
        if not self._refold_due:
            return
        async with self._refolding:  # waiters folding held batches may come here together
            if self._refold_due:
                log.info("leaderboards: a rewind abandoned counted ticks; rebuilding the boards")
                await self.rebuild()

    async def _prepare(
        self, batches: Sequence[EventBatch], recheck_since: float | None
    ) -> dict[str, int]:
        """Register the matches first seen in ``batches``, and find how far each match
        that is not shown at once may be shown now (match -> edge tick).

        A record is looked up for each new match, and for each match not shown at once
        at most every ``RECHECK_S`` (a live server steps every 25 ms; an edge a little old
        only holds a little longer) and again if last looked up before ``recheck_since``
        (a monotonic time). All of a step's lookups go in one store call: a private match
        is held until it ends, so a server of many small matches has all of them to
        look at four times a second."""
        edges: dict[str, int] = {}
        now, now_mono = self.clock(), time.monotonic()
        lookups: dict[str, bool] = {}  # match -> new
        for match_id in {b.match_id for b in batches} | set(self.state.held):
            vis = self._visibility.get(match_id)
            new = self.state.needs_match(match_id)
            if not new and (match_id in self.state.ignored or (vis and vis.immediate)):
                continue
            cached = self._edges.get(match_id)
            if (
                cached is not None
                and now_mono - cached[0] < RECHECK_S
                and (recheck_since is None or cached[0] >= recheck_since)
            ):
                edges[match_id] = cached[1]
                continue
            lookups[match_id] = new
        if not lookups:
            return edges
        try:
            records = await self.store.get_matches(lookups)
        except (ReplayError, ValueError, sqlite3.DatabaseError) as exc:
            log.warning("leaderboards: match records unreadable: %s", exc)
            records = {}
        for match_id, new in lookups.items():
            record = records.get(match_id)
            if record is None:  # unknown, damaged (the store reports it) or unreadable
                if new:  # no record to read a game from: its events feed no board
                    self.state.add_match(match_id, None)
                else:
                    edges[match_id] = NOTHING  # not known to be visible: keep holding
                continue
            if new:
                self.state.add_match(match_id, _tally_of(record))
            vis = Visibility.of(record)
            if vis.immediate:
                self._visibility[match_id] = vis
                continue
            edges[match_id] = edge = vis.edge(record, now)
            if record.status in READ_ONLY_STATUSES and edge >= record.last_tick:
                # Over and all of it visible: what it holds is released now, and
                # nothing of it is held any more.
                self._visibility[match_id] = SHOWN
                self._edges.pop(match_id, None)
            else:
                self._visibility[match_id] = vis
                self._edges[match_id] = (now_mono, edge)
        return edges

    def _forget(self, match_ids: Iterable[str]) -> None:
        for m in match_ids:
            self._visibility.pop(m, None)
            self._edges.pop(m, None)

    def _release(self, edges: Mapping[str, int]) -> list[EventBatch]:
        released = [
            b
            for m in list(self.state.held)
            if m in edges  # else its record is unreadable now: it stays held
            for b in self.state.release(m, edges[m])
        ]
        released.sort(key=lambda b: b.first_position)
        return released

    def _report(self, damaged: list[DamagedBatch]) -> None:
        known = {d.position for d in self.damaged}
        for d in damaged:
            if d.position not in known:
                log.error("leaderboards: passed over a damaged batch: %s", d.error)
                self.damaged.append(d)

    async def _reload_holds(self, held: Mapping[str, int]) -> None:
        """Read the held batches of a previous run back from the store (the read model
        keeps where each match's held batches start, not the batches)."""
        if not held:
            return
        start = min(held.values()) - 1
        found: list[EventBatch] = []
        async with self._reader(self.state.codes) as reader:
            while start < self.state.position:
                chunk = await reader.read(start, ahead=self.state.position)
                if chunk.through == start:
                    break
                found += (
                    b
                    for b in until(chunk.batches, self.state.position)
                    if b.match_id in held and b.first_position >= held[b.match_id]
                )
                start = chunk.through
        await _add_matches(self.store, self.state, found)
        for b in found:
            if b.match_id in self.state.tallies:
                self.state.held.setdefault(b.match_id, []).append(b)

    async def catch_up(self, progress: Progress | None = None) -> int:
        """Fold everything stored now (and the held batches that became visible);
        returns how many events. Reads ahead: the next chunk is read from the store
        (in its thread) while this one folds."""
        total = 0
        async with self._reader(self.state.codes) as reader:
            while True:
                start = self.state.position
                chunk = await reader.read(start)
                if chunk.through == start:
                    if self.state.held:
                        await self.release_visible()
                    return total
                async with self._lock:
                    if self.state.position != start:
                        continue  # a concurrent step moved on: this chunk is stale
                    await self._fold(start, chunk)
                await self._refold()
                total += chunk.through - start
                if progress is not None:
                    progress(chunk.through - start)

    async def retire_finished(self) -> int:
        """Drop the tallies of matches that are over without having ended in the stream.

        A match the server marks ``interrupted`` (shutdown, a failed append) never
        appends its end event, so its tally would stay forever. The store's record
        says it is read-only: once every event of it is folded (none held), nothing
        of it can come any more, and its tally is deleted (boards and checkpoint
        unchanged). Called at :meth:`open`, after a full rebuild and every
        ``retire_interval`` of :meth:`run`; one record lookup per match that had no
        event folded since the previous call (a live match keeps producing them).
        Returns how many matches were dropped."""
        since, self._retire_checked = self._retire_checked, self.state.position
        seen = self.state.last_seen
        over: list[str] = []
        for match_id in [*self.state.tallies, *self.state.ignored]:
            if seen.get(match_id, 0) > since or match_id in self.state.held:
                continue  # events came since the last check, or wait to be shown
            try:
                record = await self.store.get_match(match_id)
                if record.status not in READ_ONLY_STATUSES:
                    continue
                last = await last_position(self.store, match_id, record.version)
            except (ReplayError, ValueError, sqlite3.DatabaseError):
                continue  # a store that forgets matches, a damaged one: nothing to decide
            if last <= self.state.position:
                over.append(match_id)
        if not over:
            return 0
        async with self._lock:
            changes = self.state.retire(over)
            self._forget(over)
            if changes.ended:
                await self._model.persist(self._model.write, changes)
        return len(over)

    async def run(
        self,
        poll_interval: float = 1.0,
        min_interval: float = 0.025,
        retire_interval: float = 30.0,
    ) -> None:
        """Follow the store forever (cancel to stop; a cancelled step writes nothing).

        ``min_interval`` paces the steps while events keep coming: a live server
        commits every tick of every match, and one read-model transaction per commit
        would cost the server a third of its CPU. Waiting 25 ms gathers the commits
        of that time into one step, at the price of at most 25 ms of extra lag.
        While nothing comes, held batches are looked at every ``poll_interval``.

        Also serves rebuild requests from other processes (``matchreplay leaderboards
        rebuild`` while a server runs): one ``stat`` per chunk or poll, and every
        ``retire_interval`` seconds drops the tallies of interrupted matches
        (:meth:`retire_finished`)."""
        loop = asyncio.get_running_loop()
        next_retire = loop.time() + retire_interval
        while True:
            self._requests.check()
            started = loop.time()
            if started >= next_retire:
                await self.retire_finished()
                next_retire = started + retire_interval
            if await self.step():
                await asyncio.sleep(started + min_interval - loop.time())
            else:
                await self.store.wait_for_commit(self.state.position, poll_interval)

    # -- rebuild -------------------------------------------------------------------

    async def _rebuild_for_request(self, boards: list[str] | None, progress: Progress) -> int:
        return await self.rebuild(boards, progress=progress)

    async def rebuild(
        self, board_ids: Sequence[str] | None = None, progress: Progress | None = None
    ) -> int:
        """Rebuild boards (default: all, with the match tallies) from position 0.

        Built aside in a fresh state while queries keep reading the current boards;
        the aside copy catches up to the live position, holding back what the live
        boards hold back; then, under the lock (no chunk is folded meanwhile), what
        the live projection released since is folded into it, the boards are swapped
        in memory and their rows replaced in one transaction. Returns the number of
        events read.
        """
        ids = list(board_ids) if board_ids else list(self.state.definitions)
        for b in ids:
            if b not in self.state.definitions:
                raise UnknownBoardError(b, sorted(self.state.definitions))
        full = set(ids) == set(self.state.definitions)
        read = 0
        known: dict[str, list[tuple[int, int]]] | None = None
        fresh = True
        while True:
            target = self.state.position
            if fresh:
                aside = LeaderboardState(
                    (self.state.definitions[b] for b in ids), self.state.metrics, known
                )
                fresh = False
            async with self._reader(aside.codes) as reader:
                while aside.position < target and not fresh:
                    start = aside.position
                    chunk = await reader.read(start, ahead=target)
                    if chunk.through == start:
                        break
                    batches = until(chunk.batches, target)
                    await _add_matches(self.store, aside, batches)
                    # A rewind abandoned ticks counted here already (or revived some
                    # passed over): read every rewind up to target, and start again
                    # knowing them, so no abandoned tick is ever counted. Without such
                    # a rewind (nearly always) the log is read once.
                    fresh = aside.apply(
                        batches, min(chunk.through, target), hold=self.state.holds
                    ).refold
                    n = aside.position - start
                    read += n
                    if progress is not None:
                        progress(n)
            if fresh:
                known = await rewinds_until(self._reader(_REWOUND), target)
                continue
            if fresh:
                continue
            async with self._lock:
                if aside.position < self.state.position:
                    continue  # the live projection moved on meanwhile: catch up again
                aside.position = self.state.position
                aside.apply([], released=_released_since(aside, self.state))
                self.state.note_change()
                for b in ids:
                    self.state.boards[b] = aside.boards[b]
                    self.state.marked[b] = aside.marked[b]
                if full:
                    self.state.tallies = aside.tallies
                    self._refold_due = False
                    self._signal()
                await self._model.persist(
                    self._model.swap,
                    [self.state.definitions[b] for b in ids],
                    aside.rows(ids),
                    {m: t.encode() for m, t in aside.tallies.items()} if full else None,
                    None,
                    aside.mark_rows(ids),
                )
            if full:
                await self.retire_finished()  # the rebuilt tallies of interrupted matches
            return read


def _released_since(aside: LeaderboardState, live: LeaderboardState) -> list[EventBatch]:
    """The batches ``aside`` holds that ``live`` no longer does (released meanwhile),
    taken out of ``aside``: after that both hold the same batches."""
    out = []
    for match_id, batches in list(aside.held.items()):
        keep = [b for b in batches if live.holds(b)]
        out += batches[: len(batches) - len(keep)]
        if keep:
            aside.held[match_id] = keep
        else:
            del aside.held[match_id]
    out.sort(key=lambda b: b.first_position)
    return out


async def _add_matches(store: EventStore, state: LeaderboardState, batches: list[EventBatch]):
    """Register the matches first seen in ``batches`` (one record lookup per match)."""
    for match_id in {b.match_id for b in batches if state.needs_match(b.match_id)}:
        try:
            r = await store.get_match(match_id)
        except (ReplayError, ValueError):
            state.add_match(match_id, None)
            continue
        state.add_match(match_id, _tally_of(r))


def _tally_of(record: MatchRecord) -> MatchTally:
    """A new match's tally: its clock, and whether its entries are marked private."""
    return MatchTally(
        record.game,
        record.created_at,
        record.tick_rate,
        private=not Visibility.of(record).public,
    )
