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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from replay.leaderboards.board import REACHED_SLOTS, Board
from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.metrics import GameMetrics, MatchTally, MetricFn
from replay.leaderboards.operators import Entry
from replay.leaderboards.periods import ALL, event_time, period_key
from replay.store.base import EventBatch

__all__ = ["Changes", "LeaderboardState"]


@dataclass
class Changes:
    position: int
    entries: list[tuple[str, str, str, int, int, int]] = field(default_factory=list)
    """(board, period, owner, value, subscore, reached) rows to upsert."""
    tallies: dict[str, bytes] = field(default_factory=dict)
    """Tallies of running matches to upsert."""
    ended: set[str] = field(default_factory=set)
    """Matches whose tallies are no longer needed."""


class LeaderboardState:
    """Every period of every board, the tallies of running matches, and the position."""

    def __init__(
        self, definitions: Iterable[BoardDefinition], metrics: Mapping[str, GameMetrics]
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
        self.position = 0
        # game -> event code -> [(definition, metric function)]
        self._triggers: dict[str, dict[int, list[tuple[BoardDefinition, MetricFn]]]] = {}
        for d in self.definitions.values():
            code, fn = metrics[d.game].metrics[d.metric]
            self._triggers.setdefault(d.game, {}).setdefault(code, []).append((d, fn))
        self.codes: frozenset[int] = frozenset().union(*(metrics[g].codes for g in self._triggers))
        """Every event code any board reads: the projection scans the log for these only."""

    def board(self, board_id: str, period: str) -> Board | None:
        return self.boards[board_id].get(period)

    def needs_match(self, match_id: str) -> bool:
        return match_id not in self.tallies and match_id not in self.ignored

    def add_match(self, match_id: str, tally: MatchTally | None) -> None:
        """Register a match first seen in the stream (None: its game has no boards)."""
        if tally is None or tally.game not in self._triggers:
            self.ignored.add(match_id)
        else:
            self.tallies[match_id] = tally

    def apply(self, batches: Sequence[EventBatch], through: int | None = None) -> Changes:
        """Fold ``batches`` (positions above ``self.position``, in global order) and
        move the position to ``through`` (default: the last batch's end): a scan
        may have passed over events no board reads. Every match in ``batches``
        must have been added (see :meth:`needs_match`)."""
        folds: dict[tuple[str, str], _Fold] = {}
        dirty: set[str] = set()
        ended: set[str] = set()
        last_seen = self.last_seen
        for b in batches:
            last_seen[b.match_id] = b.first_position + len(b.events) - 1
            t = self.tallies.get(b.match_id)
            if t is None:
                continue  # a game without boards
            gm = self.metrics[t.game]
            codes, triggers = gm.codes, self._triggers[t.game]
            events = b.events
            # Most events (movement, aim, shots) are read by no metric: the scan left them
            # None, and one comprehension skips them at C speed.
            for k in [k for k, e in enumerate(events) if e is not None and e[0] in codes]:
                code, _version, tick, data = events[k]
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
                    for i, (owner, value, subscore) in enumerate(observations):
                        f.owners.append(owner)
                        f.values.append(value)
                        f.subscores.append(subscore)
                        f.reached.append(base + i)
                gm.fold(t, code, data)
                dirty.add(b.match_id)
                if code == gm.end_code:
                    ended.add(b.match_id)
        if batches:
            self.position = batches[-1].last_position
        if through is not None:
            # Invariant: never beyond what was scanned, never backwards.
            self.position = max(self.position, through)
        changes = Changes(self.position, ended=ended)
        for (board_id, period), f in folds.items():
            board = f.flush()
            if board is not None:
                changes.entries += board.rows(board.commit(), (board_id, period))
        for match_id in ended:
            del self.tallies[match_id]
            del last_seen[match_id]
        changes.tallies = {m: self.tallies[m].encode() for m in dirty - ended}
        return changes

    def retire(self, match_ids: Iterable[str]) -> Changes:
        """Forget matches that are over without an end event (interrupted: the store's
        record is read-only and every event of theirs is folded). Boards do not change:
        no event of theirs can come any more. Returns the tallies to delete."""
        ended = {m for m in match_ids if m in self.tallies}
        for m in ended:
            del self.tallies[m]
        self.ignored.difference_update(match_ids)
        for m in match_ids:
            self.last_seen.pop(m, None)
        return Changes(self.position, ended=ended)

    def load_entries(self, rows: Iterable[tuple[str, str, str, int, int, int]]) -> None:
        """Fill boards from stored rows (board, period, owner, value, subscore, reached)."""
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
