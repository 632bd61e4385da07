"""Board definitions: what a global board ranks, how, and when it resets.

A config file is TOML (``[[board]]`` tables) or JSON (a list of objects, or
``{"board": [...]}``) with these keys per board (docs/leaderboards.md)::

    id = "kills"          # [a-z0-9_-], 1..64 chars, unique
    metric = "kills"      # a metric of the game (replay.leaderboards.metrics)
    operator = "incr"     # best | set | incr | decr
    order = "desc"        # desc (higher is better) | asc
    reset = "none"        # none | daily | weekly | monthly (UTC)
    game = "mygame"       # which matches feed it (default: the first game with metrics)
    title = "Total kills" # optional, for display
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from replay.leaderboards.errors import BoardConfigError
from replay.leaderboards.metrics import GameMetrics
from replay.leaderboards.operators import OPERATORS
from replay.leaderboards.periods import RESETS

__all__ = ["BoardDefinition", "load_definitions", "validate_definitions"]

_ID = re.compile(r"[a-z0-9_-]{1,64}")


@dataclass(frozen=True)
class BoardDefinition:
    id: str
    metric: str
    operator: str
    order: str = "desc"
    reset: str = "none"
    game: str = ""
    """The game whose matches feed the board; "" until validated: the default game."""
    title: str = ""

    @property
    def descending(self) -> bool:
        return self.order == "desc"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_definitions(
    defs: Iterable[BoardDefinition], metrics: Mapping[str, GameMetrics]
) -> tuple[BoardDefinition, ...]:
    """Check ``defs`` against the games' metrics (game name -> metrics); a board without
    a game gets the first game of ``metrics``."""
    default_game = next(iter(metrics), "")
    out = tuple(d if d.game else replace(d, game=default_game) for d in defs)
    seen: set[str] = set()
    for d in out:
        where = f"board {d.id!r}"
        if not isinstance(d.id, str) or not _ID.fullmatch(d.id):
            raise BoardConfigError(f"board id {d.id!r} must match [a-z0-9_-]{{1,64}}")
        if d.id in seen:
            raise BoardConfigError(f"duplicate board id {d.id!r}")
        seen.add(d.id)
        if d.operator not in OPERATORS:
            raise BoardConfigError(f"{where}: operator must be one of {list(OPERATORS)}")
        if d.order not in ("desc", "asc"):
            raise BoardConfigError(f"{where}: order must be 'desc' or 'asc'")
        if d.reset not in RESETS:
            raise BoardConfigError(f"{where}: reset must be one of {list(RESETS)}")
        if d.game not in metrics:
            raise BoardConfigError(
                f"{where}: game {d.game!r} has no leaderboard metrics; known: {sorted(metrics)}"
            )
        known = metrics[d.game].metrics
        if d.metric not in known:
            raise BoardConfigError(f"{where}: unknown metric {d.metric!r}; known: {sorted(known)}")
    return out


def _from_mapping(raw: Mapping[str, Any]) -> BoardDefinition:
    names = {f.name for f in fields(BoardDefinition)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise BoardConfigError(f"unknown board keys {unknown}; known: {sorted(names)}")
    missing = sorted({"id", "metric", "operator"} - set(raw))
    if missing:
        raise BoardConfigError(f"board {raw.get('id')!r} lacks {missing}")
    bad = [k for k, v in raw.items() if not isinstance(v, str)]
    if bad:
        raise BoardConfigError(f"board {raw.get('id')!r}: {bad} must be strings")
    return BoardDefinition(**raw)


def load_definitions(
    path: str | Path, metrics: Mapping[str, GameMetrics]
) -> tuple[BoardDefinition, ...]:
    """Boards from a TOML or JSON file (by extension); BoardConfigError when invalid."""
    path = Path(path)
    try:
        text = path.read_bytes()
        if path.suffix == ".json":
            raw: Any = json.loads(text)
        else:
            raw = tomllib.loads(text.decode())
    except (OSError, ValueError) as exc:
        raise BoardConfigError(f"cannot read board config {str(path)!r}: {exc}") from None
    if isinstance(raw, Mapping):
        raw = raw.get("board", [])
    if not isinstance(raw, list) or not all(isinstance(b, Mapping) for b in raw):
        raise BoardConfigError("a board config is a list of board tables ([[board]] in TOML)")
    return validate_definitions((_from_mapping(b) for b in raw), metrics)
