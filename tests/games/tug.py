"""Tug of war: a tiny second game on the same rules interface as arena.

Two teams pull a rope. Each tick every player's input is a pull strength in
[0, 1], quantised to tenths; the rope moves by (team 1's pulls - team 0's
pulls). A team wins when the rope reaches ``target`` on its side. Its state is
plain Python (no numpy), its catalog is its own: the interface does not care.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from replay.events import EventCatalog, EventType, NewEvent
from replay.rules import Command, Rejection, Rules, StoredEvent

JOINED, LEFT, PULLED, WON = 1, 2, 3, 4

CATALOG = EventCatalog(
    [
        EventType(JOINED, "joined", ("player", "team"), notable=True),
        EventType(LEFT, "left", ("player",)),
        EventType(PULLED, "pulled", ("delta",)),
        EventType(WON, "won", ("team",), notable=True),
    ]
)


@dataclass
class TugState:
    target: int
    max_team: int
    tick: int = 0
    rope: int = 0
    """Negative: towards team 0; positive: towards team 1."""
    teams: dict[str, int] = field(default_factory=dict)
    winner: int = -1

    def fields(self) -> list[Any]:
        return [
            self.target,
            self.max_team,
            self.tick,
            self.rope,
            sorted(self.teams.items()),
            self.winner,
        ]


class TugRules(Rules[TugState]):
    name = "tug"
    version = "1"
    catalog = CATALOG

    def normalize_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        out = {"target": 50, "max_team": 4} | dict(settings)
        for key in ("target", "max_team"):
            if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
                raise ValueError(f"{key} must be a positive integer")
        return out

    def initial_state(self, settings: Mapping[str, Any], seed: int) -> TugState:
        s = self.normalize_settings(settings)
        return TugState(s["target"], s["max_team"])

    def copy_state(self, state: TugState) -> TugState:
        return TugState(
            state.target, state.max_team, state.tick, state.rope, dict(state.teams), state.winner
        )

    def state_tick(self, state: TugState) -> int:
        return state.tick

    def state_hash(self, state: TugState) -> bytes:
        return hashlib.blake2b(msgpack.packb(state.fields()), digest_size=16).digest()

    def encode_state(self, state: TugState) -> bytes:
        return msgpack.packb(state.fields())

    def decode_state(self, data: bytes, format_version: int) -> TugState:
        if format_version != 1:
            raise ValueError(f"tug keyframe format {format_version} unknown")
        try:
            target, max_team, tick, rope, teams, winner = msgpack.unpackb(data)
            return TugState(target, max_team, tick, rope, {p: t for p, t in teams}, winner)
        except Exception as exc:
            raise ValueError(f"undecodable tug keyframe: {exc!r}") from exc

    def decide(self, state: TugState, tick: int, command: Command) -> list[NewEvent] | Rejection:
        if state.winner >= 0:
            return Rejection("match_over", "the rope has been won")
        if command.kind == "join":
            team = command.args.get("team")
            if team not in (0, 1) or isinstance(team, bool):
                return Rejection("bad_team", "team must be 0 or 1")
            if command.player in state.teams:
                return Rejection("already_joined", "already on a team")
            if sum(1 for t in state.teams.values() if t == team) >= state.max_team:
                return Rejection("team_full", f"team {team} is full")
            return [NewEvent(JOINED, tick, (command.player, team))]
        if command.kind == "leave":
            if command.player not in state.teams:
                return Rejection("unknown_player", "not on a team")
            return [NewEvent(LEFT, tick, (command.player,))]
        return Rejection("unknown_command", f"unknown tug command {command.kind!r}")

    def validate_input(self, state: TugState, player: str, raw: Sequence[Any]) -> Any:
        if player not in state.teams:
            return Rejection("unknown_player", "not on a team")
        if not isinstance(raw, list | tuple) or len(raw) != 1:
            return Rejection("bad_input", "input must be [strength]")
        (strength,) = raw
        if isinstance(strength, bool) or not isinstance(strength, int | float):
            return Rejection("bad_input", "strength must be a number")
        if not math.isfinite(strength):
            return Rejection("not_finite", "strength must be finite")
        return round(min(1.0, max(0.0, float(strength))) * 10)  # tenths, clamped

    def tick(self, state: TugState, tick: int, inputs: Mapping[str, Any]) -> list[NewEvent]:
        if state.winner >= 0:
            return []
        delta = 0
        for player, pull in inputs.items():
            team = state.teams.get(player)
            if team is not None:
                delta += pull if team == 1 else -pull
        if not delta:
            return []
        out = [NewEvent(PULLED, tick, (delta,))]
        rope = state.rope + delta
        if abs(rope) >= state.target:
            out.append(NewEvent(WON, tick, (1 if rope > 0 else 0,)))
        return out

    def evolve(
        self, state: TugState, events: Sequence[StoredEvent | NewEvent], to_tick: int
    ) -> TugState:
        for e in events:
            code, data = (e.type, e.data) if isinstance(e, NewEvent) else (e[0], e[3])
            if code == JOINED:
                state.teams[data[0]] = data[1]
            elif code == LEFT:
                del state.teams[data[0]]
            elif code == PULLED:
                state.rope += data[0]
            elif code == WON:
                state.winner = data[0]
        state.tick = to_tick
        return state

    def is_over(self, state: TugState) -> bool:
        return state.winner >= 0

    def scoreboard(self, state: TugState) -> list[dict[str, Any]]:
        lead = 1 if state.rope > 0 else 0
        return sorted(
            (
                {"player": p, "team": t, "leading": t == lead and state.rope != 0}
                for p, t in state.teams.items()
            ),
            key=lambda r: (not r["leading"], r["player"]),
        )
