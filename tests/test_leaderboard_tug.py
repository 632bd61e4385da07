"""Leaderboards over a second game: tug of war (tests/games/tug.py), whose events,
tally and metrics have nothing of arena's. Its matches are recorded into a memory
store beside arena's; boards over its metrics rank what its events say and equal a
rebuild."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from games import GAMES, METRICS, open_test_store
from games.tug import JOINED, PULLED, WON
from leaderboard_fixtures import record_matches, record_tug_matches

from replay.leaderboards.definitions import BoardDefinition
from replay.leaderboards.projection import LeaderboardProjection
from replay.leaderboards.service import Leaderboards

BOARDS = (
    *GAMES.default_boards(),  # arena's and tug's own (tug_wins)
    BoardDefinition("tug_pulls", "pulls", "incr", game="tug", title="Ticks pulled"),
    BoardDefinition("tug_best_pulls", "pulls", "best", game="tug", title="Most pulls in a rope"),
)


async def expected_tug(store, match_ids: list[str]) -> tuple[Counter, Counter, dict]:
    """From the stored events alone: total pulls and wins per player, and per player
    the best (pulls in one match, on the winning team)."""
    pulls: Counter[str] = Counter()
    wins: Counter[str] = Counter()
    best: dict[str, tuple[int, int]] = {}
    for m in match_ids:
        teams, mine = {}, Counter()
        for e in await store.read(m):
            if e.type == JOINED:
                teams[e.data[0]] = e.data[1]
                mine[e.data[0]] += 0
            elif e.type == PULLED:
                mine.update(e.data[1])
            elif e.type == WON:
                for p, team in teams.items():
                    wins[p] += team == e.data[0]
                    pair = (mine[p], int(team == e.data[0]))
                    best[p] = max(best.get(p, pair), pair)
        pulls.update(mine)
    return pulls, wins, best


def ranked(board) -> list[tuple[str, int, int]]:
    return [(e.owner, e.value, e.subscore) for e in board.slice(0, len(board))]


async def test_boards_over_tug_rank_its_metrics_and_equal_a_rebuild(tmp_path: Path) -> None:
    store = open_test_store("memory:")
    await store.open()
    try:
        await record_matches(store, 1, players=4, seconds=5, prefix="arena")
        tugs = await record_tug_matches(store, 6, players=4, seed=3)
        p = LeaderboardProjection(store, str(tmp_path / "b.sqlite"), BOARDS, METRICS, read_limit=7)
        await p.open()
        await p.catch_up()
        assert p.position == await store.last_position()
        pulls, wins, best = await expected_tug(store, tugs)
        assert sum(wins.values()) == 6 * 2  # two players on each winning team

        board = p.state.board("tug_pulls", "all")
        got = ranked(board)
        assert sorted((o, v) for o, v, _ in got) == sorted(pulls.items())
        assert [v for _, v, _ in got] == sorted(pulls.values(), reverse=True)
        assert [e.rank for e in board.slice(0, len(board))] == list(range(1, len(pulls) + 1))
        won = {o: v for o, v, _ in ranked(p.state.board("tug_wins", "all"))}
        assert won == {o: n for o, n in wins.items() if n}
        got_best = ranked(p.state.board("tug_best_pulls", "all"))
        assert {o: (v, s) for o, v, s in got_best} == best
        pairs = [(v, s) for _, v, s in got_best]
        assert pairs == sorted(pairs, reverse=True)
        # Arena's boards are fed by arena's match only, tug's by tug's only.
        assert set(won) <= set(pulls) and not set(pulls) & {
            e.owner for e in p.state.board("kills", "all").slice(0, 100)
        }

        # The query layer answers from the same board.
        top = Leaderboards(p).top("tug_pulls", limit=3)
        assert [(e["owner"], e["value"]) for e in top["entries"]] == [(o, v) for o, v, _ in got[:3]]

        before = {b: ranked(p.state.board(b, "all")) for b in ("tug_pulls", "tug_wins")}
        await p.rebuild()
        assert {b: ranked(p.state.board(b, "all")) for b in before} == before
        await p.close()

        # A fresh read model folded in one big chunk: the same entries, reached included.
        fresh = LeaderboardProjection(store, str(tmp_path / "c.sqlite"), BOARDS, METRICS)
        await fresh.open()
        await fresh.catch_up()
        for b in ("tug_pulls", "tug_wins", "tug_best_pulls"):
            board = p.state.board(b, "all")
            assert fresh.state.board(b, "all").slice(0, 100) == board.slice(0, 100)
        await fresh.close()
    finally:
        await store.close()
