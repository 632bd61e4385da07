"""Arena: the top-down 2D deathmatch reference game (docs/games.md, "Arena")."""

from replay.games.arena.rules import ArenaRules

__all__ = ["ArenaRules"]
