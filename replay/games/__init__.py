"""The built-in games, and loading more (``module:attribute`` specs)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from replay.games.arena.rules import ArenaRules
from replay.rules import GameRegistry, Rules

__all__ = ["builtin_games", "load_games"]


def builtin_games() -> GameRegistry:
    """The games shipped with matchreplay; arena is the default."""
    return GameRegistry([ArenaRules()])


def load_games(specs: Iterable[str] = ()) -> GameRegistry:
    """The built-in games plus one per ``module:attribute`` spec, each naming a
    :class:`~replay.rules.Rules` subclass or instance (``mystudio.games:TugRules``).
    Raises ValueError naming a spec that does not load."""
    games: list[Rules[Any]] = list(builtin_games().values())
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        try:
            found: Any = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"game {spec!r} does not load: {exc}") from None
        rules = found() if isinstance(found, type) else found
        if not isinstance(rules, Rules):
            raise ValueError(f"game {spec!r} is not a replay.rules.Rules")
        games = [g for g in games if g.name != rules.name] + [rules]
    return GameRegistry(games)
