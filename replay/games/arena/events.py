"""The arena event catalog: every outcome the rules emit, with its payload layout.

Codes and field orders are a stored format: never renumber, never reorder.
Change a payload by bumping its version and adding an upcaster (see JOINED).
Field units: positions in centimetres, aim in 1/4096 turn, slots 0..255.
"""

from __future__ import annotations

from typing import Any

from replay.events import EventCatalog, EventType

MATCH_STARTED = 1
MATCH_ENDED = 2
JOINED = 3
LEFT = 4
SPAWNED = 5
MOVED = 6
AIMED = 7
FIRED = 8
HIT = 9
KILLED = 10
RESPAWNED = 11
CHAT = 12


def _joined_v1_to_v2(data: tuple[Any, ...]) -> tuple[Any, ...]:
    # v1 had no display name: the player id was shown, so it stays the name.
    slot, player = data
    return (slot, player, player)


CATALOG = EventCatalog(
    [
        EventType(MATCH_STARTED, "match_started", (), notable=True),
        EventType(MATCH_ENDED, "match_ended", ("winner", "reason"), notable=True),
        EventType(
            JOINED,
            "joined",
            ("slot", "player", "name"),
            version=2,
            upcasters={1: _joined_v1_to_v2},
            notable=True,
        ),
        EventType(LEFT, "left", ("slot",), notable=True),
        EventType(SPAWNED, "spawned", ("slot", "x", "y")),
        # Packed, one per tick: slots as uint8 bytes, x and y as little-endian uint16 bytes.
        EventType(MOVED, "moved", ("slots", "x", "y")),
        # Packed, one per tick: slots as uint8 bytes, aim as little-endian uint16 bytes.
        EventType(AIMED, "aimed", ("slots", "aim")),
        EventType(FIRED, "fired", ("slot", "aim")),
        EventType(HIT, "hit", ("shooter", "target", "damage", "health")),
        EventType(KILLED, "killed", ("killer", "victim"), notable=True),
        EventType(RESPAWNED, "respawned", ("slot", "x", "y")),
        EventType(CHAT, "chat", ("slot", "text")),
    ]
)
