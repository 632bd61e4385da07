"""A vectorised bot brain: inputs for every bot slot at once, from the state alone.

Bots wander between random points, sometimes stop, turn to face the nearest
visible-ish enemy in range (with aiming noise) and shoot at it. The brain owns
its own seeded generator: bots are input producers, not rules, so their
randomness never needs to be replayed (their outcomes are events). It is pure
with respect to the outside world (no I/O, no clock) and independent of the
store, so the network bots and the offline generator share it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from replay.games.arena.map import HEIGHT_CM, WIDTH_CM
from replay.games.arena.settings import AIM_UNITS, ArenaSettings
from replay.games.arena.state import ArenaState
from replay.rules import Command

_TAU = 2.0 * np.pi


class BotInputs(NamedTuple):
    """Raw inputs per slot, as a client would send them (aim in radians)."""

    move_x: np.ndarray
    move_y: np.ndarray
    aim: np.ndarray
    fire: np.ndarray

    def raw(self, slot: int) -> list[float | bool]:
        """The msgpack input array ``[move_x, move_y, aim, fire]`` of one slot."""
        return [
            float(self.move_x[slot]),
            float(self.move_y[slot]),
            float(self.aim[slot]),
            bool(self.fire[slot]),
        ]


class BotBrain:
    """Decides inputs for all slots; call :meth:`inputs` once per tick."""

    def __init__(self, capacity: int, seed: int, tick_rate: int = 30) -> None:
        self._rng = np.random.default_rng((seed, 0xB075))
        self._rate = tick_rate
        self._goal_x = self._rng.uniform(200, WIDTH_CM - 200, capacity)
        self._goal_y = self._rng.uniform(200, HEIGHT_CM - 200, capacity)
        self._still_until = np.zeros(capacity, dtype=np.int64)
        self._heading = np.zeros(capacity)
        self._target = np.full(capacity, -1)
        self._slots = np.arange(capacity)

    def inputs(self, state: ArenaState, tick: int) -> BotInputs:
        rng, rate = self._rng, self._rate
        n = state.settings.max_players
        alive = state.alive
        x = state.x.astype(np.float64)
        y = state.y.astype(np.float64)
        u_renew, u_stop, u_fire, u_noise = rng.random((4, n))

        # New goal when close to it, or now and then (which also frees bots stuck on walls).
        gx, gy = self._goal_x - x, self._goal_y - y
        dist = np.hypot(gx, gy)
        renew = (dist < 150.0) | (u_renew < 1.0 / (4 * rate))
        k = int(renew.sum())
        if k:
            self._goal_x[renew] = rng.uniform(200, WIDTH_CM - 200, k)
            self._goal_y[renew] = rng.uniform(200, HEIGHT_CM - 200, k)
            gx, gy = self._goal_x - x, self._goal_y - y
            dist = np.hypot(gx, gy)
        # Now and then a bot stands still for 0.5-2 s.
        stop = u_stop < 1.0 / (6 * rate)
        if stop.any():
            self._still_until[stop] = tick + rng.integers(rate // 2, 2 * rate + 1, int(stop.sum()))
        walking = (self._still_until <= tick) & alive
        safe = np.where(dist > 0, dist, 1.0)
        move_x = np.where(walking, gx / safe, 0.0)
        move_y = np.where(walking, gy / safe, 0.0)
        self._heading = np.where(walking, np.arctan2(gy, gx), self._heading)

        # Pick the nearest living enemy in range about every 100 ms (a reaction time),
        # then track it every tick: aim at it (noisy) and pull the trigger.
        reach2 = state.settings.range_cm**2
        if tick % 3 == 0:
            rx = x[None, :] - x[:, None]
            ry = y[None, :] - y[:, None]
            d2 = rx * rx + ry * ry
            d2[~alive[None, :] | ~alive[:, None]] = np.inf
            np.fill_diagonal(d2, np.inf)
            nearest = d2.argmin(axis=1)
            self._target = np.where(d2[self._slots, nearest] <= reach2, nearest, -1)
        target = np.where(self._target >= 0, self._target, self._slots)
        tx, ty = x[target] - x, y[target] - y
        engaged = (self._target >= 0) & alive & alive[target] & (tx * tx + ty * ty <= reach2)
        noise = (u_noise - 0.5) * 0.14  # +-4 degrees
        aim = np.where(engaged, np.arctan2(ty, tx) + noise, self._heading)
        # Keep the exact current aim when nothing changed, so idle bots emit no `aimed`.
        current = state.aim * (_TAU / AIM_UNITS)
        aim = np.where(engaged | walking, aim, current)
        fire = engaged & (u_fire < 0.5)
        return BotInputs(move_x, move_y, np.mod(aim, _TAU), fire)


_CHAT_LINES = ("gg", "nice shot", "rush mid", "lag?", "one more", "wp", "behind you")
CHAT_EVERY_S = 20.0
"""A bot of the match chats about this often (a chat event now and then, as people do)."""


class ArenaBots:
    """Arena's bot players (:class:`replay.rules.Bots`): the brain's inputs for every
    seated bot, and a chat line now and then."""

    def __init__(self, settings: ArenaSettings, seed: int) -> None:
        self.brain = BotBrain(settings.max_players, seed, settings.tick_rate)
        self._rng = np.random.default_rng((seed, 0xC4A7))
        self._chat_p = 1.0 / max(1.0, CHAT_EVERY_S * settings.tick_rate)

    def join_args(self, player: str) -> dict[str, str]:
        return {"name": f"Bot {player.rsplit('-', 1)[-1]}"}

    def inputs(self, state: ArenaState, tick: int) -> dict[str, list[float | bool]]:
        raw = self.brain.inputs(state, tick)
        alive = state.alive
        return {p: raw.raw(s) for p, s in state.slot_of.items() if alive[s]}

    def commands(self, state: ArenaState, tick: int) -> list[Command]:
        if not state.slot_of or self._rng.random() >= self._chat_p:
            return []
        players = list(state.slot_of)
        speaker = players[int(self._rng.integers(len(players)))]
        line = _CHAT_LINES[int(self._rng.integers(len(_CHAT_LINES)))]
        return [Command("chat", speaker, {"text": line})]
