"""Keyframes: checksummed, versioned snapshots of a match's state.

Keyframes are derived data. They only make seeks fast; the events stay the
truth. A keyframe whose checksum does not match, or whose format version the
rules cannot read, is skipped (with a logged warning) and the next earlier one
is used, so an answer built on keyframes is always exact.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from replay.fold import fold_events
from replay.rules import GameRegistry, Rules
from replay.source import read_events
from replay.store.base import EventStore, Keyframe

__all__ = [
    "DEFAULT_KEYFRAME_SECONDS",
    "checksum",
    "keyframe_interval_ticks",
    "load_keyframe",
    "make_keyframe",
    "rebuild_keyframes",
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


async def rebuild_keyframes(
    store: EventStore,
    games: GameRegistry,
    match_id: str,
    *,
    seconds: float = DEFAULT_KEYFRAME_SECONDS,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Replace the keyframes of ``match_id`` by folding its events once from tick 0 and
    writing a keyframe every ``keyframe_interval_ticks`` ticks. Returns how many.

    ``progress`` is called with the number of ticks folded since its last call.
    Readers meanwhile stay exact: a missing keyframe only means a longer fold.
    """
    record = await store.get_match(match_id)
    rules = games[record.game]
    interval = keyframe_interval_ticks(record.tick_rate, seconds)
    await store.delete_keyframes(match_id)
    state = rules.initial_state(record.settings, record.seed)
    written, start = 0, 0
    while start <= record.last_tick:
        # Windows end on keyframe ticks: interval - 1, then every interval ticks.
        end = min(record.last_tick, (start // interval + 1) * interval)
        state = fold_events(rules, state, await read_events(store, match_id, start, end), end)
        if end % interval == 0 and end > 0:
            await store.put_keyframe(make_keyframe(rules, match_id, state))
            written += 1
        if progress is not None:
            progress(end - start + 1)
        start = end + 1
    return written
