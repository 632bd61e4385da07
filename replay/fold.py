"""THE fold of a match's stream: the game's ``evolve``, plus the one rule of time travel.

A stream is mostly game events, folded by ``rules.evolve``. Two of matchreplay's own
events replace the state instead (docs/replay.md, "Rewinds and forks"):

* ``rewound`` (a live match rewound to an earlier tick T): from its tick B on, the
  state is the stored state of T re-clocked to B (``rules.rebase``);
* ``forked`` (the first event of a fork): the state is the parent's state of the fork
  tick, which is also the fork's own tick (a fork keeps its parent's clock).

Every fold of stored events (the replay engine, keyframe rebuilds, playback, the
SDK's spectator and game client) goes through :func:`fold_events`, so games' ``evolve``
never learns about either event and the rule lives here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from replay.events import SYSTEM_FORKED, SYSTEM_REWOUND, NewEvent
from replay.rules import Rules, StoredEvent

__all__ = ["RESTORING", "fold_events", "restored_state"]

RESTORING = frozenset({SYSTEM_REWOUND, SYSTEM_FORKED})
"""Event codes that replace the state with the one they carry."""

_type = itemgetter(0)


def restored_state(rules: Rules[Any], code: int, tick: int, data: Sequence[Any]) -> Any:
    """The state a ``rewound`` or ``forked`` event (of ``tick``) sets. Raises ValueError
    when the carried state cannot be decoded."""
    if code == SYSTEM_REWOUND:
        _from, _to, _actor, _reason, _at, state_format, blob = data
        return rules.rebase(rules.decode_state(blob, state_format), tick)
    _parent, parent_tick, state_format, blob, _players = data
    state = rules.decode_state(blob, state_format)
    return state if parent_tick == tick else rules.rebase(state, tick)


def fold_events(
    rules: Rules[Any], state: Any, events: Sequence[StoredEvent | NewEvent], to_tick: int
) -> Any:
    """``rules.evolve(state, events, to_tick)``, except that each ``rewound``/``forked``
    event replaces the state with the one it carries (the events before it in the
    same call are folded first, so a fold never depends on how events are grouped)."""
    if not events or RESTORING.isdisjoint(map(_type, events)):
        return rules.evolve(state, events, to_tick)
    start = 0
    for i, event in enumerate(events):
        code = event[0]
        if code not in RESTORING:
            continue
        if isinstance(event, NewEvent):
            tick, data = event.tick, event.data
        else:
            tick, data = event[2], event[3]
        # Events before it at its own tick are audit records (the machine writes
        # nothing else into a rewind tick): folding them to tick is exact either way.
        if i > start:
            state = rules.evolve(state, events[start:i], tick)
        state = restored_state(rules, code, tick, data)
        start = i + 1
    return rules.evolve(state, events[start:], to_tick)
