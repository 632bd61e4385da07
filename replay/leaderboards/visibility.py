"""When a match's results may reach the boards: no earlier than its spectators may see them.

The rule (docs/leaderboards.md, "What the boards may show"), from the match record's
``options`` (``spectator_delay`` seconds and ``public_spectating``, written by the
server when it creates the match):

* a public match without delay: at once;
* a public match with a delay, while it runs: the events of ticks up to
  ``last_tick - ceil(delay * tick_rate)``, ``last_tick`` being the newest tick in the
  store. A spectator sees a tick ``delay`` seconds after it was stored, when the
  match has moved on by about ``delay * tick_rate`` ticks; the store's last tick is
  never ahead of the live one, so this is never earlier than a spectator;
* a private match (not ``public_spectating``, or options that do not say): nothing
  while it runs, since an anonymous caller may not know who plays it;
* a match that is over (``ended``, ``interrupted``): all of it once ``ended_at +
  delay`` has passed; before that, a public match releases ticks at the tick rate
  as its spectators see them, a private one nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from replay.store.base import READ_ONLY_STATUSES, MatchRecord

__all__ = ["NOTHING", "Visibility"]

NOTHING = -1
"""An edge below every tick: nothing of the match may be shown yet."""


@dataclass(frozen=True, slots=True)
class Visibility:
    delay: float = 0.0
    """Seconds spectators trail the live match."""
    public: bool = False

    @classmethod
    def of(cls, record: MatchRecord) -> Visibility:
        """From the record's options; unreadable ones count as private without delay
        (the server validates them when it creates the match)."""
        options: Any = record.options
        delay = options.get("spectator_delay", 0.0) if isinstance(options, dict) else 0.0
        public = options.get("public_spectating", False) if isinstance(options, dict) else False
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not delay >= 0:
            delay = 0.0
        return cls(float(delay) if math.isfinite(delay) else 0.0, public is True)

    @property
    def immediate(self) -> bool:
        """Whether every result may be shown as soon as it is stored."""
        return self.public and self.delay == 0

    def edge(self, record: MatchRecord, now: float) -> int:
        """The newest tick of the match whose events may reach the boards at ``now``."""
        last = record.last_tick
        if self.immediate:
            return last
        if record.status in READ_ONLY_STATUSES:
            remaining = (record.ended_at or 0.0) + self.delay - now
            if remaining <= 0:
                return last
            if not self.public:
                return NOTHING
            return last - math.ceil(remaining * record.tick_rate)
        if not self.public:
            return NOTHING
        return last - math.ceil(self.delay * record.tick_rate)
