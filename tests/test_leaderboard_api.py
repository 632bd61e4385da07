"""The leaderboards HTTP JSON API: the pure handler, then the same routes served by
a real ``websockets`` server on loopback and queried with the SDK's ``Leaderboards``."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from games import GAMES, METRICS, open_test_store
from leaderboard_fixtures import fill, record_matches
from websockets.asyncio.server import serve

from client_sdk.leaderboards import LeaderboardError, Leaderboards
from replay.leaderboards.projection import LeaderboardProjection
from replay.leaderboards.service import Leaderboards as Service
from server.leaderboard_api import handle, process_request


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lbapi") / "events.db"
    asyncio.run(fill(str(path), count=2, seconds=15, seed=3))
    return path


@pytest.fixture
async def service(filled: Path, tmp_path: Path):
    path = tmp_path / "events.db"
    shutil.copy(filled, path)
    store = open_test_store(str(path))
    await store.open()
    projection = LeaderboardProjection(
        store, str(tmp_path / "boards.sqlite"), GAMES.default_boards(), METRICS
    )
    await projection.open()
    await projection.catch_up()
    yield Service(projection)
    await projection.close()
    await store.close()


async def get(service: Service, path: str, **params: object) -> tuple[int, dict]:
    return await handle(service, "GET", path, {k: str(v) for k, v in params.items()})


async def test_routes(service: Service) -> None:
    pos = service.projection.position
    status, body = await get(service, "/api/leaderboards")
    assert status == 200 and body["position"] == pos
    assert {b["id"] for b in body["boards"]} >= {"kills", "best_score", "wins", "rating"}
    status, top = await get(service, "/api/leaderboards/rating", limit=3)
    assert status == 200 and top["count"] == 8 and len(top["entries"]) == 3
    assert [e["rank"] for e in top["entries"]] == [1, 2, 3] and top["next_cursor"]
    status, nxt = await get(service, "/api/leaderboards/rating", limit=3, cursor=top["next_cursor"])
    assert [e["rank"] for e in nxt["entries"]] == [4, 5, 6]
    owner = nxt["entries"][1]["owner"]
    status, me = await get(service, f"/api/leaderboards/rating/players/{owner}")
    assert status == 200 and me["entry"] == nxt["entries"][1] and me["position"] == pos
    status, around = await get(service, f"/api/leaderboards/rating/players/{owner}/around", limit=3)
    assert [e["rank"] for e in around["entries"]] == [4, 5, 6]
    status, count = await get(service, "/api/leaderboards/kills/count")
    assert status == 200 and count["count"] == 8 and count["period"] == "all"
    status, periods = await get(service, "/api/leaderboards/kills_weekly/periods")
    assert status == 200 and periods["periods"] == [periods["current"]]
    status, waited = await get(service, "/api/leaderboards/wins", wait=pos, timeout=1)
    assert status == 200 and waited["reached"] is True
    status, waited = await get(service, "/api/leaderboards/wins", wait=pos + 1, timeout=0.05)
    assert status == 200 and waited["reached"] is False and waited["position"] == pos


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/api/leaderboards/nope", {}, 404, "unknown_board"),
        ("/api/leaderboards/kills/players/nobody", {}, 404, "unknown_player"),
        ("/api/leaderboards/kills/players/nobody/around", {}, 404, "unknown_player"),
        ("/api/leaderboards/kills", {"limit": 1001}, 400, "limit_too_large"),
        ("/api/leaderboards/kills", {"limit": 0}, 400, "bad_parameter"),
        ("/api/leaderboards/kills", {"limit": "ten"}, 400, "bad_parameter"),
        ("/api/leaderboards/kills", {"cursor": "%%%"}, 400, "bad_cursor"),
        ("/api/leaderboards/kills", {"cursor": "WzEsMl0"}, 400, "bad_cursor"),  # [1,2]
        # ["kills", "all", 1, 0, 2**70] and ["kills", "all", 2**64, 0, 5]: beyond the key
        (
            "/api/leaderboards/kills",
            {"cursor": "WyJraWxscyIsICJhbGwiLCAxLCAwLCAxMTgwNTkxNjIwNzE3NDExMzAzNDI0XQ"},
            400,
            "bad_cursor",
        ),
        (
            "/api/leaderboards/kills",
            {"cursor": "WyJraWxscyIsICJhbGwiLCAxODQ0Njc0NDA3MzcwOTU1MTYxNiwgMCwgNV0"},
            400,
            "bad_cursor",
        ),
        ("/api/leaderboards/kills", {"period": "2020-01"}, 404, "unknown_period"),
        ("/api/leaderboards/kills", {"period": "previous"}, 404, "unknown_period"),
        ("/api/leaderboards/kills_weekly", {"period": "2020-W01"}, 404, "unknown_period"),
        ("/api/leaderboards/kills_weekly", {"period": "2020-W99"}, 404, "unknown_period"),
        ("/api/leaderboards/kills_weekly", {"period": "previous"}, 404, "unknown_period"),
        ("/api/leaderboards/kills", {"wait": "x"}, 400, "bad_parameter"),
        ("/api/leaderboards/kills", {"wait": -1}, 400, "bad_parameter"),
        ("/api/leaderboards/kills", {"wait": 1, "timeout": 99}, 400, "bad_parameter"),
        ("/api/leaderboards/kills", {"wait": 1, "timeout": "nan"}, 400, "bad_parameter"),
        ("/api/leaderboards/kills", {"colour": "red"}, 400, "bad_parameter"),
        ("/api/leaderboards/kills/players", {}, 404, "not_found"),
        ("/api/leaderboardsX", {}, 404, "not_found"),
    ],
)
async def test_bad_input_is_a_4xx_with_a_code(service, path, params, status, code) -> None:
    got_status, body = await get(service, path, **params)
    assert (got_status, body["error"]["code"]) == (status, code)
    assert body["error"]["message"]


async def test_cursor_of_another_board_is_refused(service: Service) -> None:
    _, top = await get(service, "/api/leaderboards/kills", limit=1)
    status, body = await get(service, "/api/leaderboards/wins", cursor=top["next_cursor"])
    assert (status, body["error"]["code"]) == (400, "bad_cursor")
    status, body = await handle(service, "POST", "/api/leaderboards/kills", {})
    assert (status, body["error"]["code"]) == (405, "method_not_allowed")


async def test_sdk_over_a_real_http_server(service: Service) -> None:
    async def no_ws(connection) -> None:
        await connection.close()

    async with serve(no_ws, "127.0.0.1", 0, process_request=process_request(service)) as server:
        port = server.sockets[0].getsockname()[1]
        client = Leaderboards(f"http://127.0.0.1:{port}")
        boards = await client.boards()
        assert boards["position"] == service.projection.position
        page = await client.top("kills", limit=5)
        assert len(page.entries) == 5 and page.count == 8 and page.next_cursor
        rest = await client.top("kills", limit=5, cursor=page.next_cursor)
        assert [e.rank for e in page.entries + rest.entries] == list(range(1, 9))
        assert rest.next_cursor is None
        entry, info = await client.entry("kills", rest.entries[0].owner)
        assert entry == rest.entries[0] and info.position == service.projection.position
        around = await client.around("kills", entry.owner, limit=3)
        assert entry in around.entries
        assert await client.count("kills") == 8
        assert (await client.periods("kills"))["periods"] == ["all"]
        with pytest.raises(LeaderboardError) as err:
            await client.top("kills", limit=5000)
        assert (err.value.status, err.value.code) == (400, "limit_too_large")
        with pytest.raises(LeaderboardError) as err:
            await client.entry("kills", "no/body")
        assert (err.value.status, err.value.code) == (404, "unknown_player")
        # Read-your-writes: a match ends; waiting for its last position shows its result.
        runner = asyncio.create_task(service.projection.run(poll_interval=0.05))
        store = service.projection.store
        await record_matches(store, 1, players=4, seconds=5, seed=77, prefix="rw")
        last = await store.last_position()
        page = await client.top("wins", wait=last, timeout=10)
        assert page.reached is True and page.position >= last
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        # Raw HTTP: the body is JSON with the documented error shape.
        url = f"http://127.0.0.1:{port}/api/leaderboards/nope"
        try:
            await asyncio.to_thread(urllib.request.urlopen, url)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
            assert json.loads(exc.read())["error"]["code"] == "unknown_board"
        else:
            raise AssertionError("expected a 404")
