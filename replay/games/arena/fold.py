"""Folding arena events into a state: the replay engine's hot path.

Writing each event into the arrays as it comes costs a few numpy calls per
event, which dominates a seek over hundreds of ticks. Instead the fold queues
every write of a *run* of events and applies each field once, with "the last
write of a slot wins" (the order the events had):

* positions and aim are written by packed per-tick arrays (``moved``,
  ``aimed``) and by single players (``spawned``/``respawned``, ``fired``):
  their bytes are concatenated and applied with one argsort;
* scalar per-slot fields (health, alive, cooldown and death ticks) go through
  dicts, whose assignment is last-write-wins by nature; counters add up.

A run is cut only by ``joined``/``left``, which reset a whole slot. So folding
300 ticks of a 64-player match costs one Python step per event plus a few
dozen numpy calls. Short event lists (one live tick) are applied one by one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

import replay.games.arena.events as ev
from replay.events import SYSTEM_FIRST, EventCatalog, NewEvent
from replay.games.arena.settings import KILL_SCORE
from replay.games.arena.state import ArenaState

_U8 = np.dtype(np.uint8)
_U16 = np.dtype("<u2")


def _last_per_slot(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ``slots``, which is in event order) of each slot's last entry,
    and of that slot's entry just before it (-1 if none)."""
    order = np.argsort(slots, kind="stable")  # stable: event order kept within a slot
    s = slots[order]
    last = np.empty(s.size, dtype=bool)
    last[-1] = True
    np.not_equal(s[1:], s[:-1], out=last[:-1])
    lp = np.flatnonzero(last)
    has_prev = (lp > 0) & (s[lp - 1] == s[lp])
    prev = np.where(has_prev, order[np.maximum(lp - 1, 0)], -1)
    return order[lp], prev


class _Run:
    """The queued writes of one run of events."""

    def __init__(self) -> None:
        self.pos_slots: list[bytes] = []
        self.pos_x: list[bytes] = []
        self.pos_y: list[bytes] = []
        self.pos_len: list[int] = []
        self.pos_tick: list[int] = []
        self.pos_move: list[bool] = []  # False: a spawn (velocity resets to 0)
        self.aim_slots: list[bytes] = []
        self.aim_values: list[bytes] = []
        self.health: dict[int, int] = {}
        self.alive: dict[int, bool] = {}
        self.last_fire: dict[int, int] = {}
        self.death_tick: dict[int, int] = {}
        self.kills: dict[int, int] = {}  # a kill is also a point of score
        self.deaths: dict[int, int] = {}

    def apply(self, state: ArenaState) -> None:
        if self.pos_slots:
            self._apply_positions(state)
        if self.aim_slots:
            slots = np.frombuffer(b"".join(self.aim_slots), _U8)
            aims = np.frombuffer(b"".join(self.aim_values), _U16)
            k, _ = _last_per_slot(slots)
            state.aim[slots[k]] = aims[k]
        for name in ("health", "alive", "last_fire", "death_tick"):
            writes: dict[int, Any] = getattr(self, name)
            if writes:
                getattr(state, name)[list(writes)] = list(writes.values())
        if self.kills:
            slots = list(self.kills)
            kills = np.array(list(self.kills.values()), dtype=np.int32)
            state.kills[slots] += kills
            state.score[slots] += kills * KILL_SCORE
        if self.deaths:
            state.deaths[list(self.deaths)] += list(self.deaths.values())
        self.__init__()  # type: ignore[misc]

    def _apply_positions(self, state: ArenaState) -> None:
        slots = np.frombuffer(b"".join(self.pos_slots), _U8)
        xs = np.frombuffer(b"".join(self.pos_x), _U16).astype(np.int32)
        ys = np.frombuffer(b"".join(self.pos_y), _U16).astype(np.int32)
        ticks = np.repeat(np.array(self.pos_tick, np.int32), self.pos_len)
        moves = np.repeat(np.array(self.pos_move, bool), self.pos_len)
        k, prev = _last_per_slot(slots)
        s = slots[k]
        has_prev = prev >= 0
        px = np.where(has_prev, xs[prev], state.x[s])
        py = np.where(has_prev, ys[prev], state.y[s])
        # Velocity is the last movement delta; a spawn resets it to 0.
        state.vx[s] = np.where(moves[k], xs[k] - px, 0)
        state.vy[s] = np.where(moves[k], ys[k] - py, 0)
        state.x[s] = xs[k]
        state.y[s] = ys[k]
        state.move_tick[s] = ticks[k]


SHORT = 24
"""Up to this many events (a live tick) are applied one by one: queueing them would
cost more numpy calls than it saves. Both paths give identical states (the property
test in tests/test_rules_exactness.py folds tick by tick and in long chunks)."""


FEW_SLOTS = 16
"""A live tick's ``moved``/``aimed`` of up to this many slots is written slot by slot."""


def _fits(data: tuple[Any, ...], fields: int) -> bool:
    """Slot bytes and uint16 columns that agree in length (otherwise the numpy path
    raises its ValueError, as it always did)."""
    n = 2 * len(data[0])
    return len(data[1]) == n and (fields == 2 or len(data[2]) == n)


def _apply_one(state: ArenaState, code: int, t: int, data: tuple[Any, ...]) -> None:
    if code == ev.MOVED and len(data[0]) <= FEW_SLOTS and _fits(data, 3):
        # Scalar writes: cheaper than a dozen numpy calls for a few slots. A slot listed
        # twice takes its velocity from its previous entry, as the run path does.
        count = len(data[0])
        x, y, vx, vy, move_tick = state.x, state.y, state.vx, state.vy, state.move_tick
        for slot, nx, ny in zip(
            data[0],
            struct.unpack(f"<{count}H", data[1]),
            struct.unpack(f"<{count}H", data[2]),
            strict=True,
        ):
            vx[slot] = nx - int(x[slot])
            vy[slot] = ny - int(y[slot])
            x[slot] = nx
            y[slot] = ny
            move_tick[slot] = t
    elif code == ev.MOVED:
        s = np.frombuffer(data[0], _U8)
        xs = np.frombuffer(data[1], _U16)
        ys = np.frombuffer(data[2], _U16)
        state.vx[s] = xs - state.x[s]
        state.vy[s] = ys - state.y[s]
        state.x[s] = xs
        state.y[s] = ys
        state.move_tick[s] = t
    elif code == ev.AIMED and len(data[0]) <= FEW_SLOTS and _fits(data, 2):
        aim = state.aim
        for slot, value in zip(data[0], struct.unpack(f"<{len(data[0])}H", data[1]), strict=True):
            aim[slot] = value
    elif code == ev.AIMED:
        state.aim[np.frombuffer(data[0], _U8)] = np.frombuffer(data[1], _U16)
    elif code == ev.FIRED:
        slot, aim = data
        state.last_fire[slot] = t
        state.aim[slot] = aim
    elif code == ev.HIT:
        state.health[data[1]] = data[3]
    elif code == ev.KILLED:
        killer, victim = data
        state.alive[victim] = False
        state.death_tick[victim] = t
        state.deaths[victim] += 1
        state.kills[killer] += 1
        state.score[killer] += KILL_SCORE
    elif code == ev.SPAWNED or code == ev.RESPAWNED:
        slot, x, y = data
        state.alive[slot] = True
        state.health[slot] = state.settings.max_health
        state.x[slot] = x
        state.y[slot] = y
        state.vx[slot] = 0
        state.vy[slot] = 0
        state.move_tick[slot] = t
    else:
        _apply_rare(state, code, t, data)


def _apply_rare(state: ArenaState, code: int, t: int, data: tuple[Any, ...]) -> None:
    if code == ev.JOINED:
        slot, player, name = data
        state.reset_slot(slot)
        state.present[slot] = True
        state.players[slot] = player
        state.names[slot] = name
        state.slot_of[player] = slot
    elif code == ev.LEFT:
        (slot,) = data
        player = state.players[slot]
        if player is not None:
            del state.slot_of[player]
        state.players[slot] = None
        state.names[slot] = ""
        state.reset_slot(slot)
    elif code == ev.MATCH_STARTED:
        state.started_tick = t
    elif code == ev.MATCH_ENDED:
        state.ended = True
        state.winner, state.end_reason = data
    # ev.CHAT is an outcome for the timeline only; it changes no state.


def _current(
    events: Sequence[tuple[int, int, int, tuple[Any, ...]] | NewEvent], catalog: EventCatalog
) -> Iterator[tuple[int, int, tuple[Any, ...]]]:
    """``(code, tick, data)`` of each game event, stored or new, upcast to the current
    version (system events are skipped)."""
    current = catalog.current
    for e in events:
        if isinstance(e, NewEvent):
            code, t, data, version = e
        else:
            code, version, t, data = e
        if (code, version) not in current:
            if code >= SYSTEM_FIRST:
                continue  # matchreplay's own events change no game state
            data, version = catalog.upcast(code, version, data)
        yield code, t, data


def fold(
    state: ArenaState,
    events: Sequence[tuple[int, int, int, tuple[Any, ...]] | NewEvent],
    to_tick: int,
    catalog: EventCatalog,
) -> ArenaState:
    if len(events) <= SHORT:
        for code, t, data in _current(events, catalog):
            _apply_one(state, code, t, data)
        state.tick = to_tick
        return state
    run = _Run()
    max_health = state.settings.max_health
    for code, t, data in _current(events, catalog):
        if code == ev.MOVED:
            slots, x, y = data
            run.pos_slots.append(slots)
            run.pos_x.append(x)
            run.pos_y.append(y)
            run.pos_len.append(len(slots))
            run.pos_tick.append(t)
            run.pos_move.append(True)
        elif code == ev.AIMED:
            run.aim_slots.append(data[0])
            run.aim_values.append(data[1])
        elif code == ev.FIRED:
            slot, aim = data
            run.last_fire[slot] = t
            run.aim_slots.append(bytes((slot,)))
            run.aim_values.append(aim.to_bytes(2, "little"))
        elif code == ev.HIT:
            run.health[data[1]] = data[3]
        elif code == ev.KILLED:
            killer, victim = data
            run.alive[victim] = False
            run.death_tick[victim] = t
            run.deaths[victim] = run.deaths.get(victim, 0) + 1
            run.kills[killer] = run.kills.get(killer, 0) + 1
        elif code == ev.SPAWNED or code == ev.RESPAWNED:
            slot, x, y = data
            run.alive[slot] = True
            run.health[slot] = max_health
            run.pos_slots.append(bytes((slot,)))
            run.pos_x.append(x.to_bytes(2, "little"))
            run.pos_y.append(y.to_bytes(2, "little"))
            run.pos_len.append(1)
            run.pos_tick.append(t)
            run.pos_move.append(False)
        else:  # joined and left reset a whole slot: apply the run before them
            run.apply(state)
            _apply_rare(state, code, t, data)
    run.apply(state)
    state.tick = to_tick
    return state
