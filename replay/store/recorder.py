"""The recorder interface: what a storage backend does for :class:`~replay.store.events.EventStore`.

A recorder stores and reads bytes and rows; it never decodes an event, knows no
game and keeps no state a correct answer depends on. Everything else (checks,
limits, ids, encoding, the group-commit queue, upcasting, subscriptions) is the
event store's, written once for every backend.

What a recorder guarantees (``tests/test_store_recorders.py`` checks each):

* **Atomic groups.** :meth:`Recorder.insert_group` writes its accepted rows in one
  transaction: all of them or none (then it raises).
* **Conditional inserts.** A row is accepted only if, inside that transaction, its
  match is writable, at the row's lease ``epoch`` (unless unfenced), at
  ``first_seq - 1`` (the append's expected version) and its last stored tick is <= the
  row's ``base_tick``; earlier rows of the same group count. The answer comes from
  the stored data (a unique key and the transaction's lock), never from one
  process's memory, so two processes appending to a match at the same version get
  one winner and one conflict.
* **Positions in commit order.** The recorder assigns global positions; a reader
  that has seen position ``p`` never later sees a position below ``p``.
* **Wake-ups across processes.** :meth:`Recorder.wait_for_commit` returns soon after
  any process commits past ``after``.
* **Leases in one step.** Each lease method is atomic against the others and against
  group commits, by the store's clock (a shared database's own, so nodes with skewed
  clocks agree): of two nodes taking one match at once, exactly one wins, and a group
  commit sees either the epoch before a change of owner or the one after it.
"""

from __future__ import annotations

import abc
import hashlib
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

from replay.events import SYSTEM_FORKED, SYSTEM_REWOUND
from replay.store.records import Lease, NodeRow

__all__ = [
    "TYPE_BITS",
    "UNFENCED",
    "BatchRow",
    "Conflict",
    "MatchRow",
    "NewBatch",
    "Recorder",
    "batch_checksum",
    "scan_mask",
    "type_mask",
]

UNFENCED = -1
"""``NewBatch.epoch`` of an append that is not fenced by a lease (a single node, tools)."""

MAX_INT = 2**62
"""Ticks, seqs and positions stay below this: every backend's 64-bit integer holds them."""

TYPE_BITS = 62
"""A batch's type mask has bit ``min(type, 62)`` set for each of its event types (codes
62 and up share the last bit: a superset, never a miss). 63 bits keep it a positive
64-bit integer in every backend."""
NOTABLE_BIT = 61
NOTABLE_TYPES = frozenset({SYSTEM_REWOUND, SYSTEM_FORKED})
"""Rare system events a projection scans for (the leaderboards: rewinds, a fork's
start). A batch holding one has bit 61 too, and a scan for them asks for bit 61 only:
it does not decode every batch holding another system event (the input audit is in
many). Game code 61 shares the bit: a superset, never a miss. Stores from before
(schema version 1) get bit 61 on every row with bit 62 when migrated."""


def type_mask(types: Sequence[int] | set[int] | frozenset[int]) -> int:
    """The mask stored with a batch of these event types."""
    mask = 0
    for t in types:
        mask |= 1 << min(t, TYPE_BITS)
        if t in NOTABLE_TYPES:
            mask |= 1 << NOTABLE_BIT
    return mask


def scan_mask(types: Sequence[int] | set[int] | frozenset[int], legacy: bool = False) -> int:
    """The mask a scan for these event types asks for (``legacy``: rows stored before
    :data:`NOTABLE_BIT` may hold a notable event under bit 62 only)."""
    mask = 0
    for t in types:
        if t in NOTABLE_TYPES and not legacy:
            mask |= 1 << NOTABLE_BIT
        else:
            mask |= 1 << min(t, TYPE_BITS)
    return mask


def batch_checksum(
    mkey: int,
    first_seq: int,
    count: int,
    base_tick: int,
    last_tick: int,
    first_id: bytes,
    blob: bytes,
) -> bytes:
    """blake2b-64 of a batch row's columns (all but its position, which the recorder
    assigns; positions are checked for continuity instead). A flipped byte in the blob
    or an edited seq, tick, id or match key fails the check."""
    header = struct.pack(">qqqqq", mkey, first_seq, count, base_tick, last_tick)
    return hashlib.blake2b(header + first_id + blob, digest_size=8).digest()


MATCH_IDS_PER_QUERY = 500
"""Most match ids one ``Recorder.matches`` call filters on: each is a bound parameter, and
SQLite before 3.32 takes 999 at most."""


class NewBatch(NamedTuple):
    """One append, encoded, as the store hands it to :meth:`Recorder.insert_group`."""

    mkey: int
    first_seq: int
    """The append's expected version + 1: the row is accepted only if the match is at
    ``first_seq - 1`` when it is inserted."""
    count: int
    base_tick: int
    last_tick: int
    first_id: bytes
    """16 bytes, big-endian."""
    blob: bytes
    """replay.codec.encode_batch of the events."""
    types: int
    """type_mask of the batch's event types."""
    checksum: bytes
    """batch_checksum of the row: checked on every read."""
    epoch: int = UNFENCED
    """The writer's lease epoch: the row is accepted only if the match's stored epoch
    equals it (:data:`UNFENCED`: not checked). Not stored."""


class Conflict(NamedTuple):
    """Why :meth:`Recorder.insert_group` refused a row (nothing of it was written)."""

    reason: str
    """``"epoch"`` (the match's stored lease epoch is ``actual``, not the row's),
    ``"version"`` (the match is at ``actual``), ``"ended"`` (``status`` is
    read-only), ``"tick"`` (the match's last stored tick ``actual`` is after the
    row's base tick) or ``"unknown"`` (no such match)."""
    actual: int = 0
    status: str = ""


class BatchRow(NamedTuple):
    """One stored batch as read: ``position`` is its *last* event's position."""

    position: int
    mkey: int
    first_seq: int
    count: int
    base_tick: int
    last_tick: int
    first_id: bytes
    blob: bytes
    checksum: bytes | None
    """None for rows stored before checksums (not checked)."""


class MatchRow(NamedTuple):
    """A match row: JSON columns as text; ``version`` and ``last_tick`` derived from
    the stored batches (0 and -1 when there are none)."""

    mkey: int
    match_id: str
    game: str
    rules_version: str
    tick_rate: int
    players: str
    settings: str
    seed: int
    created_at: float
    ended_at: float | None
    status: str
    options: str
    version: int = 0
    last_tick: int = -1
    owner: str = ""
    epoch: int = 0


MATCH_COLUMNS = MatchRow._fields[1:12]
"""The stored columns of a match a new row sets (no key, no derived values, no
lease: owner and epoch start at "" and 0), in order."""


class Recorder(abc.ABC):
    """A storage backend. Methods are coroutines; none is called after :meth:`close`."""

    url: str
    """Where the store is, as ``open_store`` takes it (no password)."""
    legacy_masks = False
    """Rows may hold a notable event without :data:`NOTABLE_BIT` (a store of schema
    version 1 opened read-only, not migrated): scans ask for bit 62 as well."""

    pipeline: int = 1
    """How many :meth:`insert_group` calls the event store may have in flight at once.
    More than one only where a later call's transaction waits for the earlier one's
    inside the backend, so positions still follow commit order."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema (refusing a newer one)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def integrity_check(self) -> list[str]:
        """The backend's own check of its storage: one line per problem found (none:
        all is well). A database server checks its own pages; the default finds nothing."""
        return []

    # -- matches ---------------------------------------------------------------

    @abc.abstractmethod
    async def insert_match(self, row: MatchRow) -> int:
        """Store a new match (``row.mkey`` ignored); returns its key. Raises
        MatchExistsError."""

    @abc.abstractmethod
    async def match(self, match_id: str | None = None, mkey: int | None = None) -> MatchRow | None:
        """The match with this id (or key), or None."""

    @abc.abstractmethod
    async def matches(
        self,
        statuses: Sequence[str] | None,
        game: str | None,
        limit: int,
        offset: int,
        match_ids: Sequence[str] | None = None,
    ) -> list[MatchRow]:
        """Newest first (``created_at``, then key); ``match_ids``: only those matches
        (at most :data:`MATCH_IDS_PER_QUERY` of them)."""

    @abc.abstractmethod
    async def update_match(
        self, match_id: str, changes: dict[str, Any], allowed: Any
    ) -> MatchRow | None:
        """Set ``changes`` (stored column -> value) if ``allowed(current_status,
        current_epoch)`` does not raise, atomically with reading them (and ordered with
        group commits); None if there is no such match."""

    # -- batches ---------------------------------------------------------------

    @abc.abstractmethod
    async def insert_group(self, rows: Sequence[NewBatch]) -> list[int | Conflict]:
        """Insert the acceptable rows in one transaction (see the module's guarantees);
        for each row, its last position or the :class:`Conflict` that refused it.
        Raises (and writes nothing) when the backend fails."""

    @abc.abstractmethod
    async def find_batch(self, mkey: int, first_seq: int) -> BatchRow | None:
        """The batch of match ``mkey`` starting at ``first_seq`` (idempotent retries)."""

    @abc.abstractmethod
    async def batches_by_seq(self, mkey: int, from_seq: int, to_seq: int) -> list[BatchRow]:
        """The batches holding a seq in ``from_seq..to_seq``, in seq order."""

    @abc.abstractmethod
    async def batches_by_tick(self, mkey: int, from_tick: int, to_tick: int) -> list[BatchRow]:
        """The batches holding a tick in ``from_tick..to_tick``, in seq order."""

    @abc.abstractmethod
    async def scan(self, after: int, limit: int, mask: int | None) -> tuple[int, list[BatchRow]]:
        """Of the next ``limit`` batches with position > ``after``, those whose type mask
        meets ``mask`` (all with None), in position order, and the position of the last
        of the ``limit`` (``after`` when there is none)."""

    @abc.abstractmethod
    async def head(self) -> int:
        """The highest committed position (0 when empty)."""

    @abc.abstractmethod
    async def wait_for_commit(self, after: int, timeout: float) -> None:
        """Return once a position > ``after`` may be committed by any process, or after
        ``timeout`` seconds."""

    # -- leases (docs/operations.md, "Leases and fencing") -------------------------
    # Times are the store's clock: time.time() in one process, the database's own
    # clock when the database is shared. A lease is live while now < its end; a match
    # never leased has owner "" and epoch 0. Only LIVE matches (records.LIVE_STATUSES)
    # are taken or renewed.

    @abc.abstractmethod
    async def acquire_lease(
        self, match_id: str, owner: str, ttl: float, epoch: int | None
    ) -> Lease | None:
        """With ``epoch`` None: if the match is LIVE and its lease is not (owner "" or
        lapsed); else if its stored epoch equals ``epoch`` (and it is LIVE). Then owner,
        epoch + 1 and now + ``ttl``, returned; None when the condition fails or there is
        no such match."""

    @abc.abstractmethod
    async def renew_leases(self, owner: str, ttl: float) -> dict[str, int]:
        """now + ``ttl`` for every LIVE match ``owner`` holds, lapsed or not, in one
        statement: ``{match_id: epoch}`` of them."""

    @abc.abstractmethod
    async def release_lease(
        self, match_id: str, owner: str, epoch: int, to: str | None, ttl: float
    ) -> Lease | None:
        """If ``(owner, epoch)`` still hold the match: ``to`` None lapses the lease now
        (owner and epoch kept: the next acquirer bumps the epoch); else owner ``to``,
        epoch + 1, now + ``ttl``. The new lease, or None."""

    @abc.abstractmethod
    async def lease(self, match_id: str) -> Lease | None:
        """The match's lease (None: no such match)."""

    @abc.abstractmethod
    async def lapsed_leases(self, limit: int) -> list[Lease]:
        """LIVE matches with an owner whose lease lapsed, longest-lapsed first."""

    @abc.abstractmethod
    async def leases_of(self, owner: str) -> list[Lease]:
        """LIVE matches ``owner`` holds (lapsed or not), by match id."""

    # -- nodes -------------------------------------------------------------------

    @abc.abstractmethod
    async def heartbeat(self, node: str, name: str, url: str, status: str, load: str) -> None:
        """Insert or update the node's row: seen now (started now on insert); ``load``
        is JSON text."""

    @abc.abstractmethod
    async def nodes(self, max_age: float | None) -> list[NodeRow]:
        """Nodes seen at most ``max_age`` seconds ago (all with None), by name then
        node; ``load`` as the stored JSON text."""

    @abc.abstractmethod
    async def forget_nodes(self, older_than: float) -> int:
        """Delete the rows of nodes not seen for more than ``older_than`` seconds."""

    # -- keyframes ---------------------------------------------------------------

    @abc.abstractmethod
    async def put_keyframe(
        self, mkey: int, tick: int, format_version: int, data: bytes, checksum: bytes
    ) -> None:
        """Store or replace the keyframe of ``(mkey, tick)``."""

    @abc.abstractmethod
    async def keyframe(self, mkey: int, at_or_before: int) -> tuple[int, int, bytes, bytes] | None:
        """``(tick, format_version, data, checksum)`` of the latest keyframe at or before."""

    @abc.abstractmethod
    async def keyframe_ticks(self, mkey: int) -> list[int]: ...

    @abc.abstractmethod
    async def delete_keyframes(self, mkey: int, before_tick: int) -> int: ...
