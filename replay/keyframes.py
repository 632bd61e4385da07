"""Keyframes: checksummed, versioned snapshots of a match's state.

Keyframes are derived data. They only make seeks fast; the events stay the
truth. A keyframe whose checksum does not match, or whose format version the
rules cannot read, is skipped (with a logged warning) and the next earlier one
is used, so an answer built on keyframes is always exact.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from replay.rules import Rules
from replay.store.base import Keyframe

__all__ = [
    "DEFAULT_KEYFRAME_SECONDS",
    "checksum",
    "keyframe_interval_ticks",
    "load_keyframe",
    "make_keyframe",
]

log = logging.getLogger(__name__)

DEFAULT_KEYFRAME_SECONDS = 5.0
"""Seconds of match time between keyframes (see docs/replay.md for the choice).

CS2 broadcast fragments are 3 s, Unreal checkpoints and League chunks 30 s. A
seek folds at most one interval of events; 5 s (150 ticks at 30 Hz) keeps the
worst case far inside the 10 ms seek budget while keyframes stay a small share
of a match's storage."""


def keyframe_interval_ticks(tick_rate: int, seconds: float = DEFAULT_KEYFRAME_SECONDS) -> int:
    return max(1, round(tick_rate * seconds))


def checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def make_keyframe(rules: Rules[Any], match_id: str, state: Any) -> Keyframe:
    data = rules.encode_state(state)
    return Keyframe(match_id, rules.state_tick(state), rules.state_format, data, checksum(data))


def load_keyframe(rules: Rules[Any], keyframe: Keyframe) -> Any | None:
    """The state in ``keyframe``, or None (logged) when it is corrupt or incompatible."""
    if checksum(keyframe.data) != keyframe.checksum:
        log.warning("keyframe %s@%d: checksum mismatch, skipped", keyframe.match_id, keyframe.tick)
        return None
    if keyframe.format_version != rules.state_format:
        log.warning(
            "keyframe %s@%d: format %d, rules read %d, skipped",
            keyframe.match_id,
            keyframe.tick,
            keyframe.format_version,
            rules.state_format,
        )
        return None
    try:
        state = rules.decode_state(keyframe.data, keyframe.format_version)
    except ValueError as exc:
        log.warning(
            "keyframe %s@%d: undecodable (%s), skipped", keyframe.match_id, keyframe.tick, exc
        )
        return None
    if rules.state_tick(state) != keyframe.tick:
        log.warning(
            "keyframe %s@%d: holds tick %d, skipped",
            keyframe.match_id,
            keyframe.tick,
            rules.state_tick(state),
        )
        return None
    return state
