"""The pure leaderboard core: ranked board, operators, periods, rating, definitions."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime

import pytest
from games import ARENA, METRICS
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.leaderboards import board as board_module
from replay.leaderboards.board import Board
from replay.leaderboards.definitions import load_definitions
from replay.leaderboards.errors import BoardConfigError
from replay.leaderboards.operators import Entry, combine
from replay.leaderboards.periods import parse_period, period_key, previous_period
from replay.leaderboards.rating import elo_update
from replay.leaderboards.scoreboard import ScoreboardFeed


def naive_order(entries: dict[str, Entry], descending: bool) -> list[str]:
    sign = -1 if descending else 1
    return sorted(
        entries,
        key=lambda o: (sign * entries[o].value, sign * entries[o].subscore, entries[o].reached, o),
    )


updates = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from([f"p{i}" for i in range(12)]), st.integers(-5, 5), st.integers(-2, 2)
        ),
        max_size=8,
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(batches=updates, descending=st.booleans())
def test_board_matches_a_naive_sort_with_distinct_ranks(batches, descending) -> None:
    board, model, reached = Board(descending), {}, 0
    for batch in batches:
        changes = {}
        for owner, v, s in batch:
            reached += 1
            changes[owner] = Entry(v, s, reached)
        board.apply(changes)
        model.update(changes)
        order = naive_order(model, descending)
        assert [e.owner for e in board.slice(0, len(board))] == order
        for i, owner in enumerate(order):
            assert board.rank(owner).rank == i + 1
        for owner in order:
            for limit in (1, 2, 5):
                page = board.around(owner, limit)
                assert owner in [e.owner for e in page]
                assert len(page) == min(limit, len(order))
                assert [e.rank for e in page] == list(range(page[0].rank, page[0].rank + len(page)))


big = st.sampled_from([2**63 - 1, -(2**63), 2**62, -(2**62), 2**41, 2**64])
observations = st.lists(
    st.tuples(
        st.sampled_from([f"p{i}" for i in range(6)]),
        st.one_of(st.integers(-3, 3), big),
        st.one_of(st.integers(-2, 2), big),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    obs=observations,
    op=st.sampled_from(["incr", "decr", "best", "set"]),
    descending=st.booleans(),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    move_cost=st.sampled_from([0, board_module._MOVE_COST]),
)
def test_vectorised_fold_is_combine_one_by_one_in_any_chunking(
    obs, op, descending, cuts, move_cost
) -> None:
    """Board.fold reduces each owner's observations in numpy (with combine as the
    fallback near the int64 limits): the result must be combine applied one
    observation at a time, whatever the batches, and the ranking must follow, both
    when commit moves keys one by one (move_cost 0) and when it rebuilds the array."""
    saved, board_module._MOVE_COST = board_module._MOVE_COST, move_cost
    try:
        check_fold(obs, op, descending, cuts)
    finally:
        board_module._MOVE_COST = saved


def check_fold(obs, op, descending, cuts) -> None:
    model: dict[str, Entry] = {}
    for reached, (owner, v, s) in enumerate(obs, 1):
        new = combine(op, descending, model.get(owner), v, s, reached)
        if new is not None:
            model[owner] = new
    board = Board(descending)
    bounds = [0, *sorted(cuts), len(obs)]
    for lo, hi in itertools.pairwise(bounds):
        part = obs[lo:hi]
        board.fold(
            op,
            [o for o, _, _ in part],
            [v for _, v, _ in part],
            [s for _, _, s in part],
            list(range(lo + 1, lo + 1 + len(part))),
        )
        if hi % 2:  # some folds are committed together, some apart
            board.commit()
    board.commit()
    assert dict(board.items()) == model
    assert [e.owner for e in board.slice(0, len(board))] == naive_order(model, descending)


@pytest.mark.parametrize("descending", [True, False])
def test_few_changes_in_a_big_board_move_keys_in_place(descending) -> None:
    """A handful of changes on a board 1,000x larger takes commit's key-by-key path
    (no pass over the array): ranks must stay those of a full sort, new owners too."""
    rng = random.Random(5)
    n = 4 * board_module._MOVE_COST
    model = {f"p{i}": Entry(rng.randrange(50), rng.randrange(3), i) for i in range(n)}
    board = Board(descending)
    board.apply(model)
    reached = n
    for round_ in range(40):
        op = ("incr", "set", "best", "decr")[round_ % 4]
        obs = [
            (f"p{n + rng.randrange(60) if i == 1 else rng.randrange(n)}", rng.randrange(-60, 60), 0)
            for i in range(rng.randrange(1, 4))
        ]
        for o, v, s in obs:
            reached += 1
            new = combine(op, descending, model.get(o), v, s, reached)
            if new is not None:
                model[o] = new
        first = reached - len(obs) + 1
        board.fold(op, *zip(*obs, strict=True), list(range(first, reached + 1)))
        board.commit()
        assert [e.owner for e in board.slice(0, len(board))] == naive_order(model, descending)


def test_extreme_values_keep_their_order() -> None:
    board = Board(descending=True)
    big, small = 2**63 - 1, -(2**63)
    board.apply(
        {
            "a": Entry(small, 0, 1),
            "b": Entry(big, 0, 2),
            "c": Entry(0, big, 3),
            "d": Entry(0, small, 4),
            "e": Entry(0, 0, 5),
        }
    )
    assert [e.owner for e in board.slice(0, 5)] == ["b", "c", "e", "d", "a"]


def test_tie_break_is_first_reached_then_owner_id_via_reached() -> None:
    board = Board()
    board.apply({"zed": Entry(10, 1, 100), "amy": Entry(10, 1, 200), "bob": Entry(10, 2, 300)})
    assert [e.owner for e in board.slice(0, 3)] == ["bob", "zed", "amy"]


def test_cursor_position_survives_entries_moving() -> None:
    board = Board()
    board.apply({f"p{i}": Entry(100 - i, 0, i) for i in range(10)})
    first = board.slice(0, 4)
    last = first[-1]
    # p0 drops below everything and a newcomer goes to the top: the next page still
    # starts right after p3's key, so nobody is skipped or shown twice.
    board.apply({"p0": Entry(0, 0, 50), "new": Entry(1000, 0, 51)})
    nxt = board.slice(board.index_after(last.value, last.subscore, last.reached), 100)
    assert [e.owner for e in nxt] == [f"p{i}" for i in range(4, 10)] + ["p0"]


@pytest.mark.parametrize(
    ("op", "desc", "old", "obs", "expected"),
    [
        ("incr", True, None, (3, 1), (3, 1, 9)),
        ("incr", True, (2, 1, 1), (3, 1), (5, 2, 9)),
        ("decr", True, None, (3, 0), (-3, 0, 9)),
        ("decr", True, (5, 0, 1), (3, 0), (2, 0, 9)),
        ("best", True, (5, 0, 1), (4, 9), None),
        ("best", True, (5, 0, 1), (5, 0), None),  # equal: the first to reach it keeps it
        ("best", True, (5, 0, 1), (5, 1), (5, 1, 9)),
        ("best", False, (5, 0, 1), (4, 9), (4, 9, 9)),
        ("set", True, (5, 0, 1), (4, 0), (4, 0, 9)),
        ("set", True, (5, 0, 1), (5, 0), None),
        ("incr", True, (2**63 - 2, 0, 1), (5, 0), (2**63 - 1, 0, 9)),  # saturates
    ],
)
def test_operators(op, desc, old, obs, expected) -> None:
    got = combine(op, desc, Entry(*old) if old else None, *obs, 9)
    assert got == (Entry(*expected) if expected else None)


def test_periods_are_utc_and_previous_periods_chain() -> None:
    t = datetime(2024, 1, 1, 0, 30, tzinfo=UTC).timestamp()  # a Monday, ISO week 1
    assert period_key("none", t) == "all"
    assert period_key("daily", t) == "2024-01-01"
    assert period_key("daily", t - 3600) == "2023-12-31"
    assert period_key("weekly", t) == "2024-W01"
    assert period_key("weekly", t - 3600) == "2023-W52"
    assert period_key("monthly", t) == "2024-01"
    assert previous_period("monthly", "2024-01") == "2023-12"
    assert previous_period("weekly", "2024-W01") == "2023-W52"
    assert previous_period("daily", "2024-03-01") == "2024-02-29"
    assert parse_period("weekly", "2024-W01") == "2024-W01"
    for reset, bad in [
        ("daily", "2024-02-30"),
        ("weekly", "2024-W60"),
        ("monthly", "2024-13"),
        ("monthly", "x"),
        ("none", "2024-01"),
    ]:
        with pytest.raises(ValueError):
            parse_period(reset, bad)


def test_elo_rule() -> None:
    # Two equal players: the winner takes K/2 = 16 points.
    assert elo_update({}, {"a": (3,), "b": (1,)}) == {"a": 1516, "b": 1484}
    # A draw between equals changes nothing; one player alone is not rated.
    assert elo_update({}, {"a": (1,), "b": (1,)}) == {"a": 1500, "b": 1500}
    assert elo_update({}, {"a": (1,)}) == {}
    # An upset moves more points; a free-for-all is worth at most K per player.
    up = elo_update({"a": 1400, "b": 1600}, {"a": (2,), "b": (1,)})
    assert up["a"] - 1400 > 16
    ffa = elo_update({}, {p: (i,) for i, p in enumerate("abcdefgh")})
    assert ffa["h"] == 1516 and ffa["a"] == 1484 and sum(ffa.values()) == 8 * 1500


def test_config_files(tmp_path) -> None:
    toml = tmp_path / "boards.toml"
    toml.write_text(
        '[[board]]\nid = "deaths_daily"\nmetric = "deaths"\noperator = "incr"\n'
        'order = "asc"\nreset = "daily"\n'
    )
    (d,) = load_definitions(toml, METRICS)
    assert (d.id, d.metric, d.order, d.reset, d.descending) == (
        "deaths_daily",
        "deaths",
        "asc",
        "daily",
        False,
    )
    js = tmp_path / "boards.json"
    js.write_text(json.dumps([b.as_dict() for b in ARENA.default_boards()]))
    assert load_definitions(js, METRICS) == ARENA.default_boards()
    for body, needle in [
        ('[[board]]\nid = "x"\nmetric = "nope"\noperator = "incr"\n', "unknown metric"),
        ('[[board]]\nid = "x"\nmetric = "kills"\noperator = "max"\n', "operator"),
        ('[[board]]\nid = "X Y"\nmetric = "kills"\noperator = "incr"\n', "board id"),
        ('[[board]]\nid = "x"\nmetric = "kills"\noperator = "incr"\nreset = "hourly"\n', "reset"),
        ('[[board]]\nid = "x"\nmetric = "kills"\n', "lacks"),
        ('[[board]]\nid = "x"\nmetric = "kills"\noperator = "incr"\ncolour = "red"\n', "unknown"),
        ('[[board]]\nid = "x"\nmetric = "kills"\noperator = "incr"\n' * 2, "duplicate"),
        ("not toml [", "cannot read"),
    ]:
        toml.write_text(body)
        with pytest.raises(BoardConfigError, match=needle):
            load_definitions(toml, METRICS)


def test_scoreboard_feed_pushes_only_on_change() -> None:
    import replay.games.arena.events as ev
    from replay.events import NewEvent

    rules = ARENA
    state = rules.initial_state({"max_players": 4, "min_players": 2}, 1)
    feed = ScoreboardFeed(rules)
    from replay.rules import Command

    join = rules.decide(state, 1, Command("join", "ann", {"name": "Ann"}))
    rules.evolve(state, join, 1)
    board = feed.update(state, join)
    assert board is not None and board[0]["player"] == "ann"
    chat = [NewEvent(ev.CHAT, 2, (0, "hi"))]
    rules.evolve(state, chat, 2)
    assert feed.update(state, chat) is None  # not a scoreboard event
    assert feed.update(state, join) is None  # a scoreboard event that changed nothing
