"""The leaderboards read model in memory, and the pure fold of events into it.

:meth:`LeaderboardState.apply` takes a chunk of events in global order and
returns exactly what changed (entries, match tallies, position), which the
projection writes in one transaction. Applying a log in any chunking gives the
same boards: each board period's observations of a chunk are folded per owner
with the board's operator (the result of
:func:`~replay.leaderboards.operators.combine` one by one) before the ranked
structure is touched once per board period (:meth:`~replay.leaderboards.board.Board.fold`, then
:meth:`~replay.leaderboards.board.Board.commit`).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from replay.events import SYSTEM_FORKED, SYSTEM_REWOUND
from replay.leaderboards.board import REACHED_SLOTS, Board
from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.metrics import GameMetrics, MatchTally, MetricFn, Observation
from replay.leaderboards.operators import Entry
from replay.leaderboards.periods import ALL, event_time, period_key
from replay.store.base import EventBatch
from replay.timeline import abandoned_ranges

__all__ = ["Changes", "DamagedBatch", "LeaderboardState", "batch_tick"]


class DamagedBatch(NamedTuple):
    """A stored batch the projection could not read or fold, and passed over."""

    position: int
    """Global position of the batch's last event."""
    error: str
    """What was wrong, naming the match and its seq range."""


@dataclass
class Changes:
    position: int
    entries: list[tuple[str, str, str, int, int, int]] = field(default_factory=list)
    """(board, period, owner, value, subscore, reached) rows to upsert."""
    tallies: dict[str, bytes] = field(default_factory=dict)
    """Tallies of running matches to upsert."""
    ended: set[str] = field(default_factory=set)
    """Matches whose tallies are no longer needed."""
    held: dict[str, int] | None = None
    """Every match with batches held back now -> the position of its first held batch
    (replaces the stored set); None when the holds did not change."""
    damaged: list[DamagedBatch] = field(default_factory=list)
    """Batches passed over because they could not be read or folded."""
    refold: bool = False
    """A rewind abandoned (or revived) ticks already counted: the boards must be
    rebuilt (kept with the checkpoint until they are)."""
    marked: list[tuple[str, str, str]] = field(default_factory=list)
    """(board, period, owner) newly fed by a private match (:attr:`LeaderboardState.marked`)."""


_code = operator.itemgetter(0)
_EVER = 1 << 62
"""A tick after every tick: the last tick :func:`abandoned_ranges` walks back from."""


def _abandoned(ranges: Sequence[tuple[int, int]], tick: int) -> bool:
    return any(lo < tick < hi for lo, hi in ranges)


def _refold_needed(t: MatchTally, old: list[tuple[int, int]]) -> bool:
    """Whether the rewinds seen now (``t.rewinds``; before: ``old``) change the fate of
    ticks already counted: a tick counted is now abandoned, or an abandoned tick (passed
    over) is revived by a rewind into its branch. Conservative: a revived branch always
    asks for a refold (it is rare), and a newly abandoned range does when the match has
    counted a tick above its start."""
    before = abandoned_ranges(old, _EVER)
    after = abandoned_ranges(t.rewinds, _EVER)
    revived = any(not any(a <= lo and hi <= b for a, b in after) for lo, hi in before)
    return revived or any(lo < t.last_tick for lo, hi in after if (lo, hi) not in before)


def batch_tick(batch: EventBatch) -> int:
    """The tick of the batch's last event a board reads (a scan leaves the others None)."""
    for e in reversed(batch.events):
        if e is not None:
            return e[2]
    return -1


class LeaderboardState:
    """Every period of every board, the tallies of running matches, and the position."""

    def __init__(
        self,
        definitions: Iterable[BoardDefinition],
        metrics: Mapping[str, GameMetrics],
        known_rewinds: Mapping[str, list[tuple[int, int]]] | None = None,
    ) -> None:
        self.metrics = metrics
        """Game name -> its metrics (validated definitions name only these games)."""
        self.definitions: dict[str, BoardDefinition] = {d.id: d for d in definitions}
        self.boards: dict[str, dict[str, Board]] = {d: {} for d in self.definitions}
        self.tallies: dict[str, MatchTally] = {}
        self.ignored: set[str] = set()
        """Matches of games without metrics (kept in memory only; refetched after a restart)."""
        self.last_seen: dict[str, int] = {}
        """Per match of ``tallies`` and ``ignored``: the end of its last folded batch (memory
        only; tells the projection which matches went quiet)."""
        self.marked: dict[str, dict[str, set[str]]] = {d: {} for d in self.definitions}
        """Per board and period: the owners whose entry a private match fed; their names
        are hidden from anonymous callers (docs/leaderboards.md, "What the boards may
        show"). A mark stays: the entry keeps that match's result."""
        self._new_marks: list[tuple[str, str, str]] = []
        self.held: dict[str, list[EventBatch]] = {}
        """Per match: batches not yet visible to its spectators (visibility.py), in
        order. Once a match has one, every later batch of it waits behind it."""
        self._holds_changed = False
        """Whether :attr:`held` changed since the last :class:`Changes` said it."""
        self.position = 0
        self.changes = 0
        """Counts the calls that may have changed a board or a mark (:meth:`note_change`):
        with :attr:`position`, what an answer read from the boards depends on."""
        # game -> event code -> [(definition, metric function)]
        self._triggers: dict[str, dict[int, list[tuple[BoardDefinition, MetricFn]]]] = {}
        for d in self.definitions.values():
            code, fn = metrics[d.game].metrics[d.metric]
            self._triggers.setdefault(d.game, {}).setdefault(code, []).append((d, fn))
        codes = frozenset().union(*(metrics[g].codes for g in self._triggers))
        self.codes: frozenset[int] = codes | {SYSTEM_REWOUND, SYSTEM_FORKED} if codes else codes
        """Every event code any board reads, and the two that set a match's state (a
        rewind, a fork's start): the projection scans the log for these only."""
        self.known_rewinds = known_rewinds or {}
        """A rebuild's: every match's rewinds in the log it folds (so it never counts an
        abandoned tick, and needs no refold for a rewind it knew of)."""

    def note_change(self) -> None:
        """Boards or marks may have changed (answers read before are out of date)."""
        self.changes += 1

    def board(self, board_id: str, period: str) -> Board | None:
        return self.boards[board_id].get(period)

    def needs_match(self, match_id: str) -> bool:
        return match_id not in self.tallies and match_id not in self.ignored

    def add_match(self, match_id: str, tally: MatchTally | None) -> None:
        """Register a match first seen in the stream (None: its game has no boards)."""
        if tally is None or tally.game not in self._triggers:
            self.ignored.add(match_id)
        else:
            tally.rewinds = list(self.known_rewinds.get(match_id, ()))
            self.tallies[match_id] = tally

    def apply(
        self,
        batches: Sequence[EventBatch],
        through: int | None = None,
        *,
        hold: Callable[[EventBatch], bool] | None = None,
        released: Sequence[EventBatch] = (),
    ) -> Changes:
        """Fold ``batches`` (positions above ``self.position``, in global order) and
        move the position to ``through`` (default: the last batch's end): a scan
        may have passed over events no board reads. Every match in ``batches``
        must have been added (see :meth:`needs_match`).

        A batch for which ``hold`` says so, and every later batch of a match that
        has one held, is kept in :attr:`held` instead (the position still moves past
        it). ``released`` are held batches taken out with :meth:`release`: folded
        first (they are older), each with its own position as ``reached``.

        A batch whose events a metric or the tally cannot fold (a damaged event that
        decoded into the wrong shapes) is passed over and reported in ``damaged``."""
        self.note_change()
        folds: dict[tuple[str, str], _Fold] = {}
        dirty: set[str] = set()
        ended: set[str] = set()
        damaged: list[DamagedBatch] = []
        held = self.held
        last_seen = self.last_seen
        refold = self._see_rewinds(batches, dirty)
        for b, new in itertools.chain(
            zip(released, itertools.repeat(False)), zip(batches, itertools.repeat(True))
        ):
            if new:
                last_seen[b.match_id] = b.first_position + len(b.events) - 1
            t = self.tallies.get(b.match_id)
            if t is None:
                continue  # a game without boards
            if new and (b.match_id in held or (hold is not None and hold(b))):
                held.setdefault(b.match_id, []).append(b)
                self._holds_changed = True
                continue
            try:
                if self._fold_batch(b, t, folds):
                    ended.add(b.match_id)
            except Exception as exc:  # the batch's events are not what the game wrote
                damaged.append(
                    DamagedBatch(
                        b.last_position,
                        f"match {b.match_id!r} seq {b.first_seq}..{b.last_seq}:"
                        f" cannot fold: {exc!r}",
                    )
                )
            dirty.add(b.match_id)
        if batches:
            self.position = max(self.position, batches[-1].last_position)
        if through is not None:
            # Invariant: never beyond what was scanned, never backwards.
            self.position = max(self.position, through)
        changes = Changes(self.position, ended=ended, damaged=damaged, refold=refold)
        changes.marked, self._new_marks = self._new_marks, []
        for (board_id, period), f in folds.items():
            board = f.flush()
            if board is not None:
                changes.entries += board.rows(board.commit(), (board_id, period))
        for match_id in ended:
            del self.tallies[match_id]
            del last_seen[match_id]
            if held.pop(match_id, None) is not None:  # nothing comes after a match's end
                self._holds_changed = True
        changes.tallies = {m: self.tallies[m].encode() for m in dirty - ended}
        if self._holds_changed:
            changes.held = {m: bs[0].first_position for m, bs in held.items()}
            self._holds_changed = False
        return changes

    def _see_rewinds(self, batches: Sequence[EventBatch], dirty: set[str]) -> bool:
        """Note the ``rewound`` events of new ``batches`` in their matches' tallies before
        anything of the chunk is folded, so the ticks they abandon are passed over even
        when they come in the same chunk (or wait, held back, behind the rewind). True
        when a rewind changes the fate of ticks already counted (a refold is due)."""
        refold = False
        for b in batches:
            # In C: drop the events the scan left None, take the codes, look for one.
            if SYSTEM_REWOUND not in map(_code, filter(None, b.events)):
                continue
            for e in filter(None, b.events):
                if e[0] != SYSTEM_REWOUND:
                    continue
                t = self.tallies.get(b.match_id)
                boundary, to_tick = e[2], e[3][1]
                if t is None or any(bt == boundary for bt, _ in t.rewinds):
                    continue  # a game without boards, or a rewind known already
                old = list(t.rewinds)
                t.rewinds.append((boundary, to_tick))
                dirty.add(b.match_id)
                refold |= _refold_needed(t, old)
        return refold

    def _fold_batch(
        self, b: EventBatch, t: MatchTally, folds: dict[tuple[str, str], _Fold]
    ) -> bool:
        """Fold one batch of a match with boards; True when it holds the match's end.
        Events of abandoned ticks (a later rewind went back before them) count for
        nothing; a fork's ``forked`` event seeds its tally."""
        gm = self.metrics[t.game]
        codes, triggers = gm.codes, self._triggers[t.game]
        events = b.events
        over = False
        skip = abandoned_ranges(t.rewinds, _EVER) if t.rewinds else None
        first = events[0]
        forked = b.first_seq == 1 and first is not None and first[0] == SYSTEM_FORKED
        if forked and gm.seed is not None:  # a fork's first event: its tally starts from it
            gm.seed(t, first[3])
        # Most events (movement, aim, shots) are read by no metric: the scan left them
        # None, and one comprehension skips them at C speed.
        for k in [k for k, e in enumerate(events) if e is not None and e[0] in codes]:
            code, _version, tick, data = events[k]
            if skip and _abandoned(skip, tick):
                continue
            t.last_tick = tick
            for d, fn in triggers.get(code, ()):
                period = (
                    ALL
                    if d.reset == "none"
                    else period_key(d.reset, event_time(t.created_at, tick, t.tick_rate))
                )
                f = folds.get((d.id, period))
                if f is None:
                    f = folds[d.id, period] = _Fold(self, d, period)
                observations = fn(t, data, f.lookup)
                if len(observations) > 1:
                    observations.sort()  # the owner-id part of the tie-break
                    del observations[REACHED_SLOTS:]
                base = (b.first_position + k) * REACHED_SLOTS
                if t.private and observations:
                    self._mark(d.id, period, observations)
                for i, (owner, value, subscore) in enumerate(observations):
                    f.owners.append(owner)
                    f.values.append(value)
                    f.subscores.append(subscore)
                    f.reached.append(base + i)
            gm.fold(t, code, data)
            if code == gm.end_code:
                over = True
        return over

    def _mark(self, board_id: str, period: str, observations: list[Observation]) -> None:
        marks = self.marked[board_id].setdefault(period, set())
        for owner, _value, _subscore in observations:
            if owner not in marks:
                marks.add(owner)
                self._new_marks.append((board_id, period, owner))

    def hidden(self, board_id: str, period: str) -> frozenset[str] | set[str]:
        """The owners of the board period hidden from anonymous callers."""
        return self.marked[board_id].get(period) or frozenset()

    def load_marks(self, rows: Iterable[tuple[str, str, str]]) -> None:
        self.note_change()
        for board_id, period, owner in rows:
            if board_id in self.marked:
                self.marked[board_id].setdefault(period, set()).add(owner)

    def mark_rows(self, board_ids: Iterable[str]) -> list[tuple[str, str, str]]:
        return [
            (b, period, owner)
            for b in board_ids
            for period, owners in self.marked[b].items()
            for owner in owners
        ]

    def release(self, match_id: str, edge: int) -> list[EventBatch]:
        """Take out the match's held batches of ticks up to ``edge``, in order."""
        batches = self.held.get(match_id)
        if not batches:
            return []
        n = 0
        while n < len(batches) and batch_tick(batches[n]) <= edge:
            n += 1
        out = batches[:n]
        self._holds_changed |= n > 0
        if n == len(batches):
            del self.held[match_id]
        else:
            del batches[:n]
        return out

    def holds(self, batch: EventBatch) -> bool:
        """Whether ``batch`` is (or would be, when it comes) held back."""
        waiting = self.held.get(batch.match_id)
        return waiting is not None and batch.first_position >= waiting[0].first_position

    def retire(self, match_ids: Iterable[str]) -> Changes:
        """Forget matches that are over without an end event (interrupted: the store's
        record is read-only and every event of theirs is folded). Boards do not change:
        no event of theirs can come any more. Returns the tallies to delete."""
        ended = {m for m in match_ids if m in self.tallies and m not in self.held}
        for m in ended:
            del self.tallies[m]
        self.ignored.difference_update(match_ids)
        for m in match_ids:
            self.last_seen.pop(m, None)
        return Changes(self.position, ended=ended)

    def load_entries(self, rows: Iterable[tuple[str, str, str, int, int, int]]) -> None:
        """Fill boards from stored rows (board, period, owner, value, subscore, reached)."""
        self.note_change()
        grouped: dict[tuple[str, str], tuple[list[str], list[int], list[int], list[int]]] = {}
        for board_id, period, owner, v, s, r in rows:
            if board_id in self.definitions:
                cols = grouped.get((board_id, period))
                if cols is None:
                    cols = grouped[board_id, period] = ([], [], [], [])
                cols[0].append(owner)
                cols[1].append(v)
                cols[2].append(s)
                cols[3].append(r)
        for (board_id, period), cols in grouped.items():
            board = Board(self.definitions[board_id].descending)
            board.load(*cols)
            self.boards[board_id][period] = board

    def rows(self, board_ids: Iterable[str]) -> list[tuple[str, str, str, int, int, int]]:
        return [
            row
            for b in board_ids
            for period, board in self.boards[b].items()
            for row in board.rows(None, (b, period))
        ]

    def load_tallies(self, rows: Mapping[str, bytes]) -> None:
        self.tallies = {m: MatchTally.decode(blob) for m, blob in rows.items()}


class _Fold:
    """One board period's observations of a chunk, gathered in order and folded into the
    board in one vectorised call (:meth:`Board.fold`) at the end of the chunk, or
    earlier when a metric looks up a current entry (so it sees every observation
    before its own)."""

    __slots__ = ("definition", "owners", "period", "reached", "state", "subscores", "values")

    def __init__(self, state: LeaderboardState, definition: BoardDefinition, period: str) -> None:
        self.state = state
        self.definition = definition
        self.period = period
        self.owners: list[str] = []
        self.values: list[int] = []
        self.subscores: list[int] = []
        self.reached: list[int] = []

    def flush(self) -> Board | None:
        """Fold the gathered observations; the board (None: it has none yet)."""
        d = self.definition
        periods = self.state.boards[d.id]
        board = periods.get(self.period)
        if self.owners:
            if board is None:
                board = periods[self.period] = Board(d.descending)
            board.fold(d.operator, self.owners, self.values, self.subscores, self.reached)
            self.owners, self.values, self.subscores, self.reached = [], [], [], []
        return board

    def lookup(self, owner: str) -> Entry | None:
        board = self.flush()
        return board.get(owner) if board is not None else None
