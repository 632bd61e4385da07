"""Version-1 arena events stored long ago still decode to today's events and fold.
The golden file is never regenerated (tests/golden/README.md)."""

from __future__ import annotations

from pathlib import Path

from replay.codec import decode_batch
from replay.games.arena.rules import ArenaRules

GOLDEN = Path(__file__).parent / "golden" / "arena_events_v1.msgpack"

# The current form of every golden event, written out literally: (type, version, tick, data).
EXPECTED = [
    (3, 2, 100, (0, "alice", "alice")),  # joined: v1 had no name; upcast to the player id
    (3, 2, 100, (1, "bob", "bob")),
    (1, 1, 101, ()),  # match_started
    (5, 1, 101, (0, 500, 500)),  # spawned
    (5, 1, 101, (1, 5500, 3500)),
    (6, 1, 102, (b"\x00\x01", b"\x08\x02\x68\x15", b"\xf4\x01\xa2\x0d")),  # moved
    (7, 1, 102, (b"\x01", b"\x00\x08")),  # aimed: slot 1 at 2048 (half a turn)
    (8, 1, 103, (0, 1024)),  # fired
    (9, 1, 103, (0, 1, 25, 75)),  # hit
    (10, 1, 110, (0, 1)),  # killed
    (11, 1, 200, (1, 3000, 500)),  # respawned
    (12, 1, 201, (1, "gg")),  # chat
    (4, 1, 202, (1,)),  # left
    (2, 1, 203, ("alice", "time_limit")),  # match_ended
]


def upcast_all(rules: ArenaRules) -> list[tuple]:
    out = []
    for code, version, tick, data in decode_batch(GOLDEN.read_bytes(), 100):
        data, version = rules.catalog.upcast(code, version, data)
        out.append((code, version, tick, data))
    return out


def test_golden_v1_events_decode_to_current_events():
    assert upcast_all(ArenaRules()) == EXPECTED


def test_golden_v1_events_fold_without_upcasting_first():
    rules = ArenaRules()
    state = rules.initial_state({}, 0)
    rules.evolve(state, decode_batch(GOLDEN.read_bytes(), 100), 203)  # raw v1 tuples
    assert state.ended and state.winner == "alice" and state.end_reason == "time_limit"
    assert state.names[0] == "alice" and state.players[1] is None  # bob left
    assert (int(state.x[0]), int(state.y[0])) == (520, 500)
    assert int(state.kills[0]) == 1 and int(state.score[0]) == 1
    assert int(state.aim[0]) == 1024 and int(state.last_fire[0]) == 103
    assert rules.scoreboard(state) == [
        {
            "player": "alice",
            "name": "alice",
            "slot": 0,
            "score": 1,
            "kills": 1,
            "deaths": 0,
            "alive": True,
        }
    ]
