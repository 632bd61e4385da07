"""The arena's plain-Python step for small matches (replay/games/arena/small.py) gives
exactly the vectorised step's events: same respawns, moves (walls, bounds, the clamp
near unit length), aims, shots and ends, on random matches and nasty inputs."""

from __future__ import annotations

import math

from games import ARENA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.games.arena.rules import ArenaInput
from replay.games.arena.small import SMALL_MATCH
from replay.rules import Command, Rejection

rules = ARENA

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
# Directions on (or a hair off) the unit circle, where hypot's last bit decides the clamp.
unitish = st.floats(0, 2 * math.pi).flatmap(
    lambda a: st.sampled_from([1.0, 1.0 + 2**-52, 1.0 - 2**-53, 0.5, 3.0]).map(
        lambda k: [k * math.cos(a), k * math.sin(a)]
    )
)
moves = st.one_of(unitish, st.lists(finite, min_size=2, max_size=2))
raw_input = st.tuples(moves, st.floats(-1e9, 1e9), st.sampled_from([True, False, 0, 1])).map(
    lambda t: [t[0][0], t[0][1], t[1], t[2]]
)


def vectorised(state, t, inputs):
    """The same inputs as plain tuples: ``tick`` hands them to the vectorised step."""
    return rules.tick(state, t, {p: tuple(v) for p, v in inputs.items()})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**63),
    slots=st.integers(2, SMALL_MATCH),
    players=st.integers(1, SMALL_MATCH),
    speed_mps=st.sampled_from([6.0, 30.0, 100.0]),
    radius_m=st.sampled_from([0.05, 0.4, 5.0]),
    cooldown_s=st.sampled_from([0.0, 0.2]),
    score_limit=st.sampled_from([0, 3]),
    script=st.lists(st.lists(st.tuples(st.integers(0, SMALL_MATCH - 1), raw_input)), max_size=60),
)
def test_small_step_equals_vectorised(
    seed, slots, players, speed_mps, radius_m, cooldown_s, score_limit, script
):
    cfg = rules.normalize_settings(
        {
            "max_players": slots,
            "min_players": 1,
            "tick_rate": 10,
            "speed_mps": speed_mps,
            "player_radius_m": radius_m,
            "fire_cooldown_s": cooldown_s,
            "respawn_delay_s": 0.3,
            "weapon_range_m": 200.0,
            "damage": 60,
            "score_limit": score_limit,
            "time_limit_s": 5.0,
        }
    )
    state = rules.initial_state(cfg, seed)
    ids = [f"p{i}" for i in range(min(players, slots))]
    for t, command in enumerate([*(Command("join", p, {}) for p in ids), Command("start", "")]):
        rules.evolve(state, rules.decide(state, t, command), t)
    t = len(ids) + 1
    compared = 0
    for frame in script:
        inputs = {}
        for who, raw in frame:
            player = ids[who % len(ids)]
            value = rules.validate_input(state, player, raw)
            if not isinstance(value, Rejection):
                assert type(value) is ArenaInput
                inputs[player] = value
        expected = vectorised(state, t, inputs)
        got = rules.tick(state, t, inputs)  # the small path: validated inputs, <= SMALL_MATCH
        assert got == expected, f"tick {t}"
        compared += len(got)
        rules.evolve(state, got, t)
        if state.ended:
            break
        t += 1


def test_small_path_is_taken_and_raw_inputs_still_work():
    """Validated inputs take the plain path (no numpy step call); a direct caller's raw
    lists (not validated) still get the vectorised step's clamping."""
    cfg = rules.normalize_settings({"max_players": 4, "min_players": 1})
    state = rules.initial_state(cfg, 7)
    for t, command in enumerate([Command("join", "a", {}), Command("start", "")]):
        rules.evolve(state, rules.decide(state, t, command), t)
    calls = []
    real_step = rules.step
    rules.step = lambda *a: calls.append(a) or real_step(*a)  # type: ignore[method-assign]
    try:
        value = rules.validate_input(state, "a", [5.0, 0.0, 1.0, False])
        small = rules.tick(state, 5, {"a": value})
        assert calls == []
        raw = rules.tick(state, 5, {"a": [5.0, 0.0, value.aim, False]})
        assert len(calls) == 1
    finally:
        del rules.step
    assert small == raw and small  # clamped to unit length either way: one step east


def test_clamp_near_unit_length_matches_numpy_hypot():
    """Directions on the unit circle (and an ulp beyond it), where the clamp's hypot
    decides by its last bit whether to divide: both paths agree on every one."""
    cfg = rules.normalize_settings({"max_players": 2, "min_players": 1, "speed_mps": 100.0})
    state = rules.initial_state(cfg, 3)
    for t, command in enumerate([Command("join", "a", {}), Command("start", "")]):
        rules.evolve(state, rules.decide(state, t, command), t)
    for k in range(4000):
        angle = k * 2 * math.pi / 4000
        scale = 1.0 + 2**-52 if k % 2 else 1.0
        value = ArenaInput(scale * math.cos(angle), scale * math.sin(angle), 0, False)
        assert rules.tick(state, 9, {"a": value}) == vectorised(state, 9, {"a": value}), k
