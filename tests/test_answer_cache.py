"""Leaderboard answers kept as bytes while the boards are unchanged
(server/answer_cache.py, ``Leaderboards.stamp``): the same bytes again under the same
stamp, a fresh answer once the projection folded anything, moved, or the clock's
second changed; bounded in answers and bytes. The server test plays a real match
into a running server's store and reads the board over real HTTP."""

from __future__ import annotations

import asyncio
import json

from leaderboard_fixtures import record_matches
from server_helpers import running_app

from replay import protocol as p
from replay.leaderboards.service import Leaderboards
from server.answer_cache import MAX_ANSWER_BYTES, AnswerCache

LB = p.LEADERBOARD_PREFIX


def test_an_answer_is_given_again_only_under_its_stamp():
    cache = AnswerCache(max_answers=3)
    cache.put("/a?", (1, 0, 5), 200, b"A")
    assert cache.get("/a?", (1, 0, 5)) == (200, b"A")
    assert cache.get("/a?", (2, 0, 5)) is None  # the boards changed
    assert cache.get("/b?", (1, 0, 5)) is None
    cache.put("/a?", (2, 0, 5), 200, b"A2")  # replaced, not added
    assert len(cache) == 1 and cache.get("/a?", (2, 0, 5)) == (200, b"A2")


def test_the_cache_is_bounded_in_answers_and_bytes():
    cache = AnswerCache(max_answers=3)
    for name in "abcd":
        cache.put(name, 0, 200, name.encode())
    assert len(cache) == 3 and cache.get("a", 0) is None  # the oldest went first
    assert [cache.get(n, 0) for n in "bcd"] == [(200, b"b"), (200, b"c"), (200, b"d")]
    cache.put("big", 0, 200, b"x" * (MAX_ANSWER_BYTES + 1))
    assert cache.get("big", 0) is None and len(cache) == 3


async def test_the_stamp_moves_with_the_boards_the_position_and_the_second(tmp_path):
    async with running_app(tmp_path) as app:
        now = [1_000_000.25]
        service = Leaderboards(app.projection, clock=lambda: now[0])
        first = service.stamp()
        assert service.stamp() == first
        now[0] += 0.5
        assert service.stamp() == first  # the same second
        now[0] += 0.5
        assert service.stamp() != first  # a new second: a period may have begun
        second = service.stamp()
        app.projection.state.apply([])  # a fold, even of nothing, may change a board
        assert service.stamp() != second
        third = service.stamp()
        app.projection.state.position += 1
        assert service.stamp() != third


async def test_a_page_asked_again_is_the_same_until_a_match_changes_the_board(tmp_path):
    async with running_app(tmp_path) as app:
        target = f"{LB}/kills?limit=10"

        async def get(path: str) -> tuple[int, dict]:
            reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            writer.close()
            return int(head.split()[1]), json.loads(body)

        status, empty = await get(target)
        assert status == 200 and empty["entries"] == []
        assert (await get(target))[1] == empty  # from the cache: nothing changed
        [_] = await record_matches(app.store, 1, players=4, seconds=20.0, prefix="c")
        position = await app.store.last_position()
        status, waited = await get(f"{target}&wait={position}&timeout=10")
        assert status == 200 and waited["reached"] is True and waited["entries"]
        status, again = await get(target)
        # The projection folded the match: the kept empty page is not given again.
        assert again["entries"] == waited["entries"] and again["position"] >= position
