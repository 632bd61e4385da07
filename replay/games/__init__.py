"""Built-in games. Importing this package registers them (see :func:`replay.rules.rules_for`)."""

from replay.games.arena import ArenaRules
from replay.rules import register

__all__ = ["ArenaRules"]

register(ArenaRules())
