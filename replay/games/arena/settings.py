"""Arena match settings: defaults, limits and the fixed-point units.

Units (every stored number is an integer in one of these):

* positions: centimetres (``POS_UNIT``), from the map's top-left corner;
* aim: 1/4096 of a turn (``AIM_UNITS``) from +x towards +y (the map's y axis points
  down, so on screen the angle turns clockwise: ``atan2(dy, dx)`` in map coordinates);
* time: ticks of the match's tick rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

POS_UNIT = 0.01
"""Metres per position unit (positions are integer centimetres)."""
AIM_UNITS = 4096
"""Aim is quantised to 1/4096 turn (~0.088 degrees); it fits in an uint16."""
AIM_EMIT_THRESHOLD = 8
"""An ``aimed`` entry is emitted only when the aim moved by >= 8 units (~0.7 degrees)
from the last emitted aim: finer jitter is not an outcome worth storing."""
HARD_MAX_PLAYERS = 256
"""Slots are uint8 in the packed events. State memory is ~60 bytes per slot."""
MAX_CHAT_CHARS = 200
MAX_END_REASON_CHARS = 64
"""An admin's reason for ending a match, stored in ``match_ended``."""
MAX_NAME_CHARS = 32
KILL_SCORE = 1
"""Points of score a kill earns (the fold, the score limit and the leaderboards' tally)."""


@dataclass(frozen=True)
class ArenaSettings:
    max_players: int = 64
    """Slots in the match (2..256). Arrays are sized by it."""
    min_players: int = 2
    """Players needed before ``start`` is accepted."""
    tick_rate: int = 30
    time_limit_s: float = 600.0
    """Match length from ``match_started``; 0 means no time limit."""
    score_limit: int = 30
    """Kills that end the match; 0 means no score limit."""
    late_join: bool = True
    """Whether ``join`` is accepted after the match started."""
    respawn_delay_s: float = 3.0
    fire_cooldown_s: float = 0.25
    weapon_range_m: float = 30.0
    damage: int = 25
    max_health: int = 100
    speed_mps: float = 6.0
    player_radius_m: float = 0.4

    # Derived integer quantities: the simulation uses only these.
    @property
    def speed_cm_per_tick(self) -> float:
        return self.speed_mps / POS_UNIT / self.tick_rate

    @property
    def radius_cm(self) -> int:
        return round(self.player_radius_m / POS_UNIT)

    @property
    def range_cm(self) -> float:
        return self.weapon_range_m / POS_UNIT

    @property
    def cooldown_ticks(self) -> int:
        return max(1, round(self.fire_cooldown_s * self.tick_rate))

    @property
    def respawn_ticks(self) -> int:
        return max(1, round(self.respawn_delay_s * self.tick_rate))

    @property
    def time_limit_ticks(self) -> int:
        return round(self.time_limit_s * self.tick_rate)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_LIMITS: dict[str, tuple[float, float]] = {
    "max_players": (2, HARD_MAX_PLAYERS),
    "min_players": (1, HARD_MAX_PLAYERS),
    "tick_rate": (1, 240),
    "time_limit_s": (0, 24 * 3600),
    "score_limit": (0, 1_000_000),
    "respawn_delay_s": (0, 600),
    "fire_cooldown_s": (0, 60),
    "weapon_range_m": (0.1, 1000),
    "damage": (1, 1_000_000),
    "max_health": (1, 32767),
    "speed_mps": (0, 100),
    "player_radius_m": (0.05, 5),
}


def parse_settings(raw: Mapping[str, Any]) -> ArenaSettings:
    """Validate ``raw`` (unknown keys, types, ranges) and fill defaults; ValueError otherwise."""
    known = {f.name: f for f in fields(ArenaSettings)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"unknown arena settings {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        kind = type(getattr(ArenaSettings, name))
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"setting {name!r} must be a boolean, got {value!r}")
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"setting {name!r} must be a finite number, got {value!r}")
        elif kind is int and value != int(value):
            raise ValueError(f"setting {name!r} must be an integer, got {value!r}")
        if name in _LIMITS:
            lo, hi = _LIMITS[name]
            if not lo <= value <= hi:
                raise ValueError(f"setting {name!r} must be in [{lo}, {hi}], got {value!r}")
        values[name] = kind(value)
    settings = ArenaSettings(**values)
    if settings.min_players > settings.max_players:
        raise ValueError("min_players must not exceed max_players")
    return settings
