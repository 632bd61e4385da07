"""Timeline markers and highlight clips, derived from a match's events.

Markers (for a scrubber) are every event whose type the game's catalog marks
``notable`` (kills, joins and leaves, match start and end, ...), plus
``multi_kill`` markers: a kill that brings one killer's streak of kills, each
within ``multi_kill_window_seconds`` of the previous one, to 2 or more. A
multi-kill marker is emitted at every kill of the streak from the second on
(``count`` = 2, 3, ...), so a live index never has to revise a marker.

Which event is a kill and which one seats a player, the game declares
(``Rules.kill_event``, ``Rules.seat_event``); a game without kills gets its
notable markers only, and a kill marker is one of its declared kill event.

The index of a match is built by one pass over its events and kept in memory
(about 150 bytes per marker; a 30-minute 64-player match has a few thousand).
For a match still being recorded it is extended from where it stopped.

Rewinds (docs/replay.md "Rewinds and forks"): a ``rewound`` event of tick B back to
tick T adds a ``rewound`` marker at B and flags every marker of the abandoned ticks
T + 1 .. B - 1 (``abandoned``); :meth:`Timeline.markers` leaves those out unless asked,
so a scrubber shows the surviving timeline and can still show the branch, marked. A
kill clip carries its kill's flag and never starts before the last rewind tick before
its kill (the ticks before it belong to another branch).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from replay.engine import FOLD_WINDOW_TICKS, ReplayEngine
from replay.events import SYSTEM_REWOUND
from replay.source import read_events

__all__ = ["Clip", "Marker", "Timeline", "abandoned_ranges", "marker_json"]

MULTI_KILL = "multi_kill"
REWOUND = "rewound"


@dataclass(frozen=True, slots=True)
class Marker:
    tick: int
    kind: str
    """The event type's name, or ``multi_kill``."""
    data: dict[str, Any]
    """The event's fields by name. A kill's also hold ``killer`` and ``victim`` (seats,
    whatever the game's fields are named) and ``killer_player``/``victim_player`` (ids);
    multi-kills hold ``killer``, ``killer_player``, ``count`` and ``first_tick``."""
    kill: bool = False
    """Whether this marker is a kill or a multi-kill (it has a ``killer`` to follow)."""
    abandoned: bool = False
    """On a branch a later rewind abandoned: not part of the surviving timeline."""


def marker_json(marker: Marker) -> dict[str, Any]:
    """A marker as the protocol sends it (docs/protocol.md, MARKERS): ``{tick, kind,
    data}``, plus ``"abandoned": true`` for one of an abandoned branch."""
    out = {"tick": marker.tick, "kind": marker.kind, "data": marker.data}
    if marker.abandoned:
        out["abandoned"] = True
    return out


@dataclass(frozen=True, slots=True)
class Clip:
    """A highlight: play ``from_tick..to_tick`` following ``follow`` (a player slot)."""

    match_id: str
    from_tick: int
    to_tick: int
    follow: int
    follow_player: str | None
    abandoned: bool = False
    """Its kill is on a branch a later rewind abandoned (the marker's flag)."""


@dataclass
class _Index:
    markers: list[Marker] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)
    """Invariant: ``ticks[i] == markers[i].tick``, non-decreasing (markers are appended in
    event order and ticks never go back within a match)."""
    scanned_to: int = -1
    """Every event with tick <= scanned_to has been indexed."""
    players: dict[int, str] = field(default_factory=dict)
    streaks: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    """killer slot -> (first kill tick, last kill tick, count) of the running streak."""
    rewinds: list[tuple[int, int]] = field(default_factory=list)
    """``(B, T)`` of each ``rewound`` event so far, in stream order."""


def abandoned_ranges(rewinds: Sequence[tuple[int, int]], last_tick: int) -> list[tuple[int, int]]:
    """The abandoned branches of a match, as open tick ranges ``(T, B)``: walking back
    from ``last_tick``, a rewind at B (to T) met on the way jumps back to T, and the
    ticks between are abandoned. A rewind inside an abandoned branch abandons nothing
    more, and a rewind to a tick of an earlier branch revives that branch up to T."""
    ranges: list[tuple[int, int]] = []
    cursor = last_tick
    for boundary, to_tick in reversed(rewinds):
        if boundary <= cursor:
            ranges.append((to_tick, boundary))
            cursor = to_tick
    return ranges


class Timeline:
    def __init__(self, engine: ReplayEngine, *, multi_kill_window_seconds: float = 4.0) -> None:
        self.engine = engine
        self.multi_kill_window_seconds = multi_kill_window_seconds
        self._indexes: dict[str, _Index] = {}

    async def markers(
        self,
        match_id: str,
        from_tick: int = 0,
        to_tick: int | None = None,
        *,
        kinds: Sequence[str] | None = None,
        abandoned: bool = False,
    ) -> list[Marker]:
        """Markers with ``from_tick <= tick <= to_tick`` (to the latest tick when None) on
        the surviving timeline; ``abandoned``: those of abandoned branches too (flagged)."""
        index = await self._index(match_id)
        hi = bisect.bisect_right(index.ticks, to_tick) if to_tick is not None else None
        found = index.markers[bisect.bisect_left(index.ticks, from_tick) : hi]
        return [
            m
            for m in found
            if (kinds is None or m.kind in kinds) and (abandoned or not m.abandoned)
        ]

    async def kill_clip(self, match_id: str, kill: Marker, seconds: float = 5.0) -> Clip:
        """The ``seconds`` before a kill (or multi-kill) up to it, following the killer."""
        if not kill.kill:
            raise ValueError(f"a {kill.kind!r} marker has no killer to follow")
        record = await self.engine.match(match_id)
        start = max(0, kill.tick - round(seconds * record.tick_rate))
        if kill.kind == MULTI_KILL:
            start = min(start, kill.data["first_tick"])
        # Never across a rewind: the stream ticks before its tick B are another branch
        # (the kill's own history before B is the rewind's target, not those ticks).
        index = await self._index(match_id)
        for boundary, _to in index.rewinds:
            if start < boundary <= kill.tick:
                start = boundary
        return Clip(
            match_id,
            start,
            kill.tick,
            kill.data["killer"],
            kill.data.get("killer_player"),
            kill.abandoned,
        )

    # -- the index -------------------------------------------------------------------

    async def _index(self, match_id: str) -> _Index:
        index = self._indexes.setdefault(match_id, _Index())
        record = await self.engine.match(match_id, refresh=True)
        if index.scanned_to >= record.last_tick:
            return index
        rules = self.engine.rules(record)
        # The stream's catalog: matchreplay's own notable events (an admin's action, a
        # takeover by another node, a fork's origin) are markers too.
        catalog = rules.stream_catalog
        window = round(self.multi_kill_window_seconds * record.tick_rate)
        seat, kill = rules.seat_event, rules.kill_event
        seated = seat.code if seat is not None else None
        killed = kill.code if kill is not None else None
        notable = {t.code for t in catalog if t.notable}
        start = index.scanned_to + 1
        while start <= record.last_tick:
            end = min(record.last_tick, start + FOLD_WINDOW_TICKS - 1)
            for type_, _version, tick, data in await read_events(
                self.engine.source, match_id, start, end
            ):
                if type_ == SYSTEM_REWOUND:
                    self._rewound(index, tick, data)
                    continue
                if type_ == seated:
                    fields = dict(zip(catalog[type_].fields, data, strict=False))
                    index.players[fields[seat.seat]] = fields[seat.player]  # type: ignore[union-attr]
                if type_ not in notable and type_ != killed:
                    continue
                t = catalog[type_]
                fields = dict(zip(t.fields, data, strict=False))
                if type_ == killed:
                    killer, victim = fields[kill.killer], fields[kill.victim]  # type: ignore[union-attr]
                    self._add_kill(index, tick, t.name, fields, killer, victim, window)
                else:
                    self._add(index, Marker(tick, t.name, fields))
            index.scanned_to = end
            start = end + 1
        return index

    def _add_kill(
        self,
        index: _Index,
        tick: int,
        kind: str,
        fields: dict[str, Any],
        killer: int | None,
        victim: int,
        window: int,
    ) -> None:
        fields["killer"], fields["victim"] = killer, victim
        fields["killer_player"] = index.players.get(killer)  # type: ignore[arg-type]
        fields["victim_player"] = index.players.get(victim)
        self._add(index, Marker(tick, kind, fields, kill=True))
        if killer is None or killer < 0 or killer == victim:
            return  # no killer (the map, a suicide): not part of a streak
        first, last, count = index.streaks.get(killer, (tick, tick, 0))
        if count and tick - last > window:
            first, count = tick, 0
        count += 1
        index.streaks[killer] = (first, tick, count)
        if count >= 2:
            data = {
                "killer": killer,
                "killer_player": fields["killer_player"],
                "count": count,
                "first_tick": first,
            }
            self._add(index, Marker(tick, MULTI_KILL, data, kill=True))

    def _rewound(self, index: _Index, tick: int, data: tuple[Any, ...]) -> None:
        """Mark the rewind and re-flag every marker by the branches abandoned now."""
        from_tick, to_tick, actor, reason, at_ms = data[:5]
        index.streaks.clear()  # a streak does not run across a rewind
        fields = {"from_tick": from_tick, "to_tick": to_tick, "actor": actor, "reason": reason}
        self._add(index, Marker(tick, REWOUND, fields | {"at_ms": at_ms}))
        index.rewinds.append((tick, to_tick))
        ranges = abandoned_ranges(index.rewinds, tick)
        for i, marker in enumerate(index.markers):
            flag = any(lo < marker.tick < hi for lo, hi in ranges)
            if marker.abandoned != flag:
                index.markers[i] = dataclasses.replace(marker, abandoned=flag)

    @staticmethod
    def _add(index: _Index, marker: Marker) -> None:
        index.markers.append(marker)
        index.ticks.append(marker.tick)
