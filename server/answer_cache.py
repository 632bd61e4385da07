"""Answers to plain GETs kept as bytes while what they were read from is unchanged.

A leaderboard page asked by many clients (the top 100 of a board, a match's players)
is the same bytes until the boards change: building it again costs a dict per entry
and the JSON encoding each time (~100 us in process for a top-100 page, against
~15 us to send it). The boards change at most once per projection step (every 25 ms
or more while events come), so between two steps every reader after the first gets
the bytes the first one caused.

An answer is kept under its request target with the *stamp* it was read at (what
the answer depends on besides the target: ``Leaderboards.stamp``), and given again
only while the stamp is the same. Bounded: :data:`MAX_ANSWERS` answers of at most
:data:`MAX_ANSWER_BYTES` each; the oldest kept goes first.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["MAX_ANSWERS", "MAX_ANSWER_BYTES", "AnswerCache"]

MAX_ANSWERS = 512
MAX_ANSWER_BYTES = 64 * 1024
"""A top-100 page is ~8 KiB: the cache holds at most 32 MiB, usually far less."""


class AnswerCache:
    """``target -> (stamp, status, body)``, at most :data:`MAX_ANSWERS` of them."""

    def __init__(self, max_answers: int = MAX_ANSWERS) -> None:
        self.max_answers = max_answers
        self._answers: dict[str, tuple[Hashable, int, bytes]] = {}

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, target: str, stamp: Hashable) -> tuple[int, bytes] | None:
        """The answer kept for ``target`` if it was read at ``stamp``, else None."""
        kept = self._answers.get(target)
        if kept is None or kept[0] != stamp:
            return None
        return kept[1], kept[2]

    def put(self, target: str, stamp: Hashable, status: int, body: bytes) -> None:
        if len(body) > MAX_ANSWER_BYTES:
            return
        answers = self._answers
        answers.pop(target, None)  # a new answer goes to the end: the last to go
        while len(answers) >= self.max_answers:
            del answers[next(iter(answers))]
        answers[target] = (stamp, status, body)
