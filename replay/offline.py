"""The offline match generator: a game's bots played through the match machine, no network.

:func:`simulate` drives :class:`~replay.machine.MatchMachine` exactly as the server
does (the same machine: commands, inputs with client seqs, the tick), with the
game's own bots (``Rules.bots``) as the players, and yields each tick's decisions
plus the live state hash at the ticks asked for, so replay tests can compare
replayed hashes with live ones. It does no I/O; ``matchreplay simulate`` writes
its output to a store.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from replay.events import NewEvent
from replay.keyframes import keyframe_interval_ticks
from replay.machine import MatchMachine
from replay.rules import JOIN, START, Command, Rules

__all__ = ["TickOutput", "bot_ids", "simulate"]


@dataclass(frozen=True, slots=True)
class TickOutput:
    tick: int
    events: list[NewEvent]
    """The tick's events in order; empty when nothing happened."""
    state_hash: bytes | None
    """Live state hash after the tick, when the tick is in ``hash_ticks``."""


def bot_ids(players: int) -> list[str]:
    return [f"bot-{i:03d}" for i in range(1, players + 1)]


def simulate(
    rules: Rules[Any],
    players: int,
    settings: Mapping[str, Any],
    seed: int = 0,
    *,
    hash_ticks: Container[int] = (),
    max_ticks: int | None = None,
) -> Iterator[TickOutput]:
    """Play a bot match of ``players`` bots until the rules end it (or ``max_ticks``).

    Tick 1 carries the joins and the start; every tick after runs the bots, each bot
    a client numbering its inputs 1, 2, 3, ... Raises ValueError for a game without bots.
    """
    bots = rules.bots(settings, seed)
    if bots is None:
        raise ValueError(f"game {rules.name!r} has no bots")
    tick_rate = rules.limits(settings).tick_rate
    machine = MatchMachine(
        rules,
        rules.initial_state(settings, seed),
        keyframe_every=keyframe_interval_ticks(tick_rate),
    )
    ids = bot_ids(players)
    for player in ids:
        machine.queue(Command(JOIN, player, bots.join_args(player)))
    machine.queue(Command(START, ids[0] if ids else "admin"))
    seqs = dict.fromkeys(ids, 0)
    while not machine.over and (max_ticks is None or machine.tick < max_ticks):
        tick = machine.tick + 1
        if tick > 1:
            for command in bots.commands(machine.state, tick):
                machine.queue(command)
            for player, raw in bots.inputs(machine.state, tick).items():
                seq = seqs[player] = seqs[player] + 1
                machine.submit_inputs(player, ((seq, raw),))
        out = machine.step()
        digest = rules.state_hash(machine.state) if tick in hash_ticks else None
        yield TickOutput(tick, out.events, digest)
