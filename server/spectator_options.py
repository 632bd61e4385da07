"""A match's spectating options: its delay and whether token-less clients may watch.

They are given with the match's settings, taken out before the game sees them
(:func:`split_options`), and stored with the match record (``MatchRecord.options``,
docs/protocol.md 11.2), so every process and every read path applies the same.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_SPECTATOR_DELAY", "SpectatingOptions", "split_options", "stored_options"]

log = logging.getLogger(__name__)

MAX_SPECTATOR_DELAY = 600.0
"""Seconds. Live frames of the last ``delay + 7`` s stay in memory per match
(~0.2-1 KiB per tick): 600 s at 30 Hz is ~18k frames, 4-18 MiB."""


@dataclass(frozen=True)
class SpectatingOptions:
    """Per-match spectating settings (not game rules: the game never sees them)."""

    delay: float = 0.0
    public: bool = False

    def as_record(self) -> dict[str, Any]:
        """For ``MatchRecord.options``: stored with the match, so every later process
        (and every read path) applies the same delay and visibility."""
        return {"spectator_delay": self.delay, "public_spectating": self.public}


def split_options(
    settings: Mapping[str, Any], default_delay: float
) -> tuple[dict[str, Any], SpectatingOptions]:
    """Take ``spectator_delay`` and ``public_spectating`` out of a match's settings.

    Raises ValueError (the lobby reports it as ``invalid_settings``)."""
    game = dict(settings)
    delay = game.pop("spectator_delay", default_delay)
    public = game.pop("public_spectating", False)
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or not 0 <= delay <= MAX_SPECTATOR_DELAY
    ):
        raise ValueError(
            f"spectator_delay must be a number of seconds in [0, {MAX_SPECTATOR_DELAY:g}]"
        )
    if not isinstance(public, bool):
        raise ValueError("public_spectating must be a boolean")
    return game, SpectatingOptions(float(delay), public)


def stored_options(options: Mapping[str, Any], default_delay: float) -> SpectatingOptions:
    """The options stored in ``MatchRecord.options``. A match recorded before they were
    stored (or with an unreadable value) gets ``default_delay`` and is not public."""
    try:
        return split_options(options, default_delay)[1]
    except ValueError:
        log.warning("ignoring invalid stored spectating options %r", options)
        return SpectatingOptions(default_delay, False)
