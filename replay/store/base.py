"""The event store: the one source of truth, the same over every storage backend.

The server, the replay engine and the projections see only this module. The
store checks and encodes appends, gathers them into group commits, upcasts what
it reads and serves subscriptions; a :class:`~replay.store.recorder.Recorder`
(memory, SQLite, PostgreSQL) stores and reads the rows. Every backend passes
``tests/store_contract.py``.

Storage model. A match is a stream of events numbered by ``seq`` 1, 2, 3, ...
An append stores one *batch*: the events of one match written in one call
(typically one simulation tick). Every event also gets a global
``position``; positions are strictly increasing in commit order across all
matches and all writer processes, so a subscriber that has seen position ``p``
has seen everything before it (no event ever appears later at a lower position).

Idempotency. Event ids are 128-bit integers allocated in consecutive blocks
(:class:`EventIds`): a batch is identified by its first id, and event ``i``
of the batch has id ``first_id + i``. Retrying an append whose ack was lost,
with the same ``first_id`` and ``expected_version``, returns the original
result and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from replay.codec import decode_batch, encode_columns, encoded_sizes
from replay.errors import (
    ConcurrencyError,
    CorruptEventError,
    CorruptMatchError,
    EventEncodeError,
    EventTooLargeError,
    InvalidEventError,
    LeaseLostError,
    MatchEndedError,
    StoreClosedError,
    StoreUnavailableError,
    UnknownMatchError,
)
from replay.events import EventCatalog, NewEvent, RecordedEvent
from replay.store.recorder import (
    MATCH_IDS_PER_QUERY,
    MAX_INT,
    UNFENCED,
    BatchRow,
    Conflict,
    MatchRow,
    NewBatch,
    Recorder,
    batch_checksum,
    scan_mask,
    type_mask,
)
from replay.store.records import (
    DEFAULT_MAX_EVENT_BYTES,
    NODE_STATUSES,
    READ_ONLY_STATUSES,
    AppendResult,
    EventBatch,
    EventIds,
    Keyframe,
    Lease,
    MatchRecord,
    MatchStatus,
    NodeRow,
)
from replay.store.upcast import upcast_events

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "READ_ONLY_STATUSES",
    "AppendResult",
    "EventBatch",
    "EventIds",
    "EventStore",
    "Keyframe",
    "Lease",
    "MatchRecord",
    "MatchStatus",
    "NodeRow",
    "wait_event",
]

log = logging.getLogger(__name__)

_MAX_ID = 2**128 - 1
_STATUSES = frozenset({"created", "running", "ended", "interrupted"})
_INT = frozenset({int})
_SPLIT_ACKS = 16
"""Groups of at least this many appends landing in an idle database have their acks
woken in two halves (EventStore._write_group)."""


@dataclass(eq=False, slots=True)
class _Append:
    match_id: str
    mkey: int
    count: int
    base_tick: int
    last_tick: int
    expected_version: int
    first_id: int
    blob: bytes
    types: int
    """type_mask of the events' types."""
    epoch: int
    future: asyncio.Future[AppendResult] = field(repr=False)
    named: bool = False
    """The caller named the batch (``first_id``): a refusal may be a committed retry."""


class EventStore:
    """Async, append-only storage of match events, metadata and keyframes.

    Concurrency contract: ``append`` calls may come from many tasks at once; one
    writer task gathers them (group commit) so that durability is paid per group of
    appends, not per event. An awaited ``append`` returns only after its events are
    durable at the recorder's durability level.

    ``catalogs`` (game name -> event catalog) makes stored events upcast on read; a
    game not in it has its events returned with their stored versions.
    ``max_event_bytes`` bounds one encoded event; a batch is held in memory until
    committed, so pending memory is bounded by the callers' batches in flight.
    """

    def __init__(
        self,
        recorder: Recorder,
        *,
        catalogs: Mapping[str, EventCatalog] | None = None,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.recorder = recorder
        self.catalogs: Mapping[str, EventCatalog] = catalogs or {}
        self.max_event_bytes = max_event_bytes
        self._ids = EventIds()
        self._open = False
        self._closing = False
        self._queue: list[_Append] = []
        self._wake = asyncio.Event()
        self._lookers: list[asyncio.Future[None]] = []
        """Groups waiting for the writer's next look at the queue (_write_group)."""
        self._writer_task: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._lookups: set[asyncio.Task[None]] = set()
        """Tasks reading what an append needs (its match's key, a retried batch)."""
        # Match ids and games never change once created: cached both ways.
        self._mkeys: dict[str, int] = {}
        self._by_mkey: dict[int, tuple[str, EventCatalog | None]] = {}
        self.commits = 0
        """Group commits so far (statistics: appends / commits is the grouping factor)."""
        self.unavailable: StoreUnavailableError | None = None
        """Why the last group commit failed when the database could not be reached
        (None once a group commits again): what a health check reports."""
        self.damaged: dict[str, str] = {}
        """Matches whose stored row could not be decoded (match id -> reason), as met by
        reads so far: what a health check reports as degraded."""
        self.damaged_skipped = 0
        """Times a damaged match row was left out of a listing or refused (a counter)."""

    @property
    def url(self) -> str:
        return self.recorder.url

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self.recorder.open()
        except BaseException:
            # A refused or unreadable store: release what was opened, so the process
            # can report the error and exit instead of hanging on a live connection.
            await self.recorder.close()
            raise
        self._open = True
        self._writer_task = asyncio.create_task(self._run_writer(), name="event-store-writer")

    async def close(self) -> None:
        """Flush pending appends durably, then release resources."""
        if self._closing:
            return
        self._closing = True
        if self._in_flight:
            self._idle.clear()
            await self._idle.wait()
        self._wake.set()
        if self._writer_task is not None:
            await self._writer_task
        if self._open:
            self._open = False
            await self.recorder.close()

    async def check_available(self, timeout: float = 2.0) -> StoreUnavailableError | None:
        """Why the database cannot be reached, or None: a health check's question. The
        database is asked only while the last commit failed on it, and a good answer
        clears :attr:`unavailable` (a store back after an outage says so without
        waiting for the next append)."""
        if self.unavailable is None:
            return None
        try:
            await asyncio.wait_for(self._recorder().head(), timeout)
        except Exception:  # still away (StoreUnavailableError, a timeout, a refused connection)
            return self.unavailable
        self.unavailable = None
        return None

    async def __aenter__(self) -> EventStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- matches -----------------------------------------------------------------

    async def create_match(self, record: MatchRecord) -> MatchRecord:
        """Store a new match. Raises MatchExistsError."""
        if record.status not in _STATUSES:
            raise ValueError(f"unknown match status {record.status!r}")
        row = MatchRow(
            0,
            record.match_id,
            record.game,
            record.rules_version,
            record.tick_rate,
            json.dumps(list(record.players)),
            json.dumps(record.settings),
            record.seed,
            record.created_at,
            record.ended_at,
            record.status,
            json.dumps(record.options),
        )
        mkey = await self._recorder().insert_match(row)
        # Its key never changes: the match's first append need not read it back.
        self._remember(row._replace(mkey=mkey))
        return record.with_changes(version=0, last_tick=-1, owner="", epoch=0)

    async def get_match(self, match_id: str) -> MatchRecord:
        """Raises UnknownMatchError, CorruptMatchError."""
        row = await self._recorder().match(match_id)
        if row is None:
            raise UnknownMatchError(match_id)
        try:
            return _record(row)
        except CorruptMatchError as exc:
            self._report_damaged(exc)
            raise

    async def list_matches(
        self,
        *,
        status: str | Sequence[str] | None = None,
        game: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MatchRecord]:
        """Newest first. A match whose stored row is damaged is left out (and reported:
        :attr:`damaged`); the page is then shorter than ``limit``."""
        statuses = None if status is None else [status] if isinstance(status, str) else status
        rows = await self._recorder().matches(statuses, game, limit, offset)
        out: list[MatchRecord] = []
        for row in rows:
            try:
                out.append(_record(row))
            except CorruptMatchError as exc:
                self._report_damaged(exc)
        return out

    async def get_matches(self, match_ids: Collection[str]) -> dict[str, MatchRecord]:
        """The records of these matches, by id, in one query per
        ``MATCH_IDS_PER_QUERY``: a reader of many matches at once (the leaderboard
        projection's look at the matches it holds back) makes one round trip, not one
        each. An unknown match is absent; so is one whose stored row is damaged (and
        reported, as by :meth:`list_matches`)."""
        ids = list(dict.fromkeys(match_ids))
        out: dict[str, MatchRecord] = {}
        for i in range(0, len(ids), MATCH_IDS_PER_QUERY):
            chunk = ids[i : i + MATCH_IDS_PER_QUERY]
            for row in await self._recorder().matches(None, None, len(chunk), 0, chunk):
                try:
                    out[row.match_id] = _record(row)
                except CorruptMatchError as exc:
                    self._report_damaged(exc)
        return out

    def _report_damaged(self, exc: CorruptMatchError) -> None:
        self.damaged_skipped += 1
        if exc.match_id not in self.damaged:
            log.error("%s: left out of listings (matchreplay store verify)", exc)
        self.damaged[exc.match_id] = exc.reason

    async def update_match(
        self,
        match_id: str,
        *,
        status: MatchStatus | None = None,
        ended_at: float | None = None,
        players: Sequence[str] | None = None,
        settings: dict[str, Any] | None = None,
        epoch: int | None = None,
    ) -> MatchRecord:
        """Change the mutable metadata. An ended or interrupted match stays read-only
        for events; its status may still move from interrupted to ended.

        ``epoch``: the caller's lease epoch (:meth:`acquire_lease`); the change is made
        only if the match's stored epoch is still that one, else LeaseLostError and
        nothing changes (a node that lost the match can never end or interrupt it).
        None: unfenced."""
        if status is not None and status not in _STATUSES:
            raise ValueError(f"unknown match status {status!r}")
        _check_epoch(match_id, epoch)

        def allowed(current: str, current_epoch: int) -> None:
            if epoch is not None and current_epoch != epoch:
                raise LeaseLostError(match_id, epoch, current_epoch)
            # Read-only is forever; the only move out of it is interrupted -> ended.
            if (
                status is not None
                and current in READ_ONLY_STATUSES
                and status != current
                and not (current == "interrupted" and status == "ended")
            ):
                raise MatchEndedError(match_id, current)

        changes = {
            column: value
            for column, value in (
                ("status", status),
                ("ended_at", ended_at),
                ("players", None if players is None else json.dumps(list(players))),
                ("settings", None if settings is None else json.dumps(settings)),
            )
            if value is not None
        }
        row = await self._recorder().update_match(match_id, changes, allowed)
        if row is None:
            raise UnknownMatchError(match_id)
        return _record(row)

    # -- appends ---------------------------------------------------------------

    async def append(
        self,
        match_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        first_id: int | None = None,
        encoded: bytes | None = None,
        epoch: int | None = None,
    ) -> AppendResult:
        """Append ``events`` if the match is at ``expected_version``.

        Raises ConcurrencyError (version mismatch), UnknownMatchError,
        MatchEndedError, EventTooLargeError, EventEncodeError, InvalidEventError,
        LeaseLostError; in every case nothing is written. ``epoch``: the caller's
        lease epoch (:meth:`acquire_lease`): the append is accepted only if the match's
        stored epoch is still that one, checked in the transaction that writes it (None:
        unfenced, for a single node and offline tools). ``first_id`` names the batch for
        idempotent retries; when omitted the store allocates ids itself.
        ``encoded``: ``replay.codec.encode_batch(events)``, when the caller already
        has it (a live match sends the same bytes to its players): encoded once.
        """
        return await self.append_soon(
            match_id, events, expected_version, first_id=first_id, encoded=encoded, epoch=epoch
        )

    def append_soon(
        self,
        match_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        first_id: int | None = None,
        encoded: bytes | None = None,
        epoch: int | None = None,
    ) -> asyncio.Future[AppendResult]:
        """:meth:`append` without a coroutine: the checks now (raising what ``append``
        raises about the batch itself), the request queued at once, its future returned
        (the recorder's refusals come through it). For a caller that hands over many
        appends in one callback (server/ticker.py: every due match of a tick): neither a
        task nor two loop turns per append, and they all meet in one group commit."""
        if self._closing or not self._open:
            raise StoreClosedError("the event store is closed")
        if not events:
            raise InvalidEventError(f"match {match_id!r}: empty batch")
        columns = _check_events(match_id, events)
        if first_id is not None and not 0 <= first_id <= _MAX_ID - len(events):
            raise InvalidEventError(f"match {match_id!r}: first_id {first_id} is not a 128-bit id")
        if type(expected_version) is not int or not 0 <= expected_version < MAX_INT:
            raise InvalidEventError(
                f"match {match_id!r}: expected version {expected_version!r} is not in 0..2**62"
            )
        if epoch is not None:
            _check_epoch(match_id, epoch)
        try:
            blob = encoded if encoded is not None else encode_columns(*columns[:4])
        except TypeError as exc:  # `data` that is not a sequence
            raise EventEncodeError(f"match {match_id!r}: event data must be arrays: {exc}") from exc
        # A batch no larger than the limit cannot hold an event over it: measure
        # each event only when the whole batch could.
        if len(blob) > self.max_event_bytes:
            for i, size in enumerate(encoded_sizes(events)):
                if size > self.max_event_bytes:
                    raise EventTooLargeError(
                        f"match {match_id!r}: event {i} (type {events[i].type}) encodes to"
                        f" {size} bytes; the limit is {self.max_event_bytes}"
                    )
        ticks = columns.ticks
        request = _Append(
            match_id,
            -1,
            len(ticks),
            ticks[0],
            ticks[-1],
            expected_version,
            self._ids.take(len(ticks)) if first_id is None else first_id,
            blob,
            type_mask(columns.types),
            UNFENCED if epoch is None else epoch,
            asyncio.get_running_loop().create_future(),
            first_id is not None,
        )
        # close() waits for admitted appends, so none is cut off between its checks
        # and its ack.
        self._in_flight += 1
        request.future.add_done_callback(self._landed)
        mkey = self._mkeys.get(match_id)
        if mkey is None:  # a match's first append through this store: its key is read first
            self._keep(self._queue_unkeyed(request))
        else:
            request.mkey = mkey
            self._queue.append(request)
            self._wake.set()
        return request.future

    def _keep(self, lookup: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(lookup)
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    def _landed(self, _: asyncio.Future[AppendResult]) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _queue_unkeyed(self, request: _Append) -> None:
        try:
            request.mkey = await self._mkey(request.match_id)
        except Exception as exc:  # UnknownMatchError, the database away, ...
            _fail(request, exc)
            return
        self._queue.append(request)
        self._wake.set()

    async def append_many(
        self,
        appends: Sequence[
            tuple[str, Sequence[NewEvent], int, int | None]
            | tuple[str, Sequence[NewEvent], int, int | None, int | None]
        ],
    ) -> list[AppendResult]:
        """``append(match_id, events, expected_version, first_id=..., epoch=...)`` for
        each tuple (``epoch`` optional, the fifth item), in this order and in one group
        commit when the store is idle: appends to one match at successive versions
        chain, and positions follow the order given (a copy or an import keeps the
        source's order). Raises the first failure; the other appends still commit or
        fail on their own."""
        # Every check and match key before queueing anything, so the queue gets the
        # requests back to back, in order.
        for match_id in dict.fromkeys(a[0] for a in appends):
            await self._mkey(match_id)
        calls = [
            asyncio.ensure_future(
                self.append(
                    m, events, version, first_id=first_id, epoch=epoch[0] if epoch else None
                )
            )
            for m, events, version, first_id, *epoch in appends
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    async def _settle_retry(self, req: _Append, error: Exception) -> None:
        """A refused append that named its batch (``first_id``) may be a retry of one
        already committed: then its original result, else ``error``."""
        try:
            done = await self._find_batch(req)
        except Exception:  # the database away: the refusal stands
            done = None
        if req.future.done():  # the caller was cancelled
            return
        if done is not None:
            req.future.set_result(done)
        else:
            req.future.set_exception(error)

    async def _find_batch(self, req: _Append) -> AppendResult | None:
        first_seq = req.expected_version + 1
        row = await self._recorder().find_batch(req.mkey, first_seq)
        n = req.count
        if row is None or row.count != n or row.first_id != req.first_id.to_bytes(16, "big"):
            return None
        return AppendResult(
            req.match_id,
            first_seq,
            first_seq + n - 1,
            row.position - n + 1,
            row.position,
            req.first_id,
        )

    async def _run_writer(self) -> None:
        """Gather queued appends into group commits, up to ``recorder.pipeline`` of them
        in flight at once: while one group is in the database, the callers it does not
        hold prepare their next appends and the next group is sent (the recorder keeps
        commit order; a group waits for the one before it there, not here). A group
        goes only when none in flight holds one of its matches, so appends to one match
        commit in the order they were queued. A group's matches are free again as soon as
        the recorder has decided it, before its acks: appends queued meanwhile (callers
        that keep appends in flight) go before the acks let their callers run, and a
        group decided with nothing else in the database wakes its callers in two halves
        around one look of this loop (_write_group)."""
        depth = max(1, self.recorder.pipeline)
        in_flight: dict[int, frozenset[int]] = {}  # group number -> matches it holds
        numbers = itertools.count()
        acked = False  # a group landed since the last look at the queue

        def decided(number: int) -> bool:
            in_flight[number] = frozenset()
            self._wake.set()
            return len(in_flight) < depth  # only this group is in the database

        def landed(number: int, _: asyncio.Task[None]) -> None:
            nonlocal acked
            del in_flight[number]
            acked = True
            self._wake.set()

        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._queue:
                if acked:
                    # One loop turn first: callers made ready by the last acks queue
                    # their next appends now, and join this group instead of trickling
                    # after it. (Appends handed over together later, as the ticker's,
                    # go at once.)
                    acked = False
                    await asyncio.sleep(0)
                mkeys = frozenset(req.mkey for req in self._queue)
                if len(in_flight) < depth and not any(mkeys & held for held in in_flight.values()):
                    group, self._queue = self._queue, []
                    number = next(numbers)
                    task = asyncio.create_task(
                        self._commit_group(group, functools.partial(decided, number))
                    )
                    in_flight[number] = mkeys
                    task.add_done_callback(functools.partial(landed, number))
                # else a group landing wakes this loop again
            else:
                acked = False
                if self._closing and not in_flight:
                    return
            # A group holding back half its acks until this look (_write_group): its
            # task, if one was started, runs before the other half's callers.
            if self._lookers:
                lookers, self._lookers = self._lookers, []
                for looked in lookers:
                    if not looked.done():  # its group's task may have been cancelled
                        looked.set_result(None)

    async def _commit_group(self, group: list[_Append], decided: Callable[[], bool]) -> None:
        """Write ``group`` through the recorder in one transaction. A request the
        recorder refuses fails alone; the others still commit; when the backend fails,
        the whole group fails (nothing of it is written)."""
        try:
            await self._write_group(group, decided)
            self.unavailable = None
        except Exception as exc:  # the backend failed: nothing of the group is written
            if isinstance(exc, StoreUnavailableError):
                self.unavailable = exc
            for req in group:
                _fail(req, exc)

    async def _write_group(self, group: list[_Append], decided: Callable[[], bool]) -> None:
        rows = []
        for req in group:
            first_seq, n = req.expected_version + 1, req.count
            base_tick, last_tick = req.base_tick, req.last_tick
            first_id = req.first_id.to_bytes(16, "big")
            rows.append(
                NewBatch(
                    req.mkey,
                    first_seq,
                    n,
                    base_tick,
                    last_tick,
                    first_id,
                    req.blob,
                    req.types,
                    batch_checksum(
                        req.mkey, first_seq, n, base_tick, last_tick, first_id, req.blob
                    ),
                    req.epoch,
                )
            )
        outcomes = await self._recorder().insert_group(rows)
        self.commits += 1
        database_idle = decided()
        if self._queue:
            # Appends queued meanwhile (callers that keep appends in flight): one loop
            # turn lets the writer start their group, and it goes to the database
            # before the acks below wake their callers (call_soon order), so that the
            # callers prepare their next appends while it commits.
            await asyncio.sleep(0)
        # Durable now: acknowledge. With nothing else in the database, the first half
        # of the callers are woken alone and the writer sends what they append before
        # the second half is woken: that group commits while the second half prepares
        # theirs, instead of the database waiting for every caller (callers that await
        # each append). The two halves then keep alternating, each preparing while the
        # other's group commits.
        half = len(group) // 2 if database_idle and len(group) >= _SPLIT_ACKS else 0
        self._acknowledge(group[:half], rows[:half], outcomes[:half])
        if half:
            await asyncio.sleep(0)  # the first half's callers run, queueing their appends
            looked = asyncio.get_running_loop().create_future()
            self._lookers.append(looked)  # the writer's next look, which takes them, sets it
            self._wake.set()
            await looked
        self._acknowledge(group[half:], rows[half:], outcomes[half:])

    def _acknowledge(
        self, group: list[_Append], rows: list[NewBatch], outcomes: list[int | Conflict]
    ) -> None:
        for req, row, outcome in zip(group, rows, outcomes, strict=True):
            if isinstance(outcome, Conflict):
                error = _conflict_error(req, row, outcome)
                if req.named and isinstance(
                    error, ConcurrencyError | MatchEndedError | LeaseLostError
                ):
                    # The future (and close()) waits while the batch is looked up.
                    self._keep(self._settle_retry(req, error))
                else:
                    _fail(req, error)
            elif not req.future.done():  # the caller may have been cancelled
                n = row.count
                req.future.set_result(
                    AppendResult(
                        req.match_id,
                        row.first_seq,
                        row.first_seq + n - 1,
                        outcome - n + 1,
                        outcome,
                        req.first_id,
                    )
                )

    # -- reads -----------------------------------------------------------------

    async def read_batches(
        self,
        match_id: str,
        *,
        from_seq: int = 1,
        to_seq: int | None = None,
        from_tick: int | None = None,
        to_tick: int | None = None,
    ) -> list[EventBatch]:
        """Batches overlapping the seq range and the (inclusive) tick range, in seq order.

        Batches are returned whole: callers trim the edges (``read``/``read_ticks``
        do). Raises UnknownMatchError, CorruptEventError (naming match and seq).
        """
        mkey = await self._mkey(match_id)
        # Clamped into the backends' integer range; no stored value lies outside it.
        hi_seq = _clamp(to_seq) if to_seq is not None else MAX_INT
        from_seq = _clamp(from_seq)
        recorder = self._recorder()
        if from_tick is None and to_tick is None:
            rows = await recorder.batches_by_seq(mkey, from_seq, hi_seq)
            if from_seq <= 1 and rows and rows[0].first_seq != 1:
                raise CorruptEventError(
                    f"match {match_id!r} seq 1..{rows[0].first_seq - 1}: missing from the store"
                )
        else:
            lo = _clamp(from_tick) if from_tick is not None else -1
            hi = _clamp(to_tick) if to_tick is not None else MAX_INT
            rows = [
                r
                for r in await recorder.batches_by_tick(mkey, lo, hi)
                if r.first_seq <= hi_seq and r.first_seq + r.count > from_seq
            ]
        for prev, row in itertools.pairwise(rows):
            if row.first_seq != prev.first_seq + prev.count:
                raise CorruptEventError(
                    f"match {match_id!r} seq {prev.first_seq + prev.count}..{row.first_seq - 1}:"
                    f" not continuous (a batch ends at seq {prev.first_seq + prev.count - 1},"
                    f" the next starts at {row.first_seq})"
                )
        return [await self._decode(row) for row in rows]

    async def read_all(self, after: int = 0, limit: int = 10_000) -> list[RecordedEvent]:
        """Events of all matches with position > ``after``, in global order."""
        out: list[RecordedEvent] = []
        for batch in await self.read_all_batches(after, limit):
            out.extend(batch.recorded())
            if len(out) >= limit:
                return out[:limit]
        return out

    async def read_all_batches(self, after: int = 0, limit: int = 1_000) -> list[EventBatch]:
        """Events of all matches with position > ``after``, in global order, as at most
        ``limit`` batches, the first trimmed to positions > ``after``: the fast path
        for projections and rebuilds (no object per event)."""
        _, rows = await self._recorder().scan(after, limit, None)
        out = [_trim(await self._decode(row), after) for row in rows]
        for prev, b in itertools.pairwise(out):
            if b.first_position != prev.last_position + 1:
                raise CorruptEventError(
                    f"match {b.match_id!r} seq {b.first_seq}..{b.last_seq}: positions jump from"
                    f" {prev.last_position} to {b.first_position}"
                )
        return out

    async def scan(
        self, after: int, limit: int, types: Collection[int]
    ) -> tuple[list[EventBatch], int]:
        """The batches among the next ``limit`` after ``after`` that hold an event of
        one of ``types`` (the first trimmed to positions > ``after``), and the position
        scanned through: every event up to it was considered. In the batches returned,
        the events of other types are None: event ``i`` still has position
        ``first_position + i``, but it is not built (nor upcast).

        A projection that reads a few event types moves its checkpoint to the scanned
        position without decoding the batches it does not need (the recorder filters
        them by their type mask), nor the events it does not read.
        """
        wanted = frozenset(types)
        recorder = self._recorder()
        through, rows = await recorder.scan(after, limit, scan_mask(wanted, recorder.legacy_masks))
        out: list[EventBatch] = []
        for row in rows:
            b = _trim(await self._decode(row, wanted), after)
            # The mask is a superset (shared high bit): keep batches with a wanted event.
            if b.events.count(None) < len(b.events):
                out.append(b)
        return out, through

    async def last_position(self) -> int:
        """The highest committed position (0 when empty)."""
        return await self._recorder().head()

    async def wait_for_commit(self, after: int, timeout: float) -> None:
        """Return once a position > ``after`` may be committed (by any process), or
        after ``timeout``."""
        await self._recorder().wait_for_commit(after, timeout)

    async def read(
        self, match_id: str, from_seq: int = 1, to_seq: int | None = None
    ) -> list[RecordedEvent]:
        """Events of one match with ``from_seq <= seq <= to_seq``."""
        out: list[RecordedEvent] = []
        for batch in await self.read_batches(match_id, from_seq=from_seq, to_seq=to_seq):
            out.extend(
                e
                for e in batch.recorded()
                if e.seq >= from_seq and (to_seq is None or e.seq <= to_seq)
            )
        return out

    async def read_ticks(self, match_id: str, from_tick: int, to_tick: int) -> list[RecordedEvent]:
        """Events of one match with ``from_tick <= tick <= to_tick``."""
        out: list[RecordedEvent] = []
        for batch in await self.read_batches(match_id, from_tick=from_tick, to_tick=to_tick):
            out.extend(e for e in batch.recorded() if from_tick <= e.tick <= to_tick)
        return out

    async def subscribe(
        self, after: int = 0, *, batch_size: int = 10_000, poll_interval: float = 1.0
    ) -> AsyncIterator[RecordedEvent]:
        """Every event with position > ``after`` in global order: first the stored
        ones, then new ones as they are committed, forever.

        No gap and no duplicate across the switch from catch-up to live: there is
        no switch. The same read-from-checkpoint query serves both phases and the
        checkpoint only moves to positions actually yielded. Positions are assigned
        in commit order, so nothing can later appear below the checkpoint.
        """
        position = after
        while True:
            events = await self.read_all(position, batch_size)
            for event in events:
                # Invariant: strictly increasing, never skipping what was not seen.
                position = event.position
                yield event
            if len(events) < batch_size:
                # Caught up as of that read: wait for a commit past it (at once when
                # one is known already) instead of reading again to find nothing.
                await self.wait_for_commit(position, poll_interval)

    # -- leases (docs/operations.md, "Leases and fencing") -------------------------

    async def acquire_lease(
        self, match_id: str, owner: str, ttl: float, *, epoch: int | None = None
    ) -> Lease | None:
        """Make ``owner`` (a node instance id) the owner of a created or running match
        for ``ttl`` seconds, raising its epoch by one; the new Lease, or None when
        the match is not to be had (or does not exist).

        ``epoch`` None: only if nobody holds a live lease on it (never leased, or
        lapsed): a takeover. ``epoch=E``: only if its epoch is still E: the caller was
        handed it (:meth:`release_lease` ``to=``) or created it (E = 0). Atomic across
        processes: of two nodes taking one match at once, one wins."""
        _check_owner(owner)
        _check_ttl(ttl)
        _check_epoch(match_id, epoch)
        return await self._recorder().acquire_lease(match_id, owner, ttl, epoch)

    async def renew_leases(self, owner: str, ttl: float) -> dict[str, int]:
        """Extend every lease ``owner`` holds on a live match to ``ttl`` seconds from now
        (lapsed ones too, unless another node took them): ``{match_id: epoch}`` of the
        matches it still holds. What a node that was paused learns it lost."""
        _check_owner(owner)
        _check_ttl(ttl)
        return await self._recorder().renew_leases(owner, ttl)

    async def release_lease(
        self, match_id: str, owner: str, epoch: int, *, to: str | None = None, ttl: float = 0.0
    ) -> Lease | None:
        """Give up a lease ``(owner, epoch)`` still holds (None when it does not):
        ``to`` None lapses it now (any node may take the match over); ``to`` another
        instance hands it over: owner ``to``, epoch + 1, for ``ttl`` seconds."""
        _check_owner(owner)
        _check_epoch(match_id, epoch)
        if to is not None:
            _check_owner(to)
            _check_ttl(ttl)
        return await self._recorder().release_lease(match_id, owner, epoch, to, ttl)

    async def lease(self, match_id: str) -> Lease | None:
        """The match's lease (owner "" and epoch 0: never leased); None: no such match."""
        return await self._recorder().lease(match_id)

    async def lapsed_leases(self, limit: int = 100) -> list[Lease]:
        """Created or running matches whose owner's lease lapsed, longest-lapsed first:
        the matches to take over. Matches never leased (single-node ones) are not listed."""
        return await self._recorder().lapsed_leases(limit)

    async def leases_of(self, owner: str) -> list[Lease]:
        """The created or running matches ``owner`` holds (lapsed or not), by match id."""
        return await self._recorder().leases_of(owner)

    # -- nodes -------------------------------------------------------------------

    async def heartbeat(
        self, node: str, name: str, url: str, status: str, load: Mapping[str, Any]
    ) -> None:
        """Record that ``node`` (an instance id) is alive now, by the store's clock,
        with its ``status`` (up, draining, stopped) and ``load`` (a JSON object)."""
        _check_owner(node)
        if status not in NODE_STATUSES:
            raise ValueError(f"unknown node status {status!r}")
        await self._recorder().heartbeat(node, name, url, status, json.dumps(dict(load)))

    async def nodes(self, max_age: float | None = None) -> list[NodeRow]:
        """The nodes heard from at most ``max_age`` seconds ago (all with None), by name
        then instance id."""
        rows = await self._recorder().nodes(max_age)
        out = []
        for row in rows:
            try:
                load = json.loads(row.load)
            except (ValueError, TypeError, RecursionError):
                load = None
            out.append(row._replace(load=load if isinstance(load, dict) else {}))
        return out

    async def forget_nodes(self, older_than: float) -> int:
        """Drop the rows of nodes not heard from for more than ``older_than`` seconds;
        how many."""
        return await self._recorder().forget_nodes(older_than)

    # -- keyframes ---------------------------------------------------------------

    async def put_keyframe(self, keyframe: Keyframe) -> None:
        """Store (or replace) the keyframe of ``(match_id, tick)``."""
        mkey = await self._mkey(keyframe.match_id)
        await self._recorder().put_keyframe(
            mkey, keyframe.tick, keyframe.format_version, keyframe.data, keyframe.checksum
        )

    async def get_keyframe(self, match_id: str, at_or_before: int) -> Keyframe | None:
        """The keyframe with the greatest tick <= ``at_or_before``, or None."""
        mkey = await self._mkey(match_id)
        found = await self._recorder().keyframe(mkey, _clamp(at_or_before))
        if found is None:
            return None
        tick, format_version, data, checksum = found
        return Keyframe(match_id, tick, format_version, bytes(data), bytes(checksum))

    async def keyframe_ticks(self, match_id: str) -> list[int]:
        """Ticks that have a keyframe, ascending."""
        return await self._recorder().keyframe_ticks(await self._mkey(match_id))

    async def delete_keyframes(self, match_id: str, before_tick: int | None = None) -> int:
        """Drop keyframes (all, or those before ``before_tick``); returns how many."""
        mkey = await self._mkey(match_id)
        bound = MAX_INT + 1 if before_tick is None else min(before_tick, MAX_INT + 1)
        return await self._recorder().delete_keyframes(mkey, bound)

    # -- helpers -----------------------------------------------------------------

    def _recorder(self) -> Recorder:
        if not self._open:
            raise StoreClosedError("the event store is not open")
        return self.recorder

    async def _mkey(self, match_id: str) -> int:
        mkey = self._mkeys.get(match_id)
        if mkey is not None:
            return mkey
        row = await self._recorder().match(match_id)
        if row is None:
            raise UnknownMatchError(match_id)
        self._remember(row)
        return row.mkey

    def _remember(self, row: MatchRow) -> None:
        self._mkeys[row.match_id] = row.mkey
        self._by_mkey[row.mkey] = (row.match_id, self.catalogs.get(row.game))

    async def _decode(self, row: BatchRow, types: Collection[int] | None = None) -> EventBatch:
        # With `types`, events of other types stay None (scan), and are not upcast.
        position, mkey, first_seq, count, base_tick, last_tick, first_id, blob, checksum = row
        known = self._by_mkey.get(mkey)
        if known is None:
            match = await self._recorder().match(mkey=mkey)
            if match is None:
                raise CorruptEventError(f"event batch references unknown match key {mkey}")
            self._remember(match)
            known = self._by_mkey[mkey]
        match_id, catalog = known
        where = _where(match_id, first_seq, count)
        if checksum is not None and checksum != batch_checksum(
            mkey, first_seq, count, base_tick, last_tick, first_id, blob
        ):
            raise CorruptEventError(f"{where}: checksum mismatch, the stored batch is damaged")
        try:
            events: list[Any] = (
                decode_batch(blob, base_tick)
                if types is None
                else decode_batch(blob, base_tick, types)
            )
        except CorruptEventError as exc:
            raise CorruptEventError(f"{where}: {exc}") from exc
        if len(events) != count:
            raise CorruptEventError(f"{where}: holds {len(events)} events, not {count}")
        if catalog is not None:
            upcast_events(catalog, events, where, first_seq)
        return EventBatch(
            match_id, first_seq, position - count + 1, int.from_bytes(first_id, "big"), events
        )


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds (no exception on timeout)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def _clamp(value: int) -> int:
    return max(min(value, MAX_INT), -MAX_INT)


def _trim(b: EventBatch, after: int) -> EventBatch:
    """``b`` without its events at positions <= ``after``."""
    if (k := after + 1 - b.first_position) > 0:
        return EventBatch(b.match_id, b.first_seq + k, after + 1, b.first_id + k, b.events[k:])
    return b


def _where(match_id: str, first_seq: int, count: int) -> str:
    return f"match {match_id!r} seq {first_seq}..{first_seq + count - 1}"


def _conflict_error(req: _Append, row: NewBatch, conflict: Conflict) -> Exception:
    if conflict.reason == "epoch":
        return LeaseLostError(req.match_id, req.epoch, conflict.actual)
    if conflict.reason == "version":
        return ConcurrencyError(req.match_id, req.expected_version, conflict.actual)
    if conflict.reason == "ended":
        return MatchEndedError(req.match_id, conflict.status)
    if conflict.reason == "tick":
        return InvalidEventError(
            f"match {req.match_id!r}: tick {row.base_tick} is before the match's last"
            f" stored tick {conflict.actual}"
        )
    return UnknownMatchError(req.match_id)


def _check_epoch(match_id: str, epoch: int | None) -> None:
    if epoch is not None and (type(epoch) is not int or not 0 <= epoch < MAX_INT):
        raise InvalidEventError(f"match {match_id!r}: lease epoch {epoch!r} is not in 0..2**62")


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"a lease owner or node is a non-empty instance id, not {owner!r}")


def _check_ttl(ttl: float) -> None:
    if not isinstance(ttl, int | float) or not 0 < ttl < 1e9:
        raise ValueError(f"a lease lasts 0 < ttl < 1e9 seconds, not {ttl!r}")


class _Columns(NamedTuple):
    """A checked batch as columns (``zip(*events)``): what the encoder takes."""

    kinds: tuple[int, ...]
    ticks: tuple[int, ...]
    payloads: tuple[Sequence[Any], ...]
    versions: tuple[int, ...]
    types: set[int]


def _check_events(match_id: str, events: Sequence[NewEvent]) -> _Columns:
    """Reject what the backends' columns or the reading rules cannot hold, before
    queueing: a bad request must fail alone, never inside the writer's shared group.
    Returns the batch as columns with its set of event types. (On the append path for
    every batch: the checks run over columns in C, and the per-event loops only find
    what to report.)"""
    try:
        kinds, ticks, payloads, versions = zip(*events, strict=True)
    except (TypeError, ValueError):
        raise InvalidEventError(
            f"match {match_id!r}: events must be NewEvent(type, tick, data, version)"
        ) from None
    if not set(map(type, ticks)) <= _INT:
        raise InvalidEventError(f"match {match_id!r}: ticks must be integers")
    # All at one tick (a tick's batch, the common case) is in order; else sort to see.
    if ticks.count(ticks[0]) != len(ticks) and list(ticks) != sorted(ticks):
        i = next(i for i in range(1, len(ticks)) if ticks[i] < ticks[i - 1])
        raise InvalidEventError(
            f"match {match_id!r}: event {i} has tick {ticks[i]}, before the previous"
            f" event's tick {ticks[i - 1]}"
        )
    if ticks[0] < 0 or ticks[-1] > MAX_INT:
        raise InvalidEventError(f"match {match_id!r}: ticks must be in 0..{MAX_INT}")
    try:
        types, known_versions = set(kinds), set(versions)
    except TypeError:  # unhashable: not an int, reported below
        types = known_versions = {None}
    if not (
        set(map(type, types)) <= _INT
        and set(map(type, known_versions)) <= _INT
        and min(types) >= 0
        and max(types) <= 0xFFFF
        and min(known_versions) >= 1
    ):
        for type_, version in zip(kinds, versions, strict=True):
            if type(type_) is not int or not 0 <= type_ <= 0xFFFF:
                raise InvalidEventError(f"match {match_id!r}: event type {type_!r} not in 0..65535")
            if type(version) is not int or version < 1:
                raise InvalidEventError(
                    f"match {match_id!r}: event version {version!r} is not >= 1"
                )
    return _Columns(kinds, ticks, payloads, versions, types)


def _fail(req: _Append, exc: BaseException) -> None:
    if not req.future.done():  # the caller may have been cancelled
        req.future.set_exception(exc)


def _record(row: MatchRow) -> MatchRecord:
    """The record of a stored row; CorruptMatchError (for this match only) when its
    JSON columns do not hold what they must."""
    decoded: dict[str, Any] = {}
    for column in ("players", "settings", "options"):
        try:
            decoded[column] = json.loads(getattr(row, column))
        except (ValueError, TypeError, RecursionError) as exc:
            raise CorruptMatchError(row.match_id, f"{column} is not JSON: {exc}") from None
    players, settings, options = decoded["players"], decoded["settings"], decoded["options"]
    if not (isinstance(players, list) and all(isinstance(p, str) for p in players)):
        raise CorruptMatchError(row.match_id, "players is not a list of player ids")
    if not isinstance(settings, dict):
        raise CorruptMatchError(row.match_id, "settings is not a JSON object")
    if not isinstance(options, dict):
        raise CorruptMatchError(row.match_id, "options is not a JSON object")
    return MatchRecord(
        match_id=row.match_id,
        game=row.game,
        rules_version=row.rules_version,
        tick_rate=row.tick_rate,
        players=tuple(players),
        settings=settings,
        seed=row.seed,
        created_at=row.created_at,
        ended_at=row.ended_at,
        status=row.status,  # type: ignore[arg-type]
        version=row.version or 0,
        last_tick=-1 if row.last_tick is None else row.last_tick,
        options=options,
        owner=row.owner,
        epoch=row.epoch,
    )
