"""A bot match played through the match machine into a real SQLite store, with rewinds:
what the rewind and fork tests drive (the offline generator's loop, plus a hook per tick)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from games import ARENA, GAMES

from replay.engine import ReplayEngine
from replay.keyframes import keyframe_interval_ticks, make_keyframe
from replay.machine import MatchMachine, Tick
from replay.offline import bot_ids
from replay.rules import JOIN, START, Command, Rules
from replay.store.base import EventStore, MatchRecord


@dataclass
class Played:
    machine: MatchMachine
    hashes: dict[int, bytes] = field(default_factory=dict)
    """Live state hash at the end of every tick."""
    ticks: dict[int, Tick] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    """Each bot's last client seq sent."""
    sent: dict[tuple[str, int], int] = field(default_factory=dict)
    """(player, seq) of each valid input sent -> the tick it was sent for."""


async def create(
    store: EventStore, match_id: str, *, players: int, seconds: float, seed: int = 5
) -> tuple[Rules[Any], dict[str, Any]]:
    rules = ARENA
    settings = rules.bot_match_settings(players, seconds, 30)
    await store.create_match(
        MatchRecord(
            match_id,
            rules.name,
            rules.version,
            30,
            players=tuple(bot_ids(players)),
            settings=settings,
            seed=seed,
            status="running",
        )
    )
    return rules, settings


class Driver:
    """Plays bots tick by tick; every tick is appended (one batch) before the next."""

    def __init__(
        self,
        store: EventStore,
        match_id: str,
        rules: Rules[Any],
        settings: dict[str, Any],
        seed: int,
    ) -> None:
        self.store, self.match_id, self.rules = store, match_id, rules
        self.bots = rules.bots(settings, seed)
        self.machine = MatchMachine(
            rules, rules.initial_state(settings, seed), keyframe_every=keyframe_interval_ticks(30)
        )
        self.played = Played(self.machine)
        self.version = 0
        self.engine = ReplayEngine(store, GAMES)

    def join_all(self, players: int) -> None:
        ids = bot_ids(players)
        for player in ids:
            self.machine.queue(Command(JOIN, player, self.bots.join_args(player)))
        self.machine.queue(Command(START, ids[0]))
        self.played.seqs = dict.fromkeys(ids, 0)

    def send_inputs(self) -> dict[str, int]:
        """Each bot's inputs for the next tick; returns player -> the seq sent."""
        machine, seqs = self.machine, self.played.seqs
        sent = {}
        tick = machine.tick + 1
        for player, raw in self.bots.inputs(machine.state, tick).items():
            seq = sent[player] = seqs[player] = seqs[player] + 1
            if not machine.submit_inputs(player, ((seq, raw),)):
                self.played.sent[(player, seq)] = tick
        return sent

    async def step(self) -> Tick:
        out = self.machine.step()
        if out.events:
            await self.store.append(self.match_id, out.events, self.version)
            self.version += len(out.events)
        if out.keyframe is not None:
            await self.store.put_keyframe(make_keyframe(self.rules, self.match_id, out.keyframe))
        self.played.hashes[out.tick] = self.rules.state_hash(self.machine.state)
        self.played.ticks[out.tick] = out
        return out

    async def play(self, until: int, before: Callable[[int], None] | None = None) -> None:
        while self.machine.tick < until and not self.machine.over:
            if self.machine.tick >= 1:
                self.send_inputs()
            if before is not None:
                before(self.machine.tick + 1)
            await self.step()

    async def rewind(self, to_tick: int, *, actor: str = "ref", reason: str = "bug") -> Tick:
        """Rewind to ``to_tick`` (its state from the engine, as the server does) and play the
        rewind tick."""
        state = await self.engine.state_at(self.match_id, to_tick)
        self.machine.rewind(state, actor=actor, reason=reason, at_ms=1_700_000_000_000)
        return await self.step()
