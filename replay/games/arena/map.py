"""The arena map: bounds, walls and spawn points, all in integer centimetres.

The map is part of the rules version: changing it changes live outcomes (not
replays, which store outcomes).
"""

from __future__ import annotations

import numpy as np

WIDTH_CM = 6000
HEIGHT_CM = 4000
"""A 60 m x 40 m field. Positions are stored as uint16 in ``moved``, so a map may be
at most 655.35 m on a side."""

WALLS_CM = np.array(
    [
        # x0, y0, x1, y1 (axis-aligned boxes; x0 < x1, y0 < y1)
        (1400, 800, 1600, 1800),
        (4400, 2200, 4600, 3200),
        (2500, 1900, 3500, 2100),
        (800, 2800, 2000, 3000),
        (4000, 1000, 5200, 1200),
    ],
    dtype=np.float64,
)

SPAWNS_CM = np.array(
    [
        (500, 500),
        (3000, 500),
        (5500, 500),
        (500, 2000),
        (5500, 2000),
        (500, 3500),
        (3000, 3500),
        (5500, 3500),
        (2200, 1400),
        (3800, 2600),
    ],
    dtype=np.int32,
)


_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def spawn_point(seed: int, tick: int, slot: int) -> tuple[int, int]:
    """The spawn point of ``slot`` at ``tick``: index
    ``splitmix64(splitmix64(splitmix64(seed) ^ tick) ^ slot) % len(SPAWNS_CM)`` (all
    values taken modulo 2**64). Seeded by (match seed, tick, slot), so no generator
    state is carried in the match state, and cheap (a respawn happens every few ticks)."""
    h = _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ (tick & _MASK64)) ^ slot)
    x, y = SPAWNS_CM[h % len(SPAWNS_CM)]
    return int(x), int(y)
