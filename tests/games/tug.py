"""Tug of war: a tiny second game on the same rules interface as arena.

Two teams pull a rope. Players join a team (``join`` with ``team`` 0 or 1, or
none for the smaller team; a seat is the first free one), the match starts
(``start``, once both teams have a player), then each tick every player's input
is a pull strength in [0, 1], quantised to tenths; the rope moves by (team 1's
pulls - team 0's pulls). A team wins when the rope reaches ``target`` on its
side. Players may ``cheer``. Its state is plain Python (no numpy), its catalog
and its leaderboard metrics are its own: the interface does not care.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from replay.events import SYSTEM_FIRST, EventCatalog, EventType, NewEvent
from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.metrics import GameMetrics, Lookup, MatchTally, Observation
from replay.rules import (
    JOIN,
    LEAVE,
    START,
    Command,
    MatchLimits,
    MatchResult,
    Rejection,
    Rules,
    StoredEvent,
)

JOINED, LEFT, PULLED, WON, STARTED, CHEERED = 1, 2, 3, 4, 5, 6


def _pulled_v1(data: tuple[Any, ...]) -> tuple[Any, ...]:
    # v1 did not say who pulled.
    return (data[0], [])


CATALOG = EventCatalog(
    [
        EventType(JOINED, "joined", ("player", "team"), notable=True),
        EventType(LEFT, "left", ("player",)),
        EventType(PULLED, "pulled", ("delta", "players"), version=2, upcasters={1: _pulled_v1}),
        EventType(WON, "won", ("team",), notable=True),
        EventType(STARTED, "started", (), notable=True),
        EventType(CHEERED, "cheered", ("player", "text")),
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
    started: bool = False
    seats: list[str | None] = field(default_factory=list)
    """Player per seat, in join order; a seat is freed when its player leaves."""
    pulls: dict[str, int] = field(default_factory=dict)
    """Ticks each player pulled in (the scoreboard's number)."""

    def fields(self) -> list[Any]:
        return [
            self.target,
            self.max_team,
            self.tick,
            self.rope,
            sorted(self.teams.items()),
            self.winner,
            self.started,
            self.seats,
            sorted(self.pulls.items()),
        ]


class TugRules(Rules[TugState]):
    name = "tug"
    version = "1"
    catalog = CATALOG
    player_commands = frozenset({"cheer"})
    scoreboard_columns = (("team", "Team"), ("pulls", "Pulls"))

    def normalize_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        out = {"target": 50, "max_team": 4, "tick_rate": 20} | dict(settings)
        unknown = sorted(set(out) - {"target", "max_team", "tick_rate"})
        if unknown:
            raise ValueError(f"unknown tug settings {unknown}")
        for key in ("target", "max_team", "tick_rate"):
            if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
                raise ValueError(f"{key} must be a positive integer")
        return out

    def limits(self, settings: Mapping[str, Any]) -> MatchLimits:
        s = self.normalize_settings(settings)
        return MatchLimits(s["tick_rate"], 2, 2 * s["max_team"])

    def initial_state(self, settings: Mapping[str, Any], seed: int) -> TugState:
        s = self.normalize_settings(settings)
        return TugState(s["target"], s["max_team"])

    def copy_state(self, state: TugState) -> TugState:
        return TugState(
            state.target,
            state.max_team,
            state.tick,
            state.rope,
            dict(state.teams),
            state.winner,
            state.started,
            list(state.seats),
            dict(state.pulls),
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
            target, max_team, tick, rope, teams, winner, started, seats, pulls = msgpack.unpackb(
                data
            )
            return TugState(
                target,
                max_team,
                tick,
                rope,
                {p: t for p, t in teams},
                winner,
                started,
                seats,
                {p: n for p, n in pulls},
            )
        except Exception as exc:
            raise ValueError(f"undecodable tug keyframe: {exc!r}") from exc

    def decide(self, state: TugState, tick: int, command: Command) -> list[NewEvent] | Rejection:
        if state.winner >= 0:
            return Rejection("match_over", "the rope has been won")
        if command.kind == JOIN:
            # No team asked for: the smaller one (team 0 on a tie).
            sizes = [sum(1 for t in state.teams.values() if t == k) for k in (0, 1)]
            team = command.args.get("team", int(sizes[1] < sizes[0]))
            if team not in (0, 1) or isinstance(team, bool):
                return Rejection("bad_team", "team must be 0 or 1")
            if command.player in state.teams:
                return Rejection("already_joined", "already on a team")
            if sum(1 for t in state.teams.values() if t == team) >= state.max_team:
                return Rejection("team_full", f"team {team} is full")
            return [NewEvent(JOINED, tick, (command.player, team))]
        if command.kind == LEAVE:
            if command.player not in state.teams:
                return Rejection("unknown_player", "not on a team")
            return [NewEvent(LEFT, tick, (command.player,))]
        if command.kind == START:
            if state.started:
                return Rejection("already_started", "the rope is already being pulled")
            if len(set(state.teams.values())) < 2:
                return Rejection("not_enough_players", "both teams need a player")
            return [NewEvent(STARTED, tick, ())]
        if command.kind == "cheer":
            text = command.args.get("text")
            if command.player not in state.teams:
                return Rejection("unknown_player", "not on a team")
            if not isinstance(text, str) or not 1 <= len(text) <= 40:
                return Rejection("bad_cheer", "a cheer is 1..40 characters")
            return [NewEvent(CHEERED, tick, (command.player, text))]
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
        if state.winner >= 0 or not state.started:
            return []
        delta = 0
        pullers = []
        for player, pull in inputs.items():
            team = state.teams.get(player)
            if team is not None and pull:
                delta += pull if team == 1 else -pull
                pullers.append(player)
        if not pullers:
            return []
        out = [NewEvent(PULLED, tick, (delta, sorted(pullers)))]
        rope = state.rope + delta
        if abs(rope) >= state.target:
            out.append(NewEvent(WON, tick, (1 if rope > 0 else 0,)))
        return out

    def evolve(
        self, state: TugState, events: Sequence[StoredEvent | NewEvent], to_tick: int
    ) -> TugState:
        for e in events:
            if isinstance(e, NewEvent):
                code, version, data = e.type, e.version, e.data
            else:
                code, version, _, data = e
            if code >= SYSTEM_FIRST:
                continue
            if (code, version) not in CATALOG.current:
                data, version = CATALOG.upcast(code, version, data)
            if code == JOINED:
                player, team = data
                state.teams[player] = team
                state.pulls.setdefault(player, 0)
                if None in state.seats:
                    state.seats[state.seats.index(None)] = player
                else:
                    state.seats.append(player)
            elif code == LEFT:
                del state.teams[data[0]]
                state.seats[state.seats.index(data[0])] = None
            elif code == PULLED:
                state.rope += data[0]
                for player in data[1]:
                    state.pulls[player] = state.pulls.get(player, 0) + 1
            elif code == WON:
                state.winner = data[0]
            elif code == STARTED:
                state.started = True
        state.tick = to_tick
        return state

    def rebase(self, state: TugState, tick: int) -> TugState:
        # The clock is tug's only tick-valued field.
        state.tick = tick
        return state

    def seat_of(self, state: TugState, player: str) -> int | None:
        return state.seats.index(player) if player in state.teams else None

    def started(self, state: TugState) -> bool:
        return state.started

    def is_over(self, state: TugState) -> bool:
        return state.winner >= 0

    def result(self, state: TugState) -> MatchResult | None:
        if state.winner < 0:
            return None
        return MatchResult("", f"team {state.winner} won")

    def scoreboard(self, state: TugState) -> list[dict[str, Any]]:
        lead = 1 if state.rope > 0 else 0
        return sorted(
            (
                {
                    "player": p,
                    "name": p,
                    "team": t,
                    "pulls": state.pulls.get(p, 0),
                    "leading": t == lead and state.rope != 0,
                }
                for p, t in state.teams.items()
            ),
            key=lambda r: (not r["leading"], r["player"]),
        )

    def leaderboard_metrics(self) -> GameMetrics:
        return _METRICS

    def default_boards(self) -> tuple[BoardDefinition, ...]:
        return (BoardDefinition("tug_wins", "wins", "incr", game="tug", title="Ropes won"),)


# -- leaderboards ----------------------------------------------------------------------------
# wins: every player of the winning team, 1. pulls: per player, the ticks pulled in the match
# (observed at the end; subscore: 1 when on the winning team). The tally's data is
# {"teams": {player: team}, "pulls": {player: ticks}}: nothing like arena's.


def _tally(t: MatchTally, code: int, data: tuple[Any, ...]) -> None:
    teams, pulls = t.data.setdefault("teams", {}), t.data.setdefault("pulls", {})
    if code == JOINED:
        teams[data[0]] = data[1]
        pulls.setdefault(data[0], 0)
    elif code == LEFT:
        teams.pop(data[0], None)
    elif code == PULLED:
        for player in data[1]:
            pulls[player] = pulls.get(player, 0) + 1


def _wins(t: MatchTally, data: tuple[Any, ...], _: Lookup) -> list[Observation]:
    return [(p, 1, 0) for p, team in t.data.get("teams", {}).items() if team == data[0]]


def _pulls(t: MatchTally, data: tuple[Any, ...], _: Lookup) -> list[Observation]:
    teams = t.data.get("teams", {})
    return [(p, n, int(teams.get(p) == data[0])) for p, n in t.data.get("pulls", {}).items()]


_METRICS = GameMetrics(
    metrics={"wins": (WON, _wins), "pulls": (WON, _pulls)},
    fold=_tally,
    codes=frozenset({JOINED, LEFT, PULLED, WON}),
    end_code=WON,
)
