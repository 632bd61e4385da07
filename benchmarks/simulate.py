"""Arena simulation speed: ticks per second for 10 and 64 players, against a naive baseline.

Each measured tick does what the server does for a tick, through the same match
machine (replay/machine.py, driven by the offline generator): bot input
generation (the vectorised BotBrain), input validation, the rules' step,
``evolve`` of its events into the live state, the input audit event and
``encode_batch`` of the tick's events. Baseline, in the same
run, on the same bot inputs: the same step written the obvious way, as Python
loops over players (movement, wall collision, hitscan) - what the numpy
struct-of-arrays design is meant to beat. Three rows per size: ``naive``, ``numpy``
(the vectorised step at every size) and ``arena`` (what the server runs: the plain
Python step up to 16 slots, replay/games/arena/small.py). Also printed: the bytes of events
per player-second, and a replay seek's fold (decode + evolve of 300 ticks of
the 64-player match), whose target is well under 5 ms.

Target: 64 players at 30 Hz >= 50x real time on one core.

    python benchmarks/simulate.py [--ticks N]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import replay.games.arena.events as ev
from replay.codec import decode_batch, encode_batch
from replay.events import NewEvent
from replay.games.arena.map import HEIGHT_CM, WALLS_CM, WIDTH_CM, spawn_point
from replay.games.arena.rules import ArenaRules
from replay.games.arena.settings import AIM_EMIT_THRESHOLD, AIM_UNITS
from replay.offline import simulate

TARGET_X_REALTIME = 50.0
WALLS = [tuple(map(float, w)) for w in WALLS_CM]


def naive_step(rules: ArenaRules, state, tick, mx, my, aim, fire) -> list[NewEvent]:
    """ArenaRules.step written as Python loops over players (the baseline)."""
    cfg = state.settings
    out: list[NewEvent] = []
    cap = cfg.max_players
    for s in range(cap):
        due = state.death_tick[s] + cfg.respawn_ticks <= tick
        if state.present[s] and not state.alive[s] and due:
            out.append(NewEvent(ev.RESPAWNED, tick, (s, *spawn_point(state.seed, tick, s))))
    r = float(cfg.radius_cm)
    step_cm = cfg.speed_cm_per_tick

    def blocked(px: float, py: float) -> bool:
        return any(x0 - r < px < x1 + r and y0 - r < py < y1 + r for x0, y0, x1, y1 in WALLS)

    nx, ny, moved = [0] * cap, [0] * cap, []
    for s in range(cap):
        x, y = float(state.x[s]), float(state.y[s])
        nx[s], ny[s] = int(x), int(y)
        if not state.alive[s]:
            continue
        dx, dy = float(mx[s]), float(my[s])
        length = math.hypot(dx, dy)
        if length > 1.0:
            dx, dy = dx / length, dy / length
        cx = min(max(round(x + dx * step_cm), r), WIDTH_CM - r)
        cy = min(max(round(y + dy * step_cm), r), HEIGHT_CM - r)
        if blocked(cx, y):
            cx = x
        if blocked(cx, cy):
            cy = y
        nx[s], ny[s] = int(cx), int(cy)
        if (nx[s], ny[s]) != (int(x), int(y)):
            moved.append(s)
    if moved:
        data = (
            bytes(moved),
            np.array([nx[s] for s in moved], "<u2").tobytes(),
            np.array([ny[s] for s in moved], "<u2").tobytes(),
        )
        out.append(NewEvent(ev.MOVED, tick, data))
    turned = []
    for s in range(cap):
        turn = (int(aim[s]) - int(state.aim[s])) % AIM_UNITS
        if state.alive[s] and min(turn, AIM_UNITS - turn) >= AIM_EMIT_THRESHOLD:
            turned.append(s)
    if turned:
        values = np.array([aim[s] for s in turned], "<u2").tobytes()
        out.append(NewEvent(ev.AIMED, tick, (bytes(turned), values)))
    health = [int(h) for h in state.health]
    for s in range(cap):
        if not (state.alive[s] and fire[s] and tick - state.last_fire[s] >= cfg.cooldown_ticks):
            continue
        out.append(NewEvent(ev.FIRED, tick, (s, int(aim[s]))))
        angle = int(aim[s]) * 2 * math.pi / AIM_UNITS
        dx, dy = math.cos(angle), math.sin(angle)
        sx, sy = nx[s], ny[s]
        limit = cfg.range_cm
        for x0, y0, x1, y1 in WALLS:  # slab test per wall
            ddx = dx if dx != 0 else 1e-12
            ddy = dy if dy != 0 else 1e-12
            t1, t2 = (x0 - sx) / ddx, (x1 - sx) / ddx
            t3, t4 = (y0 - sy) / ddy, (y1 - sy) / ddy
            t_in = max(min(t1, t2), min(t3, t4))
            t_out = min(max(t1, t2), max(t3, t4))
            if t_out >= max(t_in, 0.0):
                limit = min(limit, max(t_in, 0.0))
        best, best_t = -1, math.inf
        for t in range(cap):
            if t == s or not state.alive[t]:
                continue
            rx, ry = nx[t] - sx, ny[t] - sy
            along = rx * dx + ry * dy
            if 0 < along <= limit and rx * rx + ry * ry - along * along <= r * r and along < best_t:
                best, best_t = t, along
        if best >= 0 and health[best] > 0:
            health[best] = max(0, health[best] - cfg.damage)
            out.append(NewEvent(ev.HIT, tick, (s, best, cfg.damage, health[best])))
            if health[best] == 0:
                out.append(NewEvent(ev.KILLED, tick, (s, best)))
    return out


class NumpyArena(ArenaRules):
    """Arena with the vectorised step at every size (no plain-Python path for small
    matches): everything else (the machine, validation, the fold) equal."""

    def _tick_small(self, state, tick, inputs):  # type: ignore[no-untyped-def]
        return None


class NaiveArena(NumpyArena):
    """Arena with the naive step: everything else equal."""

    def step(self, state, tick, mx, my, aim, fire):  # type: ignore[override]
        return naive_step(self, state, tick, mx, my, aim, fire)


IMPLS = {"naive": NaiveArena, "numpy": NumpyArena, "arena": ArenaRules}
"""``arena``: what the server runs (plain Python up to SMALL_MATCH slots, numpy above)."""


def run(players: int, ticks: int, impl: str) -> tuple[float, float, int, list[tuple[bytes, int]]]:
    """Seconds for ``ticks`` ticks after the start (the offline generator: the match
    machine with the game's bots), seconds in the rules' ``tick`` alone, encoded bytes,
    and the encoded batches."""
    rules = IMPLS[impl]()
    settings = rules.bot_match_settings(players, 3600.0, 30)
    in_step = 0.0
    clock = time.perf_counter
    step = type(rules).tick

    def timed_step(self, *args):  # type: ignore[no-untyped-def]
        nonlocal in_step
        t0 = clock()
        try:
            return step(self, *args)
        finally:
            in_step += clock() - t0

    rules.tick = timed_step.__get__(rules)  # type: ignore[method-assign]
    nbytes = 0
    batches = []
    generator = simulate(rules, players, settings, 1, max_ticks=ticks + 1)
    next(generator)  # tick 1: the joins and the start
    in_step = 0.0
    started = clock()
    for out in generator:
        if out.events:
            blob = encode_batch(out.events)
            nbytes += len(blob)
            batches.append((blob, out.tick))
    return clock() - started, in_step, nbytes, batches


def fold_ms(batches: list[tuple[bytes, int]], players: int) -> float:
    """Best of 5: decode + one evolve call over 300 ticks from the middle of the match."""
    rules = ArenaRules()
    settings = rules.bot_match_settings(players, 3600.0, 30)
    base = rules.initial_state(settings, 1)
    half = len(batches) // 2
    for blob, tick in batches[:half]:
        rules.evolve(base, decode_batch(blob, tick), tick)
    window = batches[half : half + 300]
    best = math.inf
    for _ in range(5):
        state = rules.copy_state(base)
        started = time.perf_counter()
        events = [e for blob, tick in window for e in decode_batch(blob, tick)]
        rules.evolve(state, events, window[-1][1])
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=3000, help="ticks per run (100 s at 30 Hz)")
    args = parser.parse_args()
    print(f"arena simulation, {args.ticks} ticks at 30 Hz per run (bots + step + evolve + encode)")
    header = ("players", "impl", "ticks/s", "x real", "B/player-s", "vs naive", "step-only")
    print("{:>7} {:>6} {:>8} {:>7} {:>10} {:>9} {:>10}".format(*header))
    results = {}
    for players in (10, 64):
        naive_s, naive_step_s, _, _ = run(players, args.ticks, "naive")
        numpy_s, numpy_step_s, _, _ = run(players, args.ticks, "numpy")
        vec_s, vec_step_s, nbytes, batches = run(players, args.ticks, "arena")
        results[players] = (vec_s, batches)
        seconds = args.ticks / 30
        for impl, spent, in_step in (
            ("naive", naive_s, naive_step_s),
            ("numpy", numpy_s, numpy_step_s),
            ("arena", vec_s, vec_step_s),
        ):
            print(
                f"{players:>7} {impl:>6} {args.ticks / spent:>8.0f} {seconds / spent:>7.1f}"
                f" {nbytes / (players * seconds):>10.1f} {naive_s / spent:>8.2f}x"
                f" {naive_step_s / in_step:>9.2f}x"
            )
    vec_s, batches = results[64]
    x_real = args.ticks / 30 / vec_s
    verdict = "met" if x_real >= TARGET_X_REALTIME else "NOT met"
    print(f"target 64 players >= {TARGET_X_REALTIME:.0f}x real time: {x_real:.1f}x, {verdict}")
    print(f"replay fold of 300 ticks, 64 players (decode + evolve): {fold_ms(batches, 64):.2f} ms")
    print(
        "vs naive: whole tick against the naive run; step-only: the rules' tick alone."
        " arena: what the server runs (plain Python up to 16 slots, numpy above)"
    )
    print("(2 shared cores: figures are noisy; compare the ratios within one run)")


if __name__ == "__main__":
    main()
