"""The skill rating rule: Elo for free-for-all matches, in integer points.

A match of N >= 2 rated players counts as every pair playing one game: for
players i and j with ratings Ri, Rj and final match scores si, sj,

* expected score  E(i, j) = 1 / (1 + 10 ** ((Rj - Ri) / 400))
* actual score    S(i, j) = 1 if si > sj, 0.5 if si == sj, 0 otherwise
* new rating      Ri' = Ri + round(K / (N - 1) * sum over j != i of (S(i, j) - E(i, j)))

with K = 32 and a starting rating of 1500. Dividing by N - 1 keeps one match
worth at most K points however many players it had. Python's ``round`` rounds
half to even; ratings stay integers so boards compare exactly. Matches with
fewer than two players change nothing. ``scores`` here is what the game's metric
ranks a match by (comparable values, e.g. tuples compared as pairs), best
chosen to be the order its rules pick the winner by.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["INITIAL_RATING", "K_FACTOR", "elo_update"]

INITIAL_RATING = 1500
K_FACTOR = 32


def elo_update(ratings: Mapping[str, int], scores: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """New ratings of the players in ``scores`` (missing ratings start at 1500)."""
    players = sorted(scores)
    n = len(players)
    if n < 2:
        return {}
    r = {p: ratings.get(p, INITIAL_RATING) for p in players}
    out = {}
    for i in players:
        total = 0.0
        for j in players:
            if i == j:
                continue
            actual = 1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0
            total += actual - 1.0 / (1.0 + 10.0 ** ((r[j] - r[i]) / 400.0))
        out[i] = r[i] + round(K_FACTOR / (n - 1) * total)
    return out
