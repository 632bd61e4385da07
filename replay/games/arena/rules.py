"""ArenaRules: the arena game on the :class:`replay.rules.Rules` interface.

``decide`` handles discrete commands, ``tick`` runs the vectorised step (or, in a
match of up to ``SMALL_MATCH`` slots, the same step in plain Python: small.py),
``evolve`` folds events (fold.py: packed ``moved``/``aimed`` arrays with numpy, the
rare per-player events one by one). Rejection codes and the input rules are
documented in docs/games.md ("Arena").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import replay.games.arena.events as ev
import replay.games.arena.leaderboards as leaderboards
from replay.events import NewEvent
from replay.games.arena.bots import ArenaBots
from replay.games.arena.fold import fold
from replay.games.arena.map import spawn_point
from replay.games.arena.physics import hitscan, move
from replay.games.arena.settings import (
    AIM_EMIT_THRESHOLD,
    AIM_UNITS,
    KILL_SCORE,
    MAX_CHAT_CHARS,
    MAX_END_REASON_CHARS,
    MAX_NAME_CHARS,
    ArenaSettings,
    parse_settings,
)
from replay.games.arena.small import SMALL_MATCH, small_step
from replay.games.arena.state import ArenaState
from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.metrics import GameMetrics
from replay.rules import (
    END,
    JOIN,
    LEAVE,
    START,
    Bots,
    Command,
    KillEvent,
    MatchLimits,
    MatchResult,
    Rejection,
    Rules,
    SeatEvent,
    StoredEvent,
)

_TAU = 2.0 * math.pi
_U8 = np.dtype(np.uint8)
_U16 = np.dtype("<u2")


class ArenaInput(NamedTuple):
    """A validated per-tick input: movement clamped to unit length, aim quantised."""

    move_x: float
    move_y: float
    aim: int
    """1/4096 turn, 0..4095."""
    fire: bool


def quantize_aim(radians: np.ndarray) -> np.ndarray:
    """Radians (any finite value) to aim units 0..4095, vectorised."""
    return np.rint(np.mod(radians, _TAU) * (AIM_UNITS / _TAU)).astype(np.int64) % AIM_UNITS


_NUMBER = frozenset({int, float})
_AIM_PER_RADIAN = AIM_UNITS / _TAU
_isfinite = math.isfinite


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class ArenaRules(Rules[ArenaState]):
    name = "arena"
    version = "1.0.0"
    catalog = ev.CATALOG
    state_format = 1
    player_commands = frozenset({"chat"})
    admin_commands = frozenset({"chat"})
    scoreboard_columns = (("kills", "Kills"), ("deaths", "Deaths"), ("score", "Score"))
    # `alive` is part of the scoreboard, so spawns and respawns change it too.
    scoreboard_events = frozenset(
        {ev.JOINED, ev.LEFT, ev.KILLED, ev.SPAWNED, ev.RESPAWNED, ev.MATCH_STARTED, ev.MATCH_ENDED}
    )
    viewer_dir = Path(__file__).parent / "viewer"
    seat_event = SeatEvent(ev.JOINED, "slot", "player")
    kill_event = KillEvent(ev.KILLED, "killer", "victim")
    demo_settings = {
        "max_players": 8,
        "min_players": 4,
        "time_limit_s": 120.0,
        "score_limit": 15,
    }

    # -- settings and state ------------------------------------------------------

    def normalize_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        return parse_settings(settings).as_dict()

    def limits(self, settings: Mapping[str, Any]) -> MatchLimits:
        s = parse_settings(settings)
        return MatchLimits(s.tick_rate, s.min_players, s.max_players)

    def initial_state(self, settings: Mapping[str, Any], seed: int) -> ArenaState:
        return ArenaState.new(parse_settings(settings), seed)

    def copy_state(self, state: ArenaState) -> ArenaState:
        return state.copy()

    def state_tick(self, state: ArenaState) -> int:
        return state.tick

    def rebase(self, state: ArenaState, tick: int) -> ArenaState:
        state.rebase(tick)
        return state

    def state_hash(self, state: ArenaState) -> bytes:
        return state.digest()

    def encode_state(self, state: ArenaState) -> bytes:
        return state.encode()

    def decode_state(self, data: bytes, format_version: int) -> ArenaState:
        if format_version != self.state_format:
            raise ValueError(
                f"arena keyframe format {format_version}; this build reads {self.state_format}"
            )
        return ArenaState.decode(data)

    # -- commands ------------------------------------------------------------------

    def decide(self, state: ArenaState, tick: int, command: Command) -> list[NewEvent] | Rejection:
        if state.ended:
            return Rejection("match_over", "the match has ended")
        args = command.args
        if not isinstance(args, Mapping) or not isinstance(command.player, str):
            return Rejection("bad_command", "command args must be a map and player a string")
        slot = state.slot_of.get(command.player)
        kind = command.kind
        if kind == JOIN:
            return self._join(state, tick, command.player, args)
        if kind == START:
            return self._start(state, tick)
        if kind == END:  # who may end a match is the server's decision (admins)
            reason = args.get("reason", "ended by admin")
            if not isinstance(reason, str) or not 1 <= len(reason) <= MAX_END_REASON_CHARS:
                return Rejection(
                    "bad_reason", f"reason must be a string of 1..{MAX_END_REASON_CHARS} chars"
                )
            return [NewEvent(ev.MATCH_ENDED, tick, (self._winner(state), reason))]
        if kind not in (LEAVE, "chat"):
            return Rejection("unknown_command", f"unknown arena command {kind!r}")
        if slot is None:
            return Rejection("unknown_player", f"player {command.player!r} is not in the match")
        if kind == LEAVE:
            return [NewEvent(ev.LEFT, tick, (slot,))]
        text = args.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_CHAT_CHARS:
            return Rejection("bad_chat", f"chat text must be a string of 1..{MAX_CHAT_CHARS} chars")
        return [NewEvent(ev.CHAT, tick, (slot, text))]

    def _join(
        self, state: ArenaState, tick: int, player: str, args: Mapping[str, Any]
    ) -> list[NewEvent] | Rejection:
        if not player:
            return Rejection("bad_command", "player id must not be empty")
        if player in state.slot_of:
            return Rejection("already_joined", f"player {player!r} is already in the match")
        # No display name offered: the player id, cut to what a name may hold.
        name = args.get("name", player[:MAX_NAME_CHARS])
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
            return Rejection("bad_name", f"name must be a string of 1..{MAX_NAME_CHARS} chars")
        started = state.started_tick >= 0
        if started and not state.settings.late_join:
            return Rejection("late_join_closed", "the match has started and late join is off")
        try:
            slot = state.players.index(None)
        except ValueError:
            return Rejection("match_full", f"all {state.settings.max_players} slots are taken")
        out = [NewEvent(ev.JOINED, tick, (slot, player, name), 2)]
        if started:
            out.append(NewEvent(ev.SPAWNED, tick, (slot, *spawn_point(state.seed, tick, slot))))
        return out

    def _start(self, state: ArenaState, tick: int) -> list[NewEvent] | Rejection:
        if state.started_tick >= 0:
            return Rejection("already_started", "the match has already started")
        present = int(state.present.sum())
        if present < state.settings.min_players:
            return Rejection(
                "not_enough_players",
                f"{present} players joined; {state.settings.min_players} needed",
            )
        out = [NewEvent(ev.MATCH_STARTED, tick, ())]
        for slot in np.flatnonzero(state.present).tolist():
            out.append(NewEvent(ev.SPAWNED, tick, (slot, *spawn_point(state.seed, tick, slot))))
        return out

    # -- inputs ----------------------------------------------------------------------

    def validate_input(self, state: ArenaState, player: str, raw: Sequence[Any]) -> Any:
        if state.ended:
            return Rejection("match_over", "the match has ended")
        slot = state.slot_of.get(player) if isinstance(player, str) else None
        if slot is None:
            return Rejection("unknown_player", f"player {player!r} is not in the match")
        if not state.alive[slot]:
            return Rejection("not_alive", "inputs are accepted only from living players")
        if not (type(raw) is list or isinstance(raw, list | tuple)) or len(raw) != 4:
            return Rejection("bad_input", "input must be an array [move_x, move_y, aim, fire]")
        mx, my, aim, fire = raw
        # Exact-type checks first (this runs for every input); subclasses take the general ones.
        if not (type(mx) in _NUMBER and type(my) in _NUMBER and type(aim) in _NUMBER) and not (
            _is_number(mx) and _is_number(my) and _is_number(aim)
        ):
            return Rejection("bad_input", "move_x, move_y and aim must be numbers")
        if not (
            fire is True
            or fire is False
            or isinstance(fire, bool)
            or (isinstance(fire, int) and fire in (0, 1))
        ):
            return Rejection("bad_input", "fire must be a boolean or 0/1")
        mx, my, aim = float(mx), float(my), float(aim)
        if not (_isfinite(mx) and _isfinite(my) and _isfinite(aim)):
            return Rejection("not_finite", "NaN and infinity are not valid inputs")
        scale = max(abs(mx), abs(my))
        if scale > 1.0:  # clamp to unit length without overflowing hypot on huge values
            mx, my = mx / scale, my / scale
            length = math.hypot(mx, my)
            mx, my = mx / length, my / length
        q = round(math.fmod(aim, _TAU) % _TAU * _AIM_PER_RADIAN) % AIM_UNITS
        return ArenaInput(mx, my, q, bool(fire))

    # -- the simulation ---------------------------------------------------------------

    def tick(self, state: ArenaState, tick: int, inputs: Mapping[str, Any]) -> list[NewEvent]:
        """Absent input: no movement, aim kept, no fire. Inputs of players who are not
        (or no longer) alive are ignored."""
        if state.started_tick < 0 or state.ended:  # what step() decides, without its arrays
            return []
        n = state.settings.max_players
        if n <= SMALL_MATCH:
            done = self._tick_small(state, tick, inputs)
            if done is not None:
                return done
        mx = np.zeros(n)
        my = np.zeros(n)
        aim = state.aim.astype(np.int64)
        fire = np.zeros(n, dtype=bool)
        slots = [state.slot_of.get(p, -1) for p in inputs]
        known = [(s, v) for s, v in zip(slots, inputs.values(), strict=True) if s >= 0]
        if known:
            idx = np.fromiter((s for s, _ in known), dtype=np.int64, count=len(known))
            vals = np.array([v[:3] for _, v in known], dtype=np.float64)
            mx[idx] = vals[:, 0]
            my[idx] = vals[:, 1]
            aim[idx] = vals[:, 2].astype(np.int64)
            fire[idx] = [v[3] for _, v in known]
        return self.step(state, tick, mx, my, aim, fire)

    def _tick_small(
        self, state: ArenaState, tick: int, inputs: Mapping[str, Any]
    ) -> list[NewEvent] | None:
        """``tick`` through the plain-Python step (small.py); None when an input is not a
        validated ``ArenaInput`` (a direct caller's raw values take the vectorised step)."""
        n = state.settings.max_players
        mx = [0.0] * n
        my = [0.0] * n
        aim = state.aim.tolist()
        fire = [False] * n
        slot_of = state.slot_of
        for player, value in inputs.items():
            slot = slot_of.get(player, -1)
            if slot >= 0:
                if type(value) is not ArenaInput:
                    return None
                mx[slot], my[slot], aim[slot], fire[slot] = value
        stepped = small_step(state, tick, mx, my, aim, fire)
        if stepped is None:
            return None
        out = stepped.events
        if stepped.shooters:
            self._shoot(
                state,
                tick,
                np.array(stepped.shooters, dtype=np.intp),
                np.array(stepped.aim, dtype=np.int64),
                np.array(stepped.x, dtype=np.int32),
                np.array(stepped.y, dtype=np.int32),
                out,
            )
        self._check_end(state, tick, out)
        return out

    def step(
        self,
        state: ArenaState,
        tick: int,
        mx: np.ndarray,
        my: np.ndarray,
        aim: np.ndarray,
        fire: np.ndarray,
    ) -> list[NewEvent]:
        """The vectorised step on per-slot input arrays (``aim`` in units). Pure.

        Order of outcomes within a tick: respawns, movement, aim, then shots in slot
        order (fired, hit, killed), then the end of the match.
        """
        if state.started_tick < 0 or state.ended:
            return []
        cfg: ArenaSettings = state.settings
        out: list[NewEvent] = []
        alive = state.alive

        due = state.present & ~alive & (state.death_tick + cfg.respawn_ticks <= tick)
        for slot in np.flatnonzero(due).tolist():
            x, y = spawn_point(state.seed, tick, slot)
            out.append(NewEvent(ev.RESPAWNED, tick, (slot, x, y)))

        # Movement: clamp again (a direct caller may skip validate_input), then move.
        length = np.hypot(mx, my)
        over = length > 1.0
        if over.any():
            mx = np.where(over, mx / np.where(over, length, 1.0), mx)
            my = np.where(over, my / np.where(over, length, 1.0), my)
        nx, ny = move(state.x, state.y, mx, my, cfg.speed_cm_per_tick, cfg.radius_cm)
        changed = np.flatnonzero(alive & ((nx != state.x) | (ny != state.y)))
        if changed.size:
            out.append(
                NewEvent(
                    ev.MOVED,
                    tick,
                    (
                        changed.astype(_U8).tobytes(),
                        nx[changed].astype(_U16).tobytes(),
                        ny[changed].astype(_U16).tobytes(),
                    ),
                )
            )

        aim = np.asarray(aim, dtype=np.int64) % AIM_UNITS
        turn = (aim - state.aim) % AIM_UNITS
        turned = np.flatnonzero(alive & (np.minimum(turn, AIM_UNITS - turn) >= AIM_EMIT_THRESHOLD))
        if turned.size:
            out.append(
                NewEvent(
                    ev.AIMED,
                    tick,
                    (turned.astype(_U8).tobytes(), aim[turned].astype(_U16).tobytes()),
                )
            )

        # A fire input before the cooldown has elapsed is not an error: it just does not shoot.
        shooters = np.flatnonzero(alive & fire & (tick - state.last_fire >= cfg.cooldown_ticks))
        if shooters.size:
            self._shoot(state, tick, shooters, aim, nx, ny, out)

        self._check_end(state, tick, out)
        return out

    def _shoot(
        self,
        state: ArenaState,
        tick: int,
        shooters: np.ndarray,
        aim: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        out: list[NewEvent],
    ) -> None:
        cfg = state.settings
        targets = hitscan(
            shooters, aim, x, y, state.alive, cfg.range_cm, cfg.radius_cm, AIM_UNITS
        ).tolist()
        health = state.health.copy()
        damage = cfg.damage
        # Shots of one tick are resolved in slot order; a target killed by an earlier
        # shot of the same tick takes no further hits.
        for shooter, target in zip(shooters.tolist(), targets, strict=True):
            out.append(NewEvent(ev.FIRED, tick, (shooter, int(aim[shooter]))))
            if target < 0 or health[target] <= 0:
                continue
            left = max(0, int(health[target]) - damage)
            health[target] = left
            out.append(NewEvent(ev.HIT, tick, (shooter, target, damage, left)))
            if left == 0:
                out.append(NewEvent(ev.KILLED, tick, (shooter, target)))

    def _check_end(self, state: ArenaState, tick: int, out: list[NewEvent]) -> None:
        cfg = state.settings
        score = state.score
        deaths = state.deaths
        kills = [e.data for e in out if e.type == ev.KILLED]
        if kills:
            score = score.copy()
            deaths = deaths.copy()
            for killer, victim in kills:
                score[killer] += KILL_SCORE
                deaths[victim] += 1
        reason = ""
        if cfg.score_limit and kills and int(score[state.present].max()) >= cfg.score_limit:
            reason = "score_limit"
        elif cfg.time_limit_ticks and tick - state.started_tick >= cfg.time_limit_ticks:
            reason = "time_limit"
        if reason:
            out.append(NewEvent(ev.MATCH_ENDED, tick, (self._winner(state, score, deaths), reason)))

    @staticmethod
    def _winner(
        state: ArenaState, score: np.ndarray | None = None, deaths: np.ndarray | None = None
    ) -> str:
        """Best score, then fewest deaths, then lowest slot; "" with nobody present."""
        score = state.score if score is None else score
        deaths = state.deaths if deaths is None else deaths
        present = np.flatnonzero(state.present)
        if not present.size:
            return ""
        order = np.lexsort((present, deaths[present], -score[present]))  # last key is primary
        return state.players[int(present[order[0]])] or ""

    # -- the fold ------------------------------------------------------------------------

    def evolve(
        self, state: ArenaState, events: Sequence[StoredEvent | NewEvent], to_tick: int
    ) -> ArenaState:
        return fold(state, events, to_tick, self.catalog)

    # -- read helpers ---------------------------------------------------------------------

    def seat_of(self, state: ArenaState, player: str) -> int | None:
        return state.slot_of.get(player)

    def started(self, state: ArenaState) -> bool:
        return state.started_tick >= 0

    def is_over(self, state: ArenaState) -> bool:
        return state.ended

    def result(self, state: ArenaState) -> MatchResult | None:
        return MatchResult(state.winner, state.end_reason) if state.ended else None

    def scoreboard(self, state: ArenaState) -> list[dict[str, Any]]:
        present = np.flatnonzero(state.present)
        order = np.lexsort((present, state.deaths[present], -state.score[present]))
        return [
            {
                "player": state.players[s],
                "name": state.names[s],
                "slot": s,
                "score": int(state.score[s]),
                "kills": int(state.kills[s]),
                "deaths": int(state.deaths[s]),
                "alive": bool(state.alive[s]),
            }
            for s in present[order].tolist()
        ]

    # -- optional parts -------------------------------------------------------------------

    def bots(self, settings: Mapping[str, Any], seed: int) -> Bots:
        return ArenaBots(parse_settings(settings), seed)

    def bot_match_settings(self, players: int, seconds: float, tick_rate: int) -> dict[str, Any]:
        """A time limit of ``seconds`` and no score limit, so the match lasts exactly that."""
        return self.normalize_settings(
            {
                "max_players": max(players, 2),
                "min_players": min(max(players, 1), 2),
                "tick_rate": tick_rate,
                "time_limit_s": seconds,
                "score_limit": 0,
            }
        )

    def leaderboard_metrics(self) -> GameMetrics:
        return leaderboards.metrics()

    def default_boards(self) -> tuple[BoardDefinition, ...]:
        return leaderboards.default_boards()
