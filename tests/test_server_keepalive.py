"""Plain HTTP keeps its connection alive (server/http_keepalive.py): several requests per
TCP connection, bounded per connection (requests, idle time, pipelining), refusals in
the documented JSON shape, websocket upgrades first or after plain requests, and kept
connections counted toward max_connections without locking anyone out. Real server on
loopback, real sockets."""

from __future__ import annotations

import asyncio
import http.client
import json
from urllib.parse import urlsplit

from server_helpers import raw_connect, running_app, unpack
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.streams import StreamReader

from replay import protocol as p
from replay.leaderboards.board import Board
from server.http import HttpRequest, Router, RouteTable, json_response, split_target
from server.http_keepalive import _SLOW, MAX_PIPELINED, parse_head
from server.proxy import forward

UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    f"Sec-WebSocket-Protocol: {p.SUBPROTOCOL}\r\n\r\n"
)


def get(path: str, *headers: str, version: str = "HTTP/1.1") -> bytes:
    return "".join(
        [f"GET {path} {version}\r\nHost: x\r\n", *(h + "\r\n" for h in headers), "\r\n"]
    ).encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection (EOF) within a generous bound."""
    async with asyncio.timeout(10):
        return await reader.read() == b""


async def open_conn(app):
    return await asyncio.open_connection("127.0.0.1", app.port)


async def test_several_requests_share_one_tcp_connection(tmp_path):
    async with running_app(tmp_path) as app:

        def client() -> list[tuple[int, int, str | None]]:
            conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
            seen = []
            for path in ("/healthz", "/api/leaderboards/kills?limit=5", "/nope", "/healthz"):
                conn.request("GET", path)
                r = conn.getresponse()
                json.loads(r.read())
                seen.append((r.status, id(conn.sock), r.getheader("Connection")))
            conn.close()
            return seen

        seen = await asyncio.to_thread(client)
        assert [s for s, _, _ in seen] == [200, 200, 404, 200]
        assert len({sock for _, sock, _ in seen}) == 1  # http.client never reconnected
        assert all(c is None for _, _, c in seen)  # HTTP/1.1: kept alive by default
        # The kept-alive connection counts as an open connection (/healthz saw itself).
        reader, writer = await open_conn(app)
        writer.write(get("/healthz"))
        status, headers, body = await read_response(reader)
        assert status == 200 and json.loads(body)["connections"] >= 1
        assert headers["keep-alive"].startswith("timeout=")
        writer.close()


async def test_the_last_allowed_request_is_answered_with_connection_close(tmp_path):
    async with running_app(tmp_path, http_max_requests=3) as app:
        reader, writer = await open_conn(app)
        for i in range(3):
            writer.write(get("/healthz"))
            status, headers, _ = await read_response(reader)
            assert status == 200
            assert headers.get("connection") == ("close" if i == 2 else None), (i, headers)
        assert await closed_by_server(reader)
        writer.close()


async def test_connection_close_and_http_1_0_are_honoured(tmp_path):
    async with running_app(tmp_path) as app:
        reader, writer = await open_conn(app)
        writer.write(get("/healthz", "Connection: close"))
        status, headers, _ = await read_response(reader)
        assert (status, headers["connection"]) == (200, "close")
        assert await closed_by_server(reader)
        writer.close()
        # HTTP/1.0 closes unless it asks for keep-alive.
        reader, writer = await open_conn(app)
        writer.write(get("/healthz", version="HTTP/1.0"))
        assert (await read_response(reader))[1]["connection"] == "close"
        assert await closed_by_server(reader)
        writer.close()
        reader, writer = await open_conn(app)
        for _ in range(2):
            writer.write(get("/healthz", "Connection: keep-alive", version="HTTP/1.0"))
            status, headers, _ = await read_response(reader)
            assert (status, headers["connection"]) == (200, "keep-alive")
        writer.close()


async def test_an_idle_connection_is_closed_after_the_idle_timeout(tmp_path):
    async with running_app(tmp_path, http_idle_timeout=0.3) as app:
        reader, writer = await open_conn(app)
        writer.write(get("/healthz"))
        assert (await read_response(reader))[0] == 200
        assert await closed_by_server(reader)  # nothing sent after the answer
        # So is one that sends half a request head and stops.
        writer.close()
        reader, writer = await open_conn(app)
        writer.write(get("/healthz"))
        await read_response(reader)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost:")
        assert await closed_by_server(reader)
        writer.close()
        while app.http.open:  # the server forgets them
            await asyncio.sleep(0.01)


async def test_pipelined_requests_are_answered_in_order(tmp_path):
    async with running_app(tmp_path) as app:
        reader, writer = await open_conn(app)
        paths = ["/healthz", "/nope", "/api/nodes", "/ws", "/api/matches/none"] * 8
        writer.write(b"".join(get(path) for path in paths))  # more than MAX_PIPELINED
        assert len(paths) > MAX_PIPELINED
        statuses = [(await read_response(reader))[0] for _ in paths]
        assert statuses == [200, 404, 200, 426, 404] * 8
        writer.write(get("/healthz"))  # and the connection goes on
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_pipelined_requests_past_the_limit_are_left_unanswered_cleanly(tmp_path):
    async with running_app(tmp_path, http_max_requests=3) as app:
        reader, writer = await open_conn(app)
        writer.write(get("/healthz") * 6)
        answers = [await read_response(reader) for _ in range(3)]
        assert [a[0] for a in answers] == [200] * 3
        assert answers[-1][1]["connection"] == "close"
        assert await closed_by_server(reader)  # the rest: the client retries elsewhere
        writer.close()


async def test_a_malformed_second_request_gets_a_json_error_and_a_close(tmp_path):
    async with running_app(tmp_path) as app:
        for bad, status, code in (
            (b"NONSENSE\r\n\r\n", 400, "bad_request"),
            (b"GET /healthz HTTP/1.1\nHost: x\n\n", 400, "bad_request"),
            (b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, "bad_request"),
            (b"GET /h\xc3\xa9 HTTP/1.1\r\n\r\n", 400, "bad_request"),
            (b"GET / HTTP/2.0\r\n\r\n", 400, "bad_request"),
            (b"POST /api/tokens HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, "bad_request"),
            (get("/healthz", "X-Big: " + "b" * 20_000), 431, "headers_too_large"),
            (get("/healthz?" + "a" * 20_000), 414, "request_line_too_long"),
        ):
            reader, writer = await open_conn(app)
            # Pipelined behind a good request, with more after it that is never answered.
            writer.write(get("/healthz") + bad + get("/healthz"))
            assert (await read_response(reader))[0] == 200
            got, headers, body = await read_response(reader)
            assert (got, headers["connection"]) == (status, "close"), (bad[:20], got)
            assert headers["content-type"] == "application/json"
            assert json.loads(body)["error"]["code"] == code, body
            assert await closed_by_server(reader)
            writer.close()


async def test_a_large_but_valid_request_head_is_answered(tmp_path):
    # Over 8 KiB in all, each line under the 8 KiB limit (a big cookie, say).
    async with running_app(tmp_path) as app:
        reader, writer = await open_conn(app)
        big = [f"X-Part-{i}: {'v' * 5000}" for i in range(3)]
        writer.write(get("/healthz", *big) + get("/healthz"))
        assert [(await read_response(reader))[0] for _ in range(2)] == [200, 200]
        writer.close()


async def test_websocket_upgrades_first_or_after_plain_requests(tmp_path):
    async with running_app(tmp_path) as app:
        ws = await raw_connect(app, None)  # a fresh connection, as every client does
        assert unpack(await ws.recv())[0] == p.WELCOME
        await ws.close()
        # After two plain requests on the same connection (the upgrade pipelined
        # behind the second): websockets reads it as a fresh handshake.
        reader, writer = await open_conn(app)
        writer.write(get("/healthz"))
        assert (await read_response(reader))[0] == 200
        writer.write(get("/api/nodes") + UPGRADE.encode())
        assert (await read_response(reader))[0] == 200
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        frame = await reader.readexactly(2)
        assert frame[0] == 0x82  # WELCOME: one binary frame
        length = frame[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        payload = await reader.readexactly(length)
        assert unpack(payload)[0] == p.WELCOME
        assert app.http.open == 0 and app.connections == 1
        writer.close()


async def test_idle_keep_alive_connections_never_lock_others_out(tmp_path):
    async with running_app(tmp_path, max_connections=4, authenticated_reserve=0.0) as app:
        held = []
        for _ in range(4):
            reader, writer = await open_conn(app)
            writer.write(get("/healthz"))
            await read_response(reader)
            held.append((reader, writer))
        assert app.http.open == 4
        # A websocket gets in: the connection idle the longest made room.
        ws = await raw_connect(app, None)
        assert unpack(await ws.recv())[0] == p.WELCOME
        assert await closed_by_server(held[0][0])
        assert app.open_connections() <= 4
        # A new plain request too (another idle one goes), and the rest still work.
        reader, writer = await open_conn(app)
        writer.write(get("/healthz"))
        assert (await read_response(reader))[0] == 200
        assert await closed_by_server(held[1][0])
        held[3][1].write(get("/healthz"))
        assert (await read_response(held[3][0]))[0] == 200
        assert app.open_connections() <= 4
        await ws.close()
        for _, w in [*held, (reader, writer)]:
            w.close()


async def test_a_server_at_its_limit_with_no_idle_connection_answers_and_closes(tmp_path):
    async with running_app(tmp_path, max_connections=1, authenticated_reserve=0.0) as app:
        ws = await raw_connect(app, None)
        assert unpack(await ws.recv())[0] == p.WELCOME
        reader, writer = await open_conn(app)
        writer.write(get("/healthz"))
        status, headers, _ = await read_response(reader)
        assert (status, headers["connection"]) == (200, "close")
        assert await closed_by_server(reader)
        writer.close()
        await ws.close()


async def test_forwarded_requests_still_get_their_answer(tmp_path):
    # A cluster node forwards with Connection: close and reads to EOF (server/proxy.py).
    async with running_app(tmp_path) as app:
        request = Request("/api/nodes", Headers([("Host", "x")]), "GET")
        response = await forward(f"http://127.0.0.1:{app.port}", request, timeout=10)
        assert response.status_code == 200 and json.loads(response.body) == {"nodes": []}


async def test_a_stopping_server_closes_idle_keep_alive_connections(tmp_path):
    async with running_app(tmp_path) as app:
        reader, writer = await open_conn(app)
        writer.write(get("/healthz"))
        await read_response(reader)
        await app.stop()
        assert await closed_by_server(reader)
        writer.close()


def test_json_answers_hold_integers_past_64_bits():
    # orjson refuses them; the answer falls back to the json module's encoding.
    value = {"big": 2**70, "nested": {1: [1.5, None, "é"]}}
    body = json_response(None, value).body  # type: ignore[arg-type]
    assert json.loads(body) == {"big": 2**70, "nested": {"1": [1.5, None, "é"]}}
    assert json.loads(json_response(None, {2: "x"}).body) == {"2": "x"}  # type: ignore[arg-type]


LB = p.LEADERBOARD_PREFIX


def count_at_once(app) -> list[str]:
    """The targets the connection answered at once (``PlainHttp.at_once``), from now on."""
    taken: list[str] = []
    at_once = app.http.at_once

    def counting(target: str):
        answer = at_once(target)
        if answer is not None:
            taken.append(target)
        return answer

    app.http.at_once = counting
    return taken


async def test_anonymous_leaderboard_gets_answered_at_once_as_the_router_answers_them(tmp_path):
    async with running_app(tmp_path) as app:
        board = Board(descending=True)
        board.load(["ann", "bob", "c/d", "eve"], [5, 9, 7, 1], [0] * 4, [1, 2, 3, 4])
        app.projection.state.boards["kills"]["all"] = board
        taken = count_at_once(app)
        targets = [
            LB,
            f"{LB}/",
            f"{LB}/kills?limit=2",
            f"{LB}//kills/",
            f"{LB}/kills/count",
            f"{LB}/kills/periods",
            f"{LB}/kills/players/bob",
            f"{LB}/kills/players/c%2Fd",
            f"{LB}/kills/players/ann/around?limit=3",
            f"{LB}/kills/players/nobody",
            f"{LB}/nope",
            f"{LB}/kills?limit=100000",
            f"{LB}/kills?limit=x",
            f"{LB}/kills?bogus=1",
            f"{LB}/kills_weekly?period=previous",
            f"{LB}/kills/x/y/z/w",
        ]
        reader, writer = await open_conn(app)
        for target in targets:
            writer.write(get(target))
            at_once = await read_response(reader)
            # "Connection: keep-alive" changes nothing in HTTP/1.1 but takes the router's way.
            writer.write(get(target, "Connection: keep-alive"))
            routed = await read_response(reader)
            assert (at_once[0], at_once[2]) == (routed[0], routed[2]), target
            assert "connection" not in at_once[1] and at_once[1]["keep-alive"], target
            assert at_once[1]["content-type"] == routed[1]["content-type"] == "application/json"
        assert taken == targets  # each plain GET was answered at once, and only those
        writer.write(get(f"{LB}/kills/players/c%2Fd") + get(f"{LB}/kills/players/nobody"))
        status, _, body = await read_response(reader)
        entry = json.loads(body)["entry"]
        assert (status, entry["rank"], entry["owner"], entry["value"]) == (200, 2, "c/d", 7)
        status, _, body = await read_response(reader)
        assert (status, json.loads(body)["error"]["code"]) == (404, "unknown_player")
        writer.close()


async def test_credentials_and_other_requests_take_the_routers_way(tmp_path):
    async with running_app(tmp_path, http_max_requests=4) as app:
        taken = count_at_once(app)
        reader, writer = await open_conn(app)
        # A token is checked (a bad one: 401), never read past as anonymous.
        writer.write(get(f"{LB}/kills?token=forged"))
        assert (await read_response(reader))[0] == 401
        writer.write(get(f"{LB}/kills", "Authorization: Bearer forged"))
        assert (await read_response(reader))[0] == 401
        # wait= waits for a position (the router's task); HEAD has no body.
        writer.write(get(f"{LB}/kills?wait=0"))
        status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body)["reached"] is True
        assert taken == []  # none of them was answered at once
        # The request budget counts answers given at once: the 4th closes.
        writer.write(get(f"{LB}/kills"))
        status, headers, _ = await read_response(reader)
        assert (status, headers.get("connection")) == (200, "close")
        assert await closed_by_server(reader)
        assert taken == [f"{LB}/kills"]
        writer.close()
        # HTTP/1.0 and HEAD take the router's way too (HEAD: 405 for these GET routes,
        # its head without the body).
        reader, writer = await open_conn(app)
        writer.write(get(f"{LB}/kills", "Connection: keep-alive", version="HTTP/1.0"))
        status, headers, body = await read_response(reader)
        assert (status, headers["connection"]) == (200, "keep-alive") and json.loads(body)
        writer.write(f"HEAD {LB}/kills HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405 ")
        writer.write(get("/healthz"))  # no body came after the HEAD's head
        assert (await read_response(reader))[0] == 200
        assert taken == [f"{LB}/kills"]
        writer.close()


async def test_pipelined_gets_answered_at_once_keep_their_order_with_the_others(tmp_path):
    async with running_app(tmp_path) as app:
        taken = count_at_once(app)
        reader, writer = await open_conn(app)
        paths = [f"{LB}/kills", "/healthz", f"{LB}/nope", f"{LB}/kills?wait=0", f"{LB}"] * 8
        writer.write(b"".join(get(path) for path in paths))
        statuses = [(await read_response(reader))[0] for _ in paths]
        assert statuses == [200, 200, 404, 200, 200] * 8
        assert taken  # some were answered at once, in their turn among the others
        writer.close()


async def test_answers_that_wait_and_answers_given_at_once_keep_their_order(tmp_path):
    # A leaderboard query is answered at once, in the call that read it; with wait= (and
    # /healthz, which asks the store) the answer is awaited in a task: pipelined
    # together, they still come back in the order asked.
    async with running_app(tmp_path) as app:
        reader, writer = await open_conn(app)
        paths = [
            "/api/leaderboards/kills/count?wait=0&timeout=1",
            "/api/leaderboards/kills?limit=5",
            "/healthz",
            "/api/leaderboards/kills/count",
            "/api/leaderboards/nope/count?wait=0",
            "/api/leaderboards/kills?limit=0",
        ] * 4
        writer.write(b"".join(get(path) for path in paths))
        answers = [await read_response(reader) for _ in paths]
        bodies = [json.loads(body) for _, _, body in answers]
        for path, (status, _, _), body in zip(paths, answers, bodies, strict=True):
            if "nope" in path:
                assert (status, body["error"]["code"]) == (404, "unknown_board")
            elif "limit=0" in path:
                assert (status, body["error"]["code"]) == (400, "bad_parameter")
            elif path == "/healthz":
                assert status == 200 and "headroom" in body
            else:
                assert status == 200 and body["board"] == "kills"
                assert ("reached" in body) == ("wait=" in path)
                assert ("entries" in body) == ("limit=5" in path)
        writer.close()


async def test_a_client_that_reads_late_gets_every_answer_in_order(tmp_path):
    # Answers of ~40 KiB pipelined unread fill the socket buffers: the server stops
    # answering at once (writing paused), then reading (MAX_PIPELINED queued), and
    # resumes both as the client reads.
    async with running_app(tmp_path) as app:
        reader, writer = await open_conn(app)
        paths = ["/static/js/app.js", "/api/leaderboards/kills/count"] * 100
        writer.write(b"".join(get(path) for path in paths))
        await asyncio.sleep(0.5)  # the server meets a full socket buffer meanwhile
        answers = [await read_response(reader) for _ in paths]
        assert all(status == 200 for status, _, _ in answers)
        scripts = {body for path, (_, _, body) in zip(paths, answers, strict=True) if "js" in path}
        assert len(scripts) == 1 and len(next(iter(scripts))) > 20_000
        counts = [json.loads(body)["count"] for _, _, body in answers[1::2]]
        assert counts == [0] * 100
        writer.close()


QUICK_HEADS = [
    b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /api/leaderboards/kills HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"
    b"Accept-Encoding: identity\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX-A:  v w \t\r\nX-B:\tv\r\nX-C:\r\nX-D:   \r\nX-E:v\r\n\r\n",
    b"GET /x HTTP/1.1\r\nConnection: a\r\nconnection: b, c\r\nAuthorization: Bearer t\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX-Latin: caf\xe9 \x80\xff\r\nContent-Length: 0\r\n\r\n",
    b"GET /%C3%A9?q=%20&r HTTP/1.1\r\nX-Token: !#$%&'*+.^_`|~09azAZ-\r\n\r\n",
]
SLOW_HEADS = [
    b"GET /x HTTP/1.1\r\nBad Name: v\r\n\r\n",
    b"GET /x HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX-Ctl: a\x01b\r\n\r\n",
    b"GET /x HTTP/1.1\r\n folded: v\r\n\r\n",
    b"GET /x HTTP/1.1\r\n: v\r\n\r\n",
    b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n",
    b"GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /x HTTP/1.1\nHost: x\n\n",
    b"GET /x HTTP/1.1\r\n" + b"X-H: v\r\n" * 200 + b"\r\n",
]


def websockets_parse(head: bytes) -> Request:
    """What websockets' own parser makes of ``head`` (raises what it raises)."""
    reader = StreamReader()
    reader.feed_data(head)
    reader.feed_eof()
    parser = Request.parse(reader.read_line)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete")


def test_the_quick_head_parser_reads_what_websockets_parser_reads():
    # parse_head takes the regular heads itself and must read them exactly as websockets'
    # parser does; anything else it leaves to that parser (_SLOW), never reads it its way.
    for head in QUICK_HEADS:
        buffer = bytearray(head + b"GET /next")
        quick = parse_head(buffer)
        theirs = websockets_parse(head)
        assert isinstance(quick, HttpRequest), head
        assert (quick.method, quick.path, quick.protocol) == ("GET", theirs.path, "HTTP/1.1")
        assert list(quick.headers.raw_items()) == list(theirs.headers.raw_items()), head
        for name in ("connection", "X-A", "x-latin", "Host", "absent"):
            assert quick.headers.get_all(name) == theirs.headers.get_all(name)
        assert bytes(buffer) == b"GET /next"  # the head was taken, the rest left
        assert (quick.route_path, quick.query_string) == tuple(
            getattr(urlsplit(theirs.path), part) for part in ("path", "query")
        )
    for head in SLOW_HEADS:
        assert parse_head(bytearray(head)) is _SLOW, head
    assert parse_head(bytearray(b"GET /x HTTP/1.1\r\nHost: x\r\n")) is None  # incomplete


def test_request_targets_split_as_urlsplit_splits_them():
    for target in ["/a", "/a?b=1&c", "/a?b?c", "/?", "/a#frag?x", "//host/p?q", "/a\tb?c",
                   "http://h:1/p?q", "*", "/a;p?q=%2F"]:  # fmt: skip
        url = urlsplit(target)
        assert split_target(target) == (url.path, url.query), target


def test_the_router_picks_the_first_route_that_matches_in_order():
    table: RouteTable[str] = RouteTable()

    @table.route("GET", r"/items/(?P<item>[^/]+)")
    def item(deps: str, conn, request, params):  # answered at once
        return json_response(conn, {"route": "item", "deps": deps} | params)

    @table.route("GET", r"/items/special")
    def special(deps: str, conn, request, params):  # shadowed by the route before it
        return json_response(conn, {"route": "special"})

    @table.route("POST", r"/items/(?P<item>[^/]+)/(?P<action>start|end)")
    async def act(deps: str, conn, request, params):  # awaited
        await asyncio.sleep(0)
        return json_response(conn, {"route": "act"} | params)

    @table.route("GET", r"/(?P<rest>.*)")
    def catch_all(deps: str, conn, request, params):
        return json_response(conn, {"route": "catch_all"} | params)

    router = Router(table.bind("d"))

    def ask(method: str, target: str) -> tuple[int, dict]:
        request = HttpRequest.of(target, Headers(), method, "HTTP/1.1")
        answer = router.dispatch(None, request)  # type: ignore[arg-type]
        if not isinstance(answer, Response):
            answer = asyncio.run(answer)  # type: ignore[arg-type]
        return answer.status_code, json.loads(answer.body)

    assert ask("GET", "/items/special?x=1") == (
        200,
        {"route": "item", "deps": "d", "item": "special"},
    )
    assert ask("GET", "/items/a/b") == (200, {"route": "catch_all", "rest": "items/a/b"})
    assert ask("POST", "/items/7/end") == (200, {"route": "act", "item": "7", "action": "end"})
    assert ask("POST", "/items/7/stop")[0] == 405  # the GET catch-all serves that path
    assert ask("DELETE", "/items/7")[0] == 405
    assert (
        Router(table.bind("d")[:1])
        .dispatch(None, HttpRequest.of("/x", Headers(), "GET", "HTTP/1.1"))
        .status_code
        == 404
    )  # type: ignore[arg-type, union-attr]
