"""The arena step in plain Python, for small matches.

A numpy call costs about a microsecond whatever the size of its arrays, and the
vectorised step (``ArenaRules.step``) makes some sixty of them a tick: in a match
of 2-10 players that overhead, not the players, is the cost of a tick. This module
computes the same step with Python loops over the players and falls back on the
vectorised code only for shots (a few ticks in ten), so a small match costs a
few microseconds per player.

It must give the vectorised step's events exactly (live outcomes are the rules
version's; tests/test_arena_small.py compares both on random states and inputs).
Every operation is the same IEEE double operation as numpy's: ``round`` rounds
half to even like ``np.rint``, comparisons are exact, and the one function whose
last bit could differ, ``hypot`` (the movement clamp), is the same C library
function numpy calls.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, NamedTuple

import replay.games.arena.events as ev
from replay.events import NewEvent
from replay.games.arena.map import HEIGHT_CM, WALLS_CM, WIDTH_CM, spawn_point
from replay.games.arena.settings import AIM_EMIT_THRESHOLD, AIM_UNITS

if TYPE_CHECKING:
    from replay.games.arena.state import ArenaState

SMALL_MATCH = 16
"""Matches of up to this many slots take this path (measured: plain Python is cheaper
than numpy's per-call overhead up to about 24 players)."""

_WALLS = [tuple(float(v) for v in wall) for wall in WALLS_CM]
_SURELY_SHORT = 0.999999
"""Below this squared length, hypot(x, y) <= 1 whatever its last bit: no clamp."""


_CELL_CM = 200
_COLUMNS = WIDTH_CM // _CELL_CM + 1
_Box = tuple[float, float, float, float]


def _wall_grid(radius_cm: int) -> list[tuple[_Box, ...]]:
    """Per cell of ``_CELL_CM`` (row-major), the walls grown by the radius that touch it,
    so a position is tested against the walls near it only (most cells hold none).
    A wall is listed in every cell its box meets, edges included: a conservative list,
    and the exact strict test follows."""
    r = float(radius_cm)
    grown = [(x0 - r, y0 - r, x1 + r, y1 + r) for x0, y0, x1, y1 in _WALLS]
    grid: list[tuple[_Box, ...]] = []
    for row in range(HEIGHT_CM // _CELL_CM + 1):
        lo_y, hi_y = row * _CELL_CM, (row + 1) * _CELL_CM
        for col in range(_COLUMNS):
            lo_x, hi_x = col * _CELL_CM, (col + 1) * _CELL_CM
            grid.append(
                tuple(
                    box
                    for box in grown
                    if box[0] <= hi_x and box[2] >= lo_x and box[1] <= hi_y and box[3] >= lo_y
                )
            )
    return grid


_GRIDS: dict[int, list[tuple[_Box, ...]]] = {}


class SmallStep(NamedTuple):
    """The step up to the shots: what ``ArenaRules`` finishes the tick with."""

    events: list[NewEvent]
    """Respawns, then ``moved``, then ``aimed``."""
    shooters: list[int]
    """Living slots that fire past their cooldown, in slot order."""
    aim: list[int]
    """Every slot's aim after the tick's inputs, in units."""
    x: list[int]
    y: list[int]
    """Positions after movement (those of dead slots are not used)."""


def small_step(
    state: ArenaState,
    tick: int,
    mx: list[float],
    my: list[float],
    aim: list[int],
    fire: list[bool],
) -> SmallStep | None:
    """``ArenaRules.step`` up to the shots, on per-slot lists (``aim`` in units) of a
    started, running match; None for a non-finite movement (the vectorised step)."""
    cfg = state.settings
    n = cfg.max_players
    out: list[NewEvent] = []
    alive = state.alive.tolist()
    present = state.present.tolist()
    respawn_ticks = cfg.respawn_ticks
    for slot, dead_at in enumerate(state.death_tick.tolist()):
        if present[slot] and not alive[slot] and dead_at + respawn_ticks <= tick:
            out.append(NewEvent(ev.RESPAWNED, tick, (slot, *spawn_point(state.seed, tick, slot))))

    # Movement: the clamp of the vectorised step. abs(complex) is the C library's hypot,
    # as np.hypot is (math.hypot is not: it differs in the last bit now and then).
    for s in range(n):
        x, y = mx[s], my[s]
        if not x * x + y * y < _SURELY_SHORT:
            try:
                length = abs(complex(x, y))
            except OverflowError:  # not a validated input after all
                return None
            if length > 1.0:
                mx[s] = x / length
                my[s] = y / length
            elif length != length:  # NaN: not a validated input either
                return None
    radius = cfg.radius_cm
    grid = _GRIDS.get(radius)
    if grid is None:
        grid = _GRIDS[radius] = _wall_grid(radius)
    r = float(radius)
    x_hi, y_hi = WIDTH_CM - r, HEIGHT_CM - r
    step_cm = cfg.speed_cm_per_tick
    xs = state.x.tolist()
    ys = state.y.tolist()
    nx = xs[:]
    ny = ys[:]
    moved: list[int] = []
    for s in range(n):
        if not alive[s]:
            continue  # not targetable and not emitted: its position is not used
        fx = xs[s]
        fy = ys[s]
        # np.clip(np.rint(v), lo, hi): round() is half to even like rint; the int + float
        # sums are the same double operations as numpy's.
        cx = round(fx + mx[s] * step_cm)
        cx = r if cx < r else x_hi if cx > x_hi else cx
        row = int(fy) // _CELL_CM * _COLUMNS
        for x0, y0, x1, y1 in grid[row + int(cx) // _CELL_CM]:
            if x0 < cx < x1 and y0 < fy < y1:
                cx = fx
                break
        cy = round(fy + my[s] * step_cm)
        cy = r if cy < r else y_hi if cy > y_hi else cy
        for x0, y0, x1, y1 in grid[int(cy) // _CELL_CM * _COLUMNS + int(cx) // _CELL_CM]:
            if x0 < cx < x1 and y0 < cy < y1:
                cy = fy
                break
        cx = int(cx)
        cy = int(cy)
        nx[s] = cx
        ny[s] = cy
        if cx != fx or cy != fy:
            moved.append(s)
    if moved:
        k = len(moved)
        out.append(
            NewEvent(
                ev.MOVED,
                tick,
                (
                    bytes(moved),
                    struct.pack(f"<{k}H", *[nx[s] for s in moved]),
                    struct.pack(f"<{k}H", *[ny[s] for s in moved]),
                ),
            )
        )

    old_aim = state.aim.tolist()
    turned: list[int] = []
    lo, hi = AIM_EMIT_THRESHOLD, AIM_UNITS - AIM_EMIT_THRESHOLD  # min(turn, U - turn) >= T
    for s in range(n):
        a = aim[s] = aim[s] % AIM_UNITS
        if alive[s] and lo <= (a - old_aim[s]) % AIM_UNITS <= hi:
            turned.append(s)
    if turned:
        out.append(
            NewEvent(
                ev.AIMED,
                tick,
                (bytes(turned), struct.pack(f"<{len(turned)}H", *[aim[s] for s in turned])),
            )
        )

    cooldown = cfg.cooldown_ticks
    last_fire = state.last_fire.tolist()
    shooters = [s for s in range(n) if fire[s] and alive[s] and tick - last_fire[s] >= cooldown]
    return SmallStep(out, shooters, aim, nx, ny)
