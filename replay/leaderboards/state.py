"""The leaderboards read model in memory, and the pure fold of events into it.

:meth:`LeaderboardState.apply` takes a chunk of events in global order and
returns exactly what changed (entries, match tallies, position), which the
projection writes in one transaction. Applying a log in any chunking gives the
same boards: each owner's observations of a chunk are folded one by one with
:func:`~replay.leaderboards.operators.combine` before the ranked structure is
touched once per owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from replay.leaderboards.board import REACHED_SLOTS, Board, Entry
from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.metrics import MatchTally, MetricFn, game_metrics
from replay.leaderboards.operators import combine
from replay.leaderboards.periods import event_time, period_key
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

    def __init__(self, definitions: Iterable[BoardDefinition]) -> None:
        self.definitions: dict[str, BoardDefinition] = {d.id: d for d in definitions}
        self.boards: dict[str, dict[str, Board]] = {d: {} for d in self.definitions}
        self.tallies: dict[str, MatchTally] = {}
        self.ignored: set[str] = set()
        """Matches of games without metrics (kept in memory only; refetched after a restart)."""
        self.position = 0
        # game -> event code -> [(definition, metric function)]
        self._triggers: dict[str, dict[int, list[tuple[BoardDefinition, MetricFn]]]] = {}
        for d in self.definitions.values():
            code, fn = game_metrics(d.game).metrics[d.metric]
            self._triggers.setdefault(d.game, {}).setdefault(code, []).append((d, fn))
        self.codes: frozenset[int] = frozenset().union(
            *(game_metrics(g).codes for g in self._triggers)
        )
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
        pending: dict[tuple[str, str], dict[str, Entry]] = {}
        dirty: set[str] = set()
        ended: set[str] = set()
        for b in batches:
            t = self.tallies.get(b.match_id)
            if t is None:
                continue  # a game without boards
            gm = game_metrics(t.game)
            codes, triggers = gm.codes, self._triggers[t.game]
            events = b.events
            # Most events (movement, aim, shots) are read by no metric: one comprehension
            # skips them at C speed.
            for k in [k for k, e in enumerate(events) if e[0] in codes]:
                code, _version, tick, data = events[k]
                for d, fn in triggers.get(code, ()):
                    period = period_key(d.reset, event_time(t.created_at, tick, t.tick_rate))
                    pend = pending.setdefault((d.id, period), {})
                    board = self.boards[d.id].get(period)

                    def lookup(owner: str, pend: dict[str, Entry] = pend, b: Board | None = board):
                        got = pend.get(owner)
                        return got if got is not None or b is None else b.get(owner)

                    observations = fn(t, data, lookup)
                    if len(observations) > 1:
                        observations.sort()  # the owner-id part of the tie-break
                    base = (b.first_position + k) * REACHED_SLOTS
                    for i, (owner, value, subscore) in enumerate(observations[:REACHED_SLOTS]):
                        old = lookup(owner)
                        new = combine(d.operator, d.descending, old, value, subscore, base + i)
                        if new is not None:
                            pend[owner] = new
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
        for (board_id, period), pend in pending.items():
            if not pend:
                continue
            board = self.boards[board_id].get(period)
            if board is None:
                board = self.boards[board_id][period] = Board(self.definitions[board_id].descending)
            board.apply(pend)
            changes.entries.extend((board_id, period, o, *e) for o, e in pend.items())
        for match_id in ended:
            del self.tallies[match_id]
        changes.tallies = {m: self.tallies[m].encode() for m in dirty - ended}
        return changes

    def load_entries(self, rows: Iterable[tuple[str, str, str, int, int, int]]) -> None:
        """Fill boards from stored rows (board, period, owner, value, subscore, reached)."""
        grouped: dict[tuple[str, str], dict[str, Entry]] = {}
        for board_id, period, owner, v, s, r in rows:
            if board_id in self.definitions:
                grouped.setdefault((board_id, period), {})[owner] = Entry(v, s, r)
        for (board_id, period), entries in grouped.items():
            board = Board(self.definitions[board_id].descending)
            board.load(entries)
            self.boards[board_id][period] = board

    def rows(self, board_ids: Iterable[str]) -> list[tuple[str, str, str, int, int, int]]:
        return [
            (b, period, o, *e)
            for b in board_ids
            for period, board in self.boards[b].items()
            for o, e in board.items()
        ]

    def load_tallies(self, rows: Mapping[str, bytes]) -> None:
        self.tallies = {m: MatchTally.decode(blob) for m, blob in rows.items()}
