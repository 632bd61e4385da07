"""The offline match generator: bots played through the arena rules, no network.

:func:`simulate` yields each tick's events exactly as the server would record
them (commands first, then the simulation step), plus the live state hash at
the ticks asked for, so replay tests can compare replayed hashes with live
ones. It does no I/O; ``matchreplay simulate`` writes its output to a store.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from replay.events import NewEvent
from replay.games.arena.bots import BotBrain
from replay.games.arena.rules import ArenaRules, quantize_aim
from replay.games.arena.state import ArenaState
from replay.rules import Command, Rejection

_CHAT_LINES = ("gg", "nice shot", "rush mid", "lag?", "one more", "wp", "behind you")


@dataclass(frozen=True)
class TickOutput:
    tick: int
    events: list[NewEvent]
    """The tick's events in order; empty when nothing changed."""
    state_hash: bytes | None
    """Live state hash after the tick, when the tick is in ``hash_ticks``."""


def bot_ids(players: int) -> list[str]:
    return [f"bot-{i:03d}" for i in range(1, players + 1)]


def match_settings(players: int, minutes: float, tick_rate: int, **extra: Any) -> dict[str, Any]:
    """Settings for a generated match: a time limit of ``minutes`` and no score limit,
    so the match lasts exactly that long."""
    return {
        "max_players": max(players, 2),
        "min_players": min(players, 2),
        "tick_rate": tick_rate,
        "time_limit_s": minutes * 60.0,
        "score_limit": 0,
    } | extra


def simulate(
    players: int,
    settings: Mapping[str, Any],
    seed: int = 0,
    *,
    hash_ticks: Container[int] = (),
    max_ticks: int | None = None,
    chat_every_s: float = 20.0,
) -> Iterator[TickOutput]:
    """Play a bot match until the rules end it (or ``max_ticks``).

    Tick 1 carries the joins and the start; every tick after runs the bots.
    A bot chats about every ``chat_every_s`` seconds across the match.
    """
    rules = ArenaRules()
    state: ArenaState = rules.initial_state(settings, seed)
    brain = BotBrain(state.settings.max_players, seed, state.settings.tick_rate)
    rng = np.random.default_rng((seed, 0xC4A7))
    chat_p = 1.0 / max(1.0, chat_every_s * state.settings.tick_rate)
    ids = bot_ids(players)
    tick = 0
    while not state.ended and (max_ticks is None or tick < max_ticks):
        tick += 1
        events: list[NewEvent] = []
        commands: list[Command] = []
        if tick == 1:
            commands = [Command("join", p, {"name": f"Bot {p[4:]}"}) for p in ids]
            commands.append(Command("start", ids[0] if ids else "admin"))
        elif rng.random() < chat_p and ids:
            speaker = ids[int(rng.integers(len(ids)))]
            line = _CHAT_LINES[int(rng.integers(len(_CHAT_LINES)))]
            commands = [Command("chat", speaker, {"text": line})]
        for command in commands:
            result = rules.decide(state, tick, command)
            if not isinstance(result, Rejection):
                rules.evolve(state, result, tick)
                events += result
        raw = brain.inputs(state, tick)
        stepped = rules.step(state, tick, raw.move_x, raw.move_y, quantize_aim(raw.aim), raw.fire)
        rules.evolve(state, stepped, tick)
        events += stepped
        yield TickOutput(tick, events, rules.state_hash(state) if tick in hash_ticks else None)
