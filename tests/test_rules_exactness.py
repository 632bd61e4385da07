"""The replay contract, as a property: folding the events the rules emitted, in any
grouping, from the initial state or from a keyframe, through the real codec,
yields the live state bit for bit (compared by ``state_hash``). Runs over arena
and over the tiny tug-of-war game, so the interface is not arena-shaped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from games import ARENA
from games.tug import TugRules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.codec import decode_batch, encode_batch
from replay.events import NewEvent
from replay.games.arena.bots import BotBrain
from replay.machine import MatchMachine
from replay.rules import Command, Rules

# Anything a client could put in a msgpack frame, including the nasty numbers.
scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e308, max_value=1e308),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.binary(max_size=4),
)
garbage = st.one_of(
    st.lists(scalars, max_size=6),
    scalars,
    st.dictionaries(st.text(max_size=3), scalars, max_size=3),
    st.lists(st.lists(scalars, max_size=2), max_size=4),
)


@dataclass
class Recording:
    ticks: int
    events: list[list[NewEvent]]  # events[t - 1]: the events of tick t
    hashes: list[bytes]  # hashes[t - 1]: live state hash after tick t
    keyframe_tick: int
    keyframe: bytes


class PureTick:
    """The rules with one more check: ``tick`` must not change the state it reads."""

    def __init__(self, rules: Rules[Any]) -> None:
        self._rules = rules

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rules, name)

    def tick(self, state: Any, t: int, inputs: Any) -> list[NewEvent]:
        before = self._rules.state_hash(state)
        stepped = self._rules.tick(state, t, inputs)
        assert self._rules.state_hash(state) == before, "tick must not change the state"
        return stepped


def run_live(
    rules: Rules[Any],
    settings_: dict[str, Any],
    seed: int,
    ticks: int,
    commands: list[tuple[int, Command]],
    raw_inputs: Callable[[Any, int], dict[str, Any]],
    keyframe_tick: int,
) -> Recording:
    """The server's match machine (replay/machine.py), fed the commands and raw inputs."""
    state_settings = rules.normalize_settings(settings_)
    state = rules.initial_state(state_settings, seed)
    machine = MatchMachine(PureTick(rules), state, keyframe_every=10**9)  # type: ignore[arg-type]
    events: list[list[NewEvent]] = []
    hashes: list[bytes] = []
    keyframe = b""
    seqs: dict[str, int] = {}
    for t in range(1, ticks + 1):
        for _, command in (c for c in commands if c[0] == t):
            machine.queue(command)
        for player, raw in raw_inputs(machine.state, t).items():
            seq = seqs[player] = seqs.get(player, 0) + 1
            machine.submit_inputs(player, [(seq, raw)])
        out = machine.step()
        assert out.tick == t
        events.append(out.events)
        hashes.append(rules.state_hash(machine.state))
        if t == keyframe_tick:
            keyframe = rules.encode_state(machine.state)
        if out.over:
            break  # the rules ended the match: no tick after
    if len(events) <= keyframe_tick:
        keyframe_tick, keyframe = 0, rules.encode_state(rules.initial_state(state_settings, seed))
    return Recording(len(events), events, hashes, keyframe_tick, keyframe)


def check_folds(
    rules: Rules[Any], settings_: dict[str, Any], seed: int, rec: Recording, cuts: list[int]
) -> None:
    fresh = lambda: rules.initial_state(rules.normalize_settings(settings_), seed)  # noqa: E731

    # 1. Tick by tick, straight from the emitted events.
    state = fresh()
    for t in range(1, rec.ticks + 1):
        rules.evolve(state, rec.events[t - 1], t)
        assert rules.state_hash(state) == rec.hashes[t - 1], f"tick-by-tick fold differs at {t}"

    # 2. Through the codec (one batch per non-empty tick), folded in random chunks.
    stored = [decode_batch(encode_batch(evs), evs[0].tick) if evs else [] for evs in rec.events]
    state = fresh()
    bounds = sorted({c for c in cuts if 1 <= c < rec.ticks} | {rec.ticks})
    start = 1
    for end in bounds:
        chunk = [e for t in range(start, end + 1) for e in stored[t - 1]]
        rules.evolve(state, chunk, end)
        assert rules.state_hash(state) == rec.hashes[end - 1], f"chunked fold differs at {end}"
        start = end + 1

    # 3. From a keyframe in the middle, everything after it in one call.
    k = rec.keyframe_tick
    state = rules.decode_state(rec.keyframe, rules.state_format)
    assert rules.state_tick(state) == k
    assert rules.state_hash(state) == (rec.hashes[k - 1] if k else rules.state_hash(fresh()))
    rest = [e for t in range(k + 1, rec.ticks + 1) for e in stored[t - 1]]
    rules.evolve(state, rest, rec.ticks)
    assert rules.state_hash(state) == rec.hashes[-1], "fold from keyframe differs"


# -- arena -------------------------------------------------------------------------------

command_kinds = st.sampled_from(["join", "leave", "chat", "start", "dance"])
arena_commands = st.lists(
    st.tuples(
        st.integers(1, 40),
        command_kinds,
        st.integers(0, 9),
        st.one_of(st.text(max_size=8), st.integers(), st.none()),
    ),
    max_size=10,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 2**63),
    slots=st.integers(2, 6),
    initial=st.integers(0, 7),
    score_limit=st.sampled_from([0, 2, 4]),
    time_limit_s=st.sampled_from([0.0, 3.0]),
    late_join=st.booleans(),
    extra=arena_commands,
    bad=st.lists(st.tuples(st.integers(1, 40), st.integers(0, 9), garbage), max_size=12),
    cuts=st.lists(st.integers(1, 40), max_size=6),
    keyframe_tick=st.integers(1, 39),
)
def test_arena_fold_equals_live(
    seed, slots, initial, score_limit, time_limit_s, late_join, extra, bad, cuts, keyframe_tick
):
    rules = ARENA
    cfg = {
        "max_players": slots,
        "min_players": 2,
        "tick_rate": 10,
        "respawn_delay_s": 0.3,
        "fire_cooldown_s": 0.2,
        "weapon_range_m": 80.0,
        "damage": 40,
        "score_limit": score_limit,
        "time_limit_s": time_limit_s,
        "late_join": late_join,
    }
    ids = [f"p{i}" for i in range(10)]
    commands = [(1, Command("join", ids[i], {"name": f"P{i}"})) for i in range(initial)]
    commands.append((2, Command("start", "admin")))
    for t, kind, who, arg in extra:
        args = {"name": arg, "text": arg} if kind in ("join", "chat") else {}
        commands.append((t, Command(kind, ids[who], args)))
    brain = BotBrain(slots, seed, 10)
    bad_at: dict[tuple[int, str], Any] = {(t, ids[who]): raw for t, who, raw in bad}

    def raw_inputs(state, t):
        bots = brain.inputs(state, t)
        out = {p: bots.raw(s) for p, s in state.slot_of.items()}
        for (bt, player), raw in bad_at.items():
            if bt == t:
                out[player] = raw  # replaces a bot's input, or comes from a stranger
        return out

    rec = run_live(rules, cfg, seed, 40, commands, raw_inputs, keyframe_tick)
    check_folds(rules, cfg, seed, rec, cuts)


def test_arena_property_harness_sees_fights():
    """The property's bot-driven matches do reach the interesting outcomes (so the
    property above is not vacuous): hits, kills, respawns and an end."""
    rules = ARENA
    cfg = {
        "max_players": 4,
        "tick_rate": 10,
        "respawn_delay_s": 0.3,
        "weapon_range_m": 80.0,
        "damage": 40,
        "score_limit": 3,
    }
    ids = ["a", "b", "c", "d"]
    commands = [(1, Command("join", p)) for p in ids] + [(1, Command("start", "a"))]
    brain = BotBrain(4, 7, 10)

    def raw_inputs(state, t):
        bots = brain.inputs(state, t)
        return {p: bots.raw(s) for p, s in state.slot_of.items()}

    rec = run_live(rules, cfg, 7, 300, commands, raw_inputs, 150)
    names = {rules.stream_catalog[e.type].name for evs in rec.events for e in evs}
    assert {"moved", "aimed", "fired", "hit", "killed", "respawned", "match_ended"} <= names
    check_folds(rules, cfg, 7, rec, [10, 11, 200])


# -- tug of war --------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    target=st.integers(1, 40),
    joins=st.lists(
        st.tuples(st.integers(1, 30), st.integers(0, 5), st.integers(-1, 2)), max_size=10
    ),
    leaves=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 5)), max_size=4),
    pulls=st.lists(
        st.tuples(st.integers(1, 30), st.integers(0, 6), st.one_of(garbage, st.floats(0, 1))),
        max_size=60,
    ),
    cuts=st.lists(st.integers(1, 30), max_size=5),
    keyframe_tick=st.integers(1, 29),
    start_tick=st.integers(1, 20),
    cheers=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 6), st.text(max_size=50))),
)
def test_tug_fold_equals_live(
    target, joins, leaves, pulls, cuts, keyframe_tick, start_tick, cheers
):
    rules = TugRules()
    cfg = {"target": target, "max_team": 2}
    ids = [f"t{i}" for i in range(7)]
    commands = [(t, Command("join", ids[p], {"team": team})) for t, p, team in joins]
    commands += [(t, Command("leave", ids[p])) for t, p in leaves]
    commands += [(start_tick, Command("start", "admin")), (start_tick + 5, Command("start", ""))]
    commands += [(t, Command("cheer", ids[p], {"text": text})) for t, p, text in cheers]

    def raw_inputs(state, t):
        return {ids[p]: [raw] if isinstance(raw, float) else raw for pt, p, raw in pulls if pt == t}

    rec = run_live(rules, cfg, 0, 30, commands, raw_inputs, keyframe_tick)
    check_folds(rules, cfg, 0, rec, cuts)


def test_tug_plays_to_a_win():
    rules = TugRules()
    state = rules.initial_state({"target": 3}, 0)
    assert rules.decide(state, 1, Command("start", "admin")).code == "not_enough_players"
    for cmd in (
        Command("join", "a", {"team": 0}),
        Command("join", "b", {"team": 1}),
        Command("start", "admin"),
    ):
        rules.evolve(state, rules.decide(state, 1, cmd), 1)
    assert rules.seat_of(state, "b") == 1 and rules.started(state)
    assert rules.decide(state, 1, Command("join", "c", {"team": 5})).code == "bad_team"
    for t in range(2, 10):
        inputs = {
            "a": rules.validate_input(state, "a", [0.0]),
            "b": rules.validate_input(state, "b", [1.0]),
        }
        rules.evolve(state, rules.tick(state, t, inputs), t)
    assert rules.is_over(state) and state.winner == 1
    assert rules.result(state) == ("", "team 1 won")
    assert rules.decide(state, 11, Command("leave", "a")).code == "match_over"
    assert np.isfinite(state.rope)


def test_full_256_slot_match_folds_through_the_codec():
    """The packed events' uint8 slots and uint16 coordinates at the hard cap."""
    from replay.offline import simulate

    rules = ARENA
    cfg = ARENA.normalize_settings(
        ARENA.bot_match_settings(256, 6.0, 30) | {"weapon_range_m": 60.0}
    )
    outs = list(simulate(ARENA, 256, cfg, 9, hash_ticks={90, 181}))
    state = rules.initial_state(cfg, 9)
    for out in outs[:90]:
        rules.evolve(state, out.events, out.tick)
    assert rules.state_hash(state) == outs[89].state_hash
    stored = [e for o in outs[90:] for e in decode_batch(encode_batch(o.events), o.tick)]
    rules.evolve(state, stored, 181)
    assert rules.state_hash(state) == outs[-1].state_hash and rules.is_over(state)
    assert len(rules.scoreboard(state)) == 256 and int(state.kills.sum()) > 0
