"""The spectator viewer in a real browser (Debian's chromium through Playwright) against a
real server child process with bot matches played over websockets. What the page draws
is read through its documented hook (``window.matchreplayViewer``, docs/viewer.md) and
compared field by field with ``ReplayEngine.state_at`` on the server's SQLite file.

These tests fail, never skip, when chromium or Playwright is missing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from viewer_harness import (
    FINISHED,
    FINISHED_OPTIONS,
    LIVE,
    LIVE_OPTIONS,
    ViewerServer,
    admin_token,
    first_batch,
    launch_chromium,
    run_async,
    screenshot,
    server_markers,
    server_result,
    server_scoreboard,
    server_states,
    spectator_token,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from client_sdk.spectator import Spectator
from replay import protocol as p

FIN, LIVE_ID, BIG = "viewer-finished", "viewer-live", "viewer-64"
BIG_TOKEN = spectator_token(BIG)  # BIG is not public: a caster's token for it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerServer]:
    srv = ViewerServer(tmp_path_factory.mktemp("viewer"))
    srv.simulate(BIG, players=64, minutes=0.5, seed=3)  # 64 players, deaths and respawns
    srv.start()
    try:
        srv.create_match(FIN, FINISHED | FINISHED_OPTIONS, seed=7)
        srv.create_match(LIVE_ID, LIVE | LIVE_OPTIONS, seed=8)
        srv.play(FIN)
        srv.play(LIVE_ID)
        srv.wait_status(FIN, "ended")
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


class Console:
    """Console errors and uncaught exceptions of one page."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(msg.text)


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    console = Console(pg)
    yield pg, console
    context.close()


def open_viewer(page: Page, server: ViewerServer, query: str = "") -> None:
    page.goto(f"{server.base}/{query}")
    page.evaluate("window.matchreplayViewer.ready.then(() => true)")


def settled(page: Page) -> None:
    """Wait until every control the page sent is answered (its PLAYBACK applied)."""
    page.wait_for_function("!window.matchreplayViewer.busy()", timeout=10_000)


def drawn(page: Page) -> dict[str, Any]:
    return page.evaluate("window.matchreplayViewer.state()")


def canvas_colours(page: Page) -> int:
    """Distinct colours on the arena canvas (a blank canvas has one)."""
    return page.evaluate(
        """() => {
        const c = document.querySelector('#arena');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i+1] << 8) | d[i+2]);
        return seen.size;
    }"""
    )


def test_home_lists_matches_and_leaderboards(server: ViewerServer, page: Any) -> None:
    pg, console = page
    open_viewer(pg, server)
    _, listed = server.request("GET", "/api/matches")
    listed = [m for m in listed if m["match_id"] != BIG]  # not public: not listed
    rows = pg.locator("#match-list tbody tr")
    assert rows.count() == len(listed) == 2
    by_id = {m["match_id"]: m for m in listed}
    viewer_list = {
        m["match_id"]: m for m in server.request("GET", "/api/viewer/matches")[1]["matches"]
    }
    for i in range(rows.count()):
        row = rows.nth(i)
        info = by_id[row.get_attribute("data-match")]
        assert row.locator(".status").inner_text().startswith(info["status"])
        standings = viewer_list[info["match_id"]]["standings"]
        assert {s["player"] for s in standings} == set(info["players"])
        # Display names (the joined events' names), not player ids.
        assert set(row.locator(".players").inner_text().split(", ")) == {
            s["name"] for s in standings
        }
        # The match says its game, players and creation time; its id is small print.
        match_cell = row.locator(".match").inner_text()
        assert f"{info['game']} · {len(info['players'])} players" in match_cell
        assert "created" in match_cell and "UTC" in match_cell
    # A match whose players have display names of their own (the simulated bots' "Bot 007"
    # for "bot-007") lists those names, not the ids.
    open_viewer(pg, server, f"?token={BIG_TOKEN}")
    cell = pg.locator(f'#match-list tr[data-match="{BIG}"] .players')
    big = cell.get_attribute("title").split(", ")  # all of them; the cell shows the first 8
    ids = server.request("GET", f"/api/matches/{BIG}", BIG_TOKEN)[1]["players"]
    assert len(big) == len(ids) == 64 and not set(big) & set(ids)
    assert "Bot 007" in big
    assert cell.inner_text() == ", ".join(big[:8]) + " and 56 more"
    open_viewer(pg, server)
    fin = pg.locator(f'#match-list tr[data-match="{FIN}"]')
    last = server.request("GET", f"/api/matches/{FIN}")[1]["tick"]
    top = server_scoreboard(server.db, FIN, last)[:3]
    assert fin.locator(".score").inner_text() == " · ".join(
        f"{s['name']} {s['score']}" for s in top
    )
    seconds = last // 30
    assert fin.locator(".duration").inner_text() == f"{seconds // 60}:{seconds % 60:02d}"
    # How it ended, from the game's rules at that tick, under its status.
    result = server_result(server.db, FIN, last)
    assert result is not None and viewer_list[FIN]["result"] == result
    reason = {"time_limit": "time limit", "score_limit": "score limit"}[result["reason"]]
    won = f"{result['winner_name']} won" if result["winner"] else "no winner"
    assert fin.locator(".status .result").inner_text() == f"{won} · {reason}"
    assert viewer_list[LIVE_ID]["result"] is None
    # Live matches come first: they are what a caster opens.
    assert rows.nth(0).get_attribute("data-match") == LIVE_ID
    status, body = server.request("GET", "/api/leaderboards")
    boards = pg.locator("#leaderboards")
    if status == 404:  # not wired into this server: the panel says so
        assert boards.get_attribute("data-state") == "unavailable"
        assert "not enabled" in boards.inner_text()
    else:
        assert boards.get_attribute("data-state") == "loaded"
        shown = [b.get_attribute("data-board") for b in boards.locator(".board").all()]
        assert shown == [b["id"] for b in body["boards"]]
    assert console.errors == []


PRIVATE_PLAYER = "(private)"
"""How the home page shows an entry whose player a private match keeps unnamed."""


def test_home_boards_are_tabs_with_headers_periods_and_names(
    server: ViewerServer, page: Any
) -> None:
    """Five boards are tabs (one table at a time, the page fits the window), each table
    has column headers, a period board says its period, and players are display names."""
    pg, console = page
    status, body = server.request("GET", "/api/leaderboards")
    assert status == 200 and len(body["boards"]) == 5
    # The bots' kills reach the boards through the projection: wait for an entry.
    deadline = time.monotonic() + 30
    while not server.request("GET", "/api/leaderboards/kills")[1]["entries"]:
        assert time.monotonic() < deadline, "no kills on the board"
        time.sleep(0.5)
    open_viewer(pg, server, f"?token={BIG_TOKEN}")  # BIG's players have display names
    pg.wait_for_function("document.querySelector('#leaderboards').dataset.state === 'loaded'")
    boards = pg.locator("#leaderboards .board")
    assert boards.count() == 5
    assert [b.is_visible() for b in boards.all()] == [True, False, False, False, False]
    height = pg.evaluate("document.documentElement.scrollHeight")
    assert height <= 900, height  # the window: nothing to scroll for
    tabs = pg.locator("#leaderboards [role=tab]")
    assert tabs.all_inner_texts() == [b["title"] for b in body["boards"]]
    names = {
        p: n
        for m in server.request("GET", "/api/viewer/matches", BIG_TOKEN)[1]["matches"]
        for p, n in m["names"].items()
    }
    for i, board in enumerate(body["boards"]):
        tabs.nth(i).click()
        panel = pg.locator(f'#leaderboards .board[data-board="{board["id"]}"]')
        assert panel.is_visible() and [b.is_visible() for b in boards.all()].count(True) == 1
        headers = panel.locator("thead th").all_inner_texts()
        assert headers[:2] == ["Rank", "Player"] and len(headers) == 3
        period = panel.locator(".period").inner_text()
        if board["reset"] == "weekly":
            year, week = board["current_period"].split("-W")
            assert period.startswith(f"week {int(week)} of {year} (") and "UTC" in period
        else:
            assert period == "all time"
        # As the page asks (with its token: private matches' players are named to it).
        path = f"/api/leaderboards/{board['id']}?limit=10"
        top = server.request("GET", path, BIG_TOKEN)[1]["entries"]
        cells = panel.locator("tbody tr")
        if not top:
            continue
        assert cells.count() == len(top)
        for row, entry in zip(cells.all(), top, strict=True):
            who = row.locator("td").nth(1)
            assert who.inner_text() == names.get(entry["owner"], entry["owner"])
            assert who.get_attribute("title") == entry["owner"]
    owners = {
        e["owner"]
        for b in body["boards"]
        for e in server.request("GET", f"/api/leaderboards/{b['id']}?limit=10", BIG_TOKEN)[1][
            "entries"
        ]
    }
    assert any(names.get(o, o) != o for o in owners)  # some are shown by a display name
    open_viewer(pg, server)  # the home page as everyone sees it (public matches)
    pg.wait_for_function("document.querySelector('#leaderboards').dataset.state === 'loaded'")
    # Without a token, a private match's players are not named (the simulated ones).
    kills = pg.locator('#leaderboards .board[data-board="kills"] tbody tr td:nth-child(2)')
    anonymous = server.request("GET", "/api/leaderboards/kills?limit=10")[1]["entries"]
    expected = [PRIVATE_PLAYER if e["owner"] is None else e["owner"] for e in anonymous]
    assert kills.all_inner_texts() == expected and PRIVATE_PLAYER in expected
    assert pg.locator("#match-list tbody tr").count() == 2
    assert screenshot(pg, "viewer-home.png").stat().st_size > 10_000
    assert console.errors == []


@pytest.mark.parametrize("match_id", [FIN, BIG])
def test_js_fold_equals_server_state_at(server: ViewerServer, page: Any, match_id: str) -> None:
    """The page's arena decode + fold (arena.js) from tick 0 over the whole match,
    checked at several ticks against the server's state_at; and the v1 upcaster."""
    pg, console = page
    open_viewer(pg, server)
    last = server.last_tick(match_id)
    checks = sorted({0, 1, 40, 89, 90, 150, last // 2, last - 1, last, *range(7, last, 97)})
    # A spectator session of the page's own module: WATCH at tick 0 (a STATE), then STEPs
    # forward, one FRAME per tick, each folded by arena.js.
    folded = pg.evaluate(
        """async ([id, checks, token]) => {
        const A = await import('/static/games/arena/viewer.js');
        const S = await import('/static/js/spectator.js');
        const out = {};
        const keep = (t) => { if (checks.includes(t)) out[t] = A.plainState(session.state); };
        const url = S.websocketUrl(token);
        const session = new S.SpectatorSession(url, id, { reset: keep, frame: keep });
        await session.open(0);
        const end = checks.at(-1);
        // Bounded: a fold that throws leaves the tick behind, and the test must fail, not hang.
        for (let i = 0; i < 100 && session.tick < end; i++) {
            await session.step(Math.min(1000, end - session.tick));
        }
        session.close();
        out.frames = session.received.FRAME;
        // A joined event at version 1 ([slot, player]) is upcast: name = player id.
        const u = A.copyState(session.state);
        A.applyEvent(u, A.decodeBatch(MessagePack.encode([[3, 1, 0, 7, 'old-client']]), 0)[0]);
        out.upcast = [u.players[7], u.names[7]];
        return out;
    }""",
        [match_id, checks, BIG_TOKEN if match_id == BIG else None],
    )
    expected = server_states(server.db, match_id, checks)
    for t in checks:
        assert folded[str(t)] == expected[t], f"tick {t}"
    assert folded["upcast"] == ["old-client", "old-client"]
    assert folded["frames"] == last  # one FRAME per tick after the STATE of tick 0
    assert any(p["kills"] for p in expected[last]["players"])  # the match had kills
    assert console.errors == []


def test_deep_link_shows_exact_tick(server: ViewerServer, page: Any) -> None:
    pg, console = page
    last = server.last_tick(FIN)
    start = server_states(server.db, FIN, [last])[last]["started_tick"]
    ticks = [0, start + 10, start + 100, last]  # bots join when their process is up
    expected = server_states(server.db, FIN, ticks)
    followed = expected[last]["players"][1]
    for tick in ticks:
        open_viewer(pg, server, f"?match={FIN}&tick={tick}&follow={followed['id']}")
        assert pg.evaluate("window.matchreplayViewer.tick()") == tick
        assert drawn(pg) == expected[tick]
        assert pg.locator("#score-tick").inner_text() == f"tick {tick}"
        if tick:  # before the joins there is nobody to follow
            assert pg.evaluate("window.matchreplayViewer.follow()") == followed["slot"]
            assert (
                pg.locator("#scoreboard tr.followed").get_attribute("data-player")
                == (followed["id"])
            )
        assert canvas_colours(pg) > 8
    # The screenshot artifact: the 64-player match, a moment after a kill, following the
    # killer; its state is checked like the others.
    markers = server_markers(server.db, BIG)
    kill = next(m for m in markers if m["kind"] == "killed" and m["tick"] > 300)
    at = kill["tick"] + 2
    killer = kill["data"]["killer_player"]
    open_viewer(pg, server, f"?match={BIG}&tick={at}&follow={killer}&token={BIG_TOKEN}")
    assert drawn(pg) == server_states(server.db, BIG, [at])[at]
    pg.wait_for_function("window.matchreplayViewer.frames() > 2")
    assert screenshot(pg, "viewer-match.png").stat().st_size > 10_000
    assert console.errors == []


def test_scrubber_and_keys_seek_both_ways(server: ViewerServer, page: Any) -> None:
    pg, console = page
    open_viewer(pg, server, f"?match={FIN}&tick=10")
    expected = server_states(server.db, FIN, [200, 199, 200, 201, 60, 59])

    def scrub(tick: int) -> None:  # what a drag does: input events, then change
        pg.eval_on_selector(
            "#scrubber",
            """(el, t) => { el.value = String(t);
                el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }""",
            tick,
        )
        pg.wait_for_function(f"window.matchreplayViewer.tick() === {tick}")
        settled(pg)

    scrub(200)
    assert drawn(pg) == expected[200]
    pg.locator("#arena").click()  # focus away from the range input
    for key, tick in ((",", 199), (".", 200), (".", 201)):
        pg.keyboard.press(key)
        pg.wait_for_function(f"window.matchreplayViewer.tick() === {tick}")
        assert drawn(pg) == expected[tick]
    scrub(60)  # backwards, across fragment bases
    assert drawn(pg) == expected[60]
    pg.locator("#step-back").click()
    pg.wait_for_function("window.matchreplayViewer.tick() === 59")
    assert drawn(pg) == expected[59]
    assert "tick=59" in pg.url and f"match={FIN}" in pg.url  # the URL is a deep link
    assert console.errors == []


def play_for(pg: Page, speed: float, seconds: float) -> tuple[int, float]:
    """Ticks advanced and page-clock seconds elapsed while playing at ``speed``."""
    pg.evaluate("window.matchreplayViewer.seek(0)")
    pg.select_option("#speed", str(speed) if speed != int(speed) else str(int(speed)))
    pg.locator("#play").click()
    time.sleep(seconds)
    pg.locator("#play").click()
    settled(pg)  # the pause is logged with the tick of the server's answer
    log = pg.evaluate("window.matchreplayViewer.events")
    play = [e for e in log if e["type"] == "play"][-1]
    pause = [e for e in log if e["type"] == "pause"][-1]
    return pause["tick"] - play["tick"], (pause["at"] - play["at"]) / 1000


def test_play_advances_at_the_chosen_speed(server: ViewerServer, page: Any) -> None:
    """Play asks the server for the chosen speed (it paces the frames: no timing is
    asserted here, benchmarks measure pace), the page advances, and the tick where it
    paused is exact."""
    pg, console = page
    open_viewer(pg, server, f"?match={FIN}&tick=0")
    for speed in (1, 4):
        ticks, _ = play_for(pg, speed, 1.0)
        assert ticks > 0, speed
        assert pg.evaluate("window.matchreplayViewer.speed()") == speed
        assert drawn(pg) == server_states(server.db, FIN, [ticks])[ticks]
    assert console.errors == []


def test_clip_before_a_kill(server: ViewerServer, page: Any) -> None:
    pg, console = page
    markers = server_markers(server.db, FIN)
    kills = [m for m in markers if m["kind"] in ("killed", "multi_kill")]
    assert kills, "the bots of the finished match killed nobody"
    # Live bots decide when kills happen: prefer one after the first 2 s, take any.
    at = next((m["tick"] for m in kills if m["tick"] > 60), kills[-1]["tick"]) + 5
    # The clip is about the last kill tick at or before `at`; of several kills at that
    # tick the server follows the first one's killer (server/watcher.py, CLIP).
    kill_tick = [m for m in kills if m["tick"] <= at][-1]["tick"]
    kill = next(m for m in kills if m["tick"] == kill_tick)
    open_viewer(pg, server, f"?match={FIN}&tick={at}")
    pg.select_option("#speed", "8")
    pg.keyboard.press("c")
    pg.wait_for_function("window.matchreplayViewer.events.some(e => e.type === 'clip')")
    clip = [e for e in pg.evaluate("window.matchreplayViewer.events") if e["type"] == "clip"][-1]
    assert clip["to_tick"] == kill["tick"]
    assert clip["from_tick"] <= max(0, kill["tick"] - 150)  # 5 s (a streak starts earlier)
    assert clip["follow"] == kill["data"]["killer"]
    # The clip plays to the kill and stops there, following the killer.
    pg.wait_for_function(
        f"!window.matchreplayViewer.playing() && window.matchreplayViewer.tick() === {kill['tick']}"
    )
    settled(pg)
    assert pg.evaluate("window.matchreplayViewer.follow()") == kill["data"]["killer"]
    assert drawn(pg) == server_states(server.db, FIN, [kill["tick"]])[kill["tick"]]
    assert console.errors == []


def test_live_follows_the_delayed_edge(server: ViewerServer, page: Any) -> None:
    pg, console = page
    open_viewer(pg, server, f"?match={LIVE_ID}")
    badge = pg.locator("#live-status")
    assert pg.evaluate("window.matchreplayViewer.live()") is True
    assert "LIVE" in badge.inner_text()
    assert pg.locator("#live").is_visible()  # a live match has a live edge to jump to
    start = pg.evaluate("window.matchreplayViewer.tick()")
    pg.wait_for_function(f"window.matchreplayViewer.tick() > {start + 30}", timeout=15_000)
    shown = pg.evaluate("window.matchreplayViewer.tick()")
    latest = server.last_tick(LIVE_ID)
    # Never past the delayed edge: the delay behind the match (half of it as a margin
    # for ticks published late on a loaded machine).
    delay = LIVE_OPTIONS["spectator_delay"]
    assert f"{delay:.1f} s delay" in badge.inner_text()
    assert shown <= latest - round(delay * 30 / 2), (shown, latest)
    pg.keyboard.press(" ")  # pause: the state is then exact for its tick
    assert pg.evaluate("window.matchreplayViewer.live()") is False
    settled(pg)  # frames sent before the server got the PAUSE are applied
    tick = pg.evaluate("window.matchreplayViewer.tick()")
    assert drawn(pg) == server_states(server.db, LIVE_ID, [tick])[tick]
    pg.wait_for_function("document.querySelector('#live-status').textContent.includes('behind')")
    pg.locator("#live").click()
    pg.wait_for_function("window.matchreplayViewer.live()")
    pg.wait_for_function("window.matchreplayViewer.frames() > 2")
    assert screenshot(pg, "viewer-live.png").stat().st_size > 10_000
    assert console.errors == []


def test_live_frames_are_pushed_over_the_websocket(server: ViewerServer, page: Any) -> None:
    """Live mode is the server pushing FRAMEs to one websocket session: the page's tick
    advances while it sends no control and makes no HTTP request."""
    pg, console = page
    http_requests: list[str] = []
    open_viewer(pg, server, f"?match={LIVE_ID}")  # its one request: the lineage, at the start
    pg.on("request", lambda r: http_requests.append(r.url) if "/api/" in r.url else None)
    assert pg.evaluate("window.matchreplayViewer.transport") == "websocket"
    assert pg.evaluate("window.matchreplayViewer.live()") is True
    before = pg.evaluate("window.matchreplayViewer.messages()")
    start = pg.evaluate("window.matchreplayViewer.tick()")
    pg.wait_for_function(f"window.matchreplayViewer.tick() > {start + 30}", timeout=15_000)
    after = pg.evaluate("window.matchreplayViewer.messages()")
    assert after["received"]["FRAME"] - before["received"].get("FRAME", 0) >= 10
    controls = ("WATCH", "SEEK", "PLAY", "PAUSE", "STEP", "LIVE")
    assert [after["sent"].get(c, 0) for c in controls] == [
        before["sent"].get(c, 0) for c in controls
    ]
    assert after["sent"]["WATCH"] == 1 and after["sent"].get("LIVE", 0) == 0  # WATCH "live"
    assert http_requests == []
    assert console.errors == []


def test_page_reconnects_after_a_server_restart(tmp_path: Path, browser: Browser) -> None:
    """The server is killed and started again on the same port: the page says it is
    reconnecting, then resumes the tick it was showing, exact."""
    srv = ViewerServer(tmp_path)
    srv.simulate("restart-me", players=6, minutes=0.2, seed=5)
    srv.start()
    context = browser.new_context()
    try:
        pg = context.new_page()
        token = spectator_token("restart-me")
        open_viewer(pg, srv, f"?match=restart-me&tick=123&token={token}")
        expected = server_states(srv.db, "restart-me", [123])[123]
        assert drawn(pg) == expected
        port = srv.port
        srv.kill()
        pg.wait_for_function(
            "document.querySelector('#banner').textContent.includes('reconnecting')",
            timeout=10_000,
        )
        assert pg.evaluate("window.matchreplayViewer.connected()") is False
        srv.start(port)
        pg.wait_for_function(
            "window.matchreplayViewer.events.some(e => e.type === 'reconnected')", timeout=20_000
        )
        settled(pg)
        assert pg.locator("#banner").is_hidden()
        assert pg.evaluate("window.matchreplayViewer.tick()") == 123
        assert drawn(pg) == expected
        assert pg.evaluate("window.matchreplayViewer.messages()")["sent"]["WATCH"] == 2
        pg.keyboard.press(".")  # and the session works: one tick forward
        pg.wait_for_function("window.matchreplayViewer.tick() === 124")
        assert drawn(pg) == server_states(srv.db, "restart-me", [124])[124]
    finally:
        context.close()
        srv.stop()


def test_errors_a_person_understands(server: ViewerServer, page: Any) -> None:
    pg, console = page
    open_viewer(pg, server, "?match=no-such-match")
    assert "does not exist" in pg.locator("#banner").inner_text()
    open_viewer(pg, server, f"?match={FIN}&token=not-a-token")
    assert "refused the token" in pg.locator("#banner").inner_text()
    open_viewer(pg, server, f"?match={BIG}")  # not public, no token
    assert "not public" in pg.locator("#banner").inner_text()
    # A lost connection: the browser goes offline, the page says so and reconnects.
    open_viewer(pg, server, f"?match={LIVE_ID}")
    pg.context.set_offline(True)
    pg.wait_for_function(
        "document.querySelector('#banner').textContent.includes('reconnecting')", timeout=10_000
    )
    pg.context.set_offline(False)
    pg.wait_for_function(
        "window.matchreplayViewer.events.some(e => e.type === 'reconnected')", timeout=15_000
    )
    assert pg.locator("#banner").is_hidden()
    start = pg.evaluate("window.matchreplayViewer.tick()")
    pg.wait_for_function(f"window.matchreplayViewer.tick() > {start}")
    # Only the failed connections themselves were logged by the browser, no script errors.
    assert not [e for e in console.errors if not _network_noise(e)]


def test_static_files_stay_inside_the_package(server: ViewerServer) -> None:
    import http.client

    def get(path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path)  # sent as is: no client-side normalisation of ".."
        r = conn.getresponse()
        out = r.status, r.getheader("Content-Type") or ""
        conn.close()
        return out

    assert get("/") == (200, "text/html")
    assert get("/static/js/app.js") == (200, "text/javascript")
    assert get("/static/vendor/msgpack/LICENSE")[0] == 200
    assert get("/static/js/../../viewer_api.py")[0] == 404
    assert get("/static/../http.py")[0] == 404
    assert get("/static/js/nope.js")[0] == 404


def _network_noise(message: str) -> bool:
    """What the browser itself logs for a refused or dropped connection."""
    return "Failed to load resource" in message or "WebSocket connection to" in message


def test_bad_requests_get_typed_errors(server: ViewerServer) -> None:
    cases = {
        "/api/viewer/matches?limit=0": (400, "invalid_field"),
        "/api/viewer/matches?limit=x": (400, "invalid_field"),
        "/api/viewer/matches?token=forged": (401, "unauthorized"),
        "/api/matches?token=forged": (401, "unauthorized"),
        f"/api/matches/{BIG}": (403, "forbidden"),
        f"/api/matches/{BIG}?token={spectator_token(FIN)}": (403, "forbidden"),
        "/api/matches/nope": (404, "unknown_match"),
        # The old HTTP data path of the match view is gone: the websocket serves it.
        f"/api/viewer/matches/{FIN}/events?from=0&to=10": (404, "not_found"),
        f"/api/viewer/matches/{FIN}/state?tick=0": (404, "not_found"),
    }
    for path, (status, code) in cases.items():
        got, body = server.request("GET", path)
        assert (got, body["error"]["code"]) == (status, code), path
        assert body["error"]["message"]

    # The match view's requests, over the websocket the page uses, get typed errors too.
    async def spectate() -> None:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with await Spectator.connect(url, token=spectator_token("*")) as spec:
            with pytest.raises(p.ProtocolError) as exc:
                await spec.watch("nope", 0)
            assert exc.value.code == "unknown_match" and exc.value.message
        async with await Spectator.connect(url) as spec:
            # Token-less: a private match and an unknown one look the same (forbidden).
            for match_id, code in (("nope", "forbidden"), (BIG, "forbidden")):
                with pytest.raises(p.ProtocolError) as exc:
                    await spec.watch(match_id, 0)
                assert exc.value.code == code and exc.value.message
            await spec.watch(FIN, 0)
            with pytest.raises(p.ProtocolError) as exc:
                await spec.clip(0)  # no kill at tick 0
            assert exc.value.code == "unknown_marker"
            # A live match never answers past its delayed edge: a seek is clamped.
            await spec.watch(LIVE_ID, 0)
            latest = server.last_tick(LIVE_ID)
            status = await spec.seek(latest)
            assert status.clamped and status.tick < latest
        async with await Spectator.connect(url, token=spectator_token(FIN)) as spec:
            with pytest.raises(p.ProtocolError) as exc:
                await spec.watch(BIG, 0)
            assert exc.value.code == "forbidden"
        async with connect(f"{url}?token=forged", subprotocols=[p.SUBPROTOCOL]) as ws:  # type: ignore[list-item]
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == p.CLOSE_UNAUTHORIZED and ws.close_reason

    run_async(spectate())


def test_match_routes_never_reveal_past_the_spectator_edge(server: ViewerServer) -> None:
    """``/api/matches`` (the lobby's list) shows a non-admin only what a spectator may
    see: public matches (or its token's), each at its delayed live edge."""
    admin = admin_token()
    listed = {m["match_id"]: m for m in server.request("GET", "/api/matches")[1]}
    assert set(listed) == {FIN, LIVE_ID}  # BIG is not public
    for m in listed.values():
        assert "last_seq" not in m  # it would count events past the edge
    assert server.request("GET", "/api/matches", admin)[1][0]["match_id"] in {FIN, LIVE_ID, BIG}
    assert BIG in {m["match_id"] for m in server.request("GET", "/api/matches", admin)[1]}
    token = spectator_token(BIG)
    assert BIG in {m["match_id"] for m in server.request("GET", f"/api/matches?token={token}")[1]}
    delay_ticks = round(LIVE_OPTIONS["spectator_delay"] * 30 / 2)  # half: a loaded machine
    for path in ("/api/matches", f"/api/matches/{LIVE_ID}", "/api/viewer/matches"):
        shown = server.request("GET", path)[1]
        if path == "/api/viewer/matches":
            shown = shown["matches"]
        if isinstance(shown, list):
            shown = next(m for m in shown if m["match_id"] == LIVE_ID)
        latest = server.last_tick(LIVE_ID)
        assert shown["tick"] <= latest - delay_ticks, (path, shown["tick"], latest)
    # The finished match has no delay: everyone sees all of it.
    assert server.request("GET", f"/api/matches/{FIN}")[1]["tick"] == server.last_tick(FIN)


def test_ended_match_opens_at_its_end_with_the_result(server: ViewerServer, page: Any) -> None:
    """A finished match opened without a tick shows its last tick (players on the field,
    final standings) and says who won and why; no Live button."""
    pg, console = page
    last = server.last_tick(FIN)
    expected = server_result(server.db, FIN, last)
    assert expected is not None and expected["reason"]
    open_viewer(pg, server, f"?match={FIN}")
    assert pg.evaluate("window.matchreplayViewer.tick()") == last
    state = drawn(pg)
    assert state == server_states(server.db, FIN, [last])[last]
    assert any(p["alive"] for p in state["players"])  # something to see
    assert canvas_colours(pg) > 8
    assert pg.locator("#scoreboard tbody tr").count() == len(state["players"])
    shown = pg.evaluate("window.matchreplayViewer.result()")
    assert shown == expected
    result = pg.locator("#result")
    assert result.is_visible()
    text = result.inner_text()
    reason = {"time_limit": "time limit", "score_limit": "score limit"}.get(
        expected["reason"], expected["reason"]
    )
    assert reason in text
    assert (f"{expected['winner_name']} wins" if expected["winner"] else "no winner") in text
    assert pg.locator("#live").is_hidden()  # nothing live to jump to
    # The header names the game and the players, not the match id.
    title = pg.locator("#title").inner_text()
    assert title.startswith("arena · ") and FIN not in title and "created" in title
    assert screenshot(pg, "viewer-ended.png").stat().st_size > 10_000
    # Before the end there is no result yet.
    pg.evaluate("window.matchreplayViewer.seek(10)")
    settled(pg)
    assert pg.locator("#result").is_hidden()
    assert console.errors == []


def test_markers_never_cover_each_other(server: ViewerServer, page: Any) -> None:
    """At 0:00 the joins and the match start are close together: markers closer than a
    few pixels are one button listing them all, so every marker can be clicked."""
    pg, console = page
    markers = server_markers(server.db, FIN)
    joined = [m for m in markers if m["kind"] == "joined"]
    assert joined and any(m["kind"] == "match_started" for m in markers)
    open_viewer(pg, server, f"?match={FIN}&tick=5")
    buttons = pg.locator("#markers .marker")
    boxes = [b.bounding_box() for b in buttons.all()]
    assert all(boxes)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"], (a, b)
    counts = [int(c) for c in buttons.evaluate_all("els => els.map(e => e.dataset.count)")]
    assert sum(counts) == len(markers)  # each marker is in exactly one button
    titles = buttons.evaluate_all("els => els.map(e => e.title)")
    assert sum(len(t.split("\n")) for t in titles) == len(markers)
    # Every button is the element at its own centre: nothing covers it.
    covered = buttons.evaluate_all(
        """els => els.filter(e => { const r = e.getBoundingClientRect();
            const x = r.x + r.width / 2, y = r.y + r.height / 2;
            return document.elementFromPoint(x, y) !== e; }).length"""
    )
    assert covered == 0
    first = next(i for i, t in enumerate(titles) if "joined" in t)
    assert joined[0]["data"]["name"] in titles[first]
    tick = int(buttons.nth(first).get_attribute("data-tick"))
    assert tick == joined[0]["tick"]
    pg.locator("#arena").click()
    buttons.nth(first).click()
    pg.wait_for_function(f"window.matchreplayViewer.tick() === {tick}")
    settled(pg)
    assert drawn(pg) == server_states(server.db, FIN, [tick])[tick]
    # Display names (the simulated bots': "Bot 007"), not player ids, in the markers' text.
    open_viewer(pg, server, f"?match={BIG}&tick=600&token={BIG_TOKEN}")
    titles = "\n".join(pg.locator("#markers .marker").evaluate_all("els => els.map(e => e.title)"))
    assert "Bot 0" in titles and "killed" in titles and "bot-0" not in titles
    assert console.errors == []


def _rgb(css: str) -> tuple[int, int, int]:
    r, g, b = (int(float(v)) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return r, g, b


def test_legend_and_scoreboard_swatches_match_the_drawing(server: ViewerServer, page: Any) -> None:
    """The legend has a swatch of each marker colour on the timeline, and each
    scoreboard row a swatch of its player's dot colour (read back from the canvas)."""
    pg, console = page
    last = server.last_tick(FIN)
    open_viewer(pg, server, f"?match={FIN}&tick={last - 30}")
    legend = pg.locator("#legend")
    assert legend.is_visible()
    legend_colours = dict(
        legend.locator(".swatch").evaluate_all(
            "els => els.map(e => [e.dataset.kind, getComputedStyle(e).backgroundColor])"
        )
    )
    used = pg.locator("#markers .marker").evaluate_all(
        """els => els.map(e =>
            [e.className.split('marker-')[1], getComputedStyle(e).backgroundColor])"""
    )
    assert used
    for kind, colour in used:
        assert legend_colours[kind] == colour, kind
    assert "player" in legend.inner_text()
    # Dots another dot covers cannot be read back: look at ticks of the match, a second
    # apart, until two players' dots were readable (where players stand is the bots' doing).
    checked: set[int] = set()
    for tick in range(last - 30, 0, -30):
        if len(checked) >= 2:
            break
        if tick != last - 30:
            pg.evaluate(f"window.matchreplayViewer.seek({tick})")
            pg.wait_for_function(f"window.matchreplayViewer.tick() === {tick}")
            settled(pg)
        checked |= _dots_match_swatches(pg)
    assert len(checked) >= 2
    assert console.errors == []


def _dots_match_swatches(pg: Any) -> set[int]:
    """Slots whose dot on the canvas has the colour of their scoreboard row's swatch
    (asserted), among the dots no other dot covers."""
    dots = {int(k): v for k, v in pg.evaluate("window.matchreplayViewer.dots()").items()}
    state = drawn(pg)
    alive = [p for p in state["players"] if p["alive"]]
    assert dots.keys() == {a["slot"] for a in alive}
    checked: set[int] = set()
    for shown in alive:
        x, y, r = dots[shown["slot"]]
        if any(
            (x - ox) ** 2 + (y - oy) ** 2 < (2 * r + 2) ** 2
            for s, (ox, oy, _) in dots.items()
            if s != shown["slot"]
        ):
            continue
        pixel = pg.evaluate(
            """([x, y]) => Array.from(document.querySelector('#arena').getContext('2d')
                .getImageData(Math.round(x), Math.round(y), 1, 1).data.slice(0, 3))""",
            [x, y],
        )
        swatch = pg.locator(f'#scoreboard tr[data-player="{shown["id"]}"] .swatch')
        colour = _rgb(swatch.evaluate("e => getComputedStyle(e).backgroundColor"))
        assert all(abs(a - b) <= 3 for a, b in zip(pixel, colour, strict=True)), (pixel, colour)
        checked.add(shown["slot"])
    return checked


def test_phone_screen_keeps_the_arena_usable(server: ViewerServer, browser: Browser) -> None:
    """On a 390 px wide phone the arena takes the width (one column), not ~50 px."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    try:
        pg = context.new_page()
        console = Console(pg)
        last = server.last_tick(FIN)
        open_viewer(pg, server, f"?match={FIN}&tick={last - 30}")
        box = pg.locator("#arena").bounding_box()
        assert box is not None and box["width"] >= 340 and box["height"] >= 200, box
        assert pg.locator("#play").is_visible() and pg.locator("#scoreboard").is_visible()
        assert canvas_colours(pg) > 8  # players drawn
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(pg, "viewer-phone.png")
        open_viewer(pg, server)
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390
        assert console.errors == []
    finally:
        context.close()


def test_unknown_match_shows_a_message_not_an_empty_arena(server: ViewerServer, page: Any) -> None:
    pg, console = page
    for query, text in (
        ("?match=no-such-match", "does not exist"),
        (f"?match=no-such-match&token={spectator_token('*')}", "does not exist on this server"),
        (f"?match={BIG}", "not public"),
    ):
        open_viewer(pg, server, query)
        assert pg.locator("#arena").is_hidden()
        assert pg.locator("#controls").is_hidden()
        assert pg.locator("#scoreboard").is_hidden()
        missing = pg.locator("#missing")
        assert missing.is_visible() and text in missing.inner_text()
        assert missing.locator("a[href='/']").is_visible()
    assert not [e for e in console.errors if not _network_noise(e)]


# -- time travel: a rewound match, its abandoned branch, a fork (docs/viewer.md) ------------
# Last in the file: these create matches (private: only the admin token sees them), which
# the tests above must not list.

REWOUND, FORK = "viewer-rewound", "viewer-rewound-fork"
REWOUND_SETTINGS = {"tick_rate": 30, "time_limit_s": 120, "max_players": 8, "min_players": 2}


@pytest.fixture(scope="module")
def rewound(server: ViewerServer) -> dict[str, int]:
    """A bot match rewound once live (at B, to T), ended by an admin, and a fork of it at a
    tick F after the rewind: ``{"to": T, "boundary": B, "last": ..., "fork_at": F}``."""
    admin = admin_token()
    server.create_match(REWOUND, REWOUND_SETTINGS | {"damage": 50}, seed=21)
    server.play(REWOUND)
    server.wait_tick(REWOUND, 450)
    started = server_states(server.db, REWOUND, [450])[450]["started_tick"]
    to = started + 30
    status, body = server.request(
        "POST", f"/api/matches/{REWOUND}/rewind?to={to}&reason=lag+spike", admin
    )
    assert status == 200, body
    boundary = body["rewound_tick"]
    server.wait_tick(REWOUND, boundary + 150)
    status, body = server.request("POST", f"/api/matches/{REWOUND}/end?reason=done", admin)
    assert status == 200, body
    fork_at = boundary + 60
    status, body = server.request(
        "POST", f"/api/matches/{REWOUND}/fork?at={fork_at}&match_id={FORK}", admin
    )
    assert status == 201, body
    status, body = server.request("POST", f"/api/matches/{FORK}/end?reason=seen", admin)
    assert status == 200, body
    return {"to": to, "boundary": boundary, "last": server.last_tick(REWOUND), "fork_at": fork_at}


def test_rewound_match_draws_the_surviving_state(
    server: ViewerServer, page: Any, rewound: dict[str, int]
) -> None:
    """The page's fold from tick 0 across the rewind tick (a FRAME carrying the ``rewound``
    event) equals the server's state_at at every checked tick, before, on the abandoned
    branch, at the rewind and after; unknown system events (0xFF00 up) are skipped."""
    pg, console = page
    to, boundary, last = rewound["to"], rewound["boundary"], rewound["last"]
    checks = sorted({0, to, to + 1, boundary - 1, boundary, boundary + 1, boundary + 40, last})
    open_viewer(pg, server)
    folded = pg.evaluate(
        """async ([id, checks, token]) => {
        const A = await import('/static/games/arena/viewer.js');
        const F = await import('/static/js/fold.js');
        const S = await import('/static/js/spectator.js');
        const out = {};
        const keep = (t) => { if (checks.includes(t)) out[t] = A.plainState(session.state); };
        const url = S.websocketUrl(token);
        const session = new S.SpectatorSession(url, id, { reset: keep, frame: keep });
        await session.open(0);
        const end = checks.at(-1);
        for (let i = 0; i < 100 && session.tick < end; i++) {
            await session.step(Math.min(1000, end - session.tick));
        }
        session.close();
        out.frames = session.received.FRAME;
        // A takeover (0xFF04) and a code this page has never heard of (0xFF3F): skipped.
        const s = A.copyState(session.state);
        const batch = MessagePack.encode(
            [[0xff04, 1, 0, 'node-a', 'node-b', 2, 0, 1], [0xff3f, 1, 0, 'x']]);
        out.skipped = A.plainState(F.foldEvents(A, s, A.decodeBatch(batch, s.tick), s.tick));
        return out;
    }""",
        [REWOUND, checks, admin_token()],
    )
    expected = server_states(server.db, REWOUND, checks)
    for t in checks:
        assert folded[str(t)] == expected[t], f"tick {t}"
    assert folded["frames"] == last  # one FRAME per tick after the STATE of tick 0
    assert folded["skipped"] == expected[last]
    # The surviving state at B is T's (re-clocked), not the branch's last tick.
    assert expected[boundary]["players"] == expected[to]["players"]
    assert expected[boundary]["players"] != expected[boundary - 1]["players"]
    # A deep link to the rewind tick and to a tick of the abandoned branch draws each.
    for tick in (boundary, boundary - 1):
        open_viewer(pg, server, f"?match={REWOUND}&tick={tick}&token={admin_token()}")
        assert drawn(pg) == expected[tick]
    assert console.errors == []


def test_rewind_marker_and_the_abandoned_branch_on_request(
    server: ViewerServer, page: Any, rewound: dict[str, int]
) -> None:
    pg, console = page
    to, boundary = rewound["to"], rewound["boundary"]
    open_viewer(pg, server, f"?match={REWOUND}&tick={boundary + 10}&token={admin_token()}")
    shown = pg.evaluate("window.matchreplayViewer.markers")
    assert shown == server_markers(server.db, REWOUND)  # the surviving timeline only
    rewinds = [m for m in shown if m["kind"] == "rewound"]
    assert [(m["tick"], m["data"]["to_tick"], m["data"]["reason"]) for m in rewinds] == [
        (boundary, to, "lag spike")
    ]
    marker = pg.locator(f'#markers .marker-rewind[data-tick="{boundary}"]')
    assert marker.count() == 1 and "rewound to" in marker.get_attribute("title")
    band = pg.locator("#markers .abandoned-range")
    assert band.count() == 1
    assert (band.get_attribute("data-from"), band.get_attribute("data-to")) == (
        str(to + 1),
        str(boundary - 1),
    )
    assert pg.evaluate("window.matchreplayViewer.abandonedRanges()") == [[to, boundary]]
    assert pg.locator("#branch").is_hidden()
    # A tick of the abandoned branch says so.
    pg.evaluate(f"window.matchreplayViewer.seek({boundary - 5})")
    settled(pg)
    assert pg.evaluate("window.matchreplayViewer.abandoned()") is True
    assert f"tick {boundary}" in pg.locator("#branch").inner_text()
    # On request, the markers of the abandoned ticks too, flagged and drawn hollow.
    every = server_markers(server.db, REWOUND, abandoned=True)
    assert any(m.get("abandoned") for m in every), "the branch has no marker to show"
    pg.locator("#abandoned-toggle").click()
    pg.wait_for_function(
        f"window.matchreplayViewer.markers.length === {len(every)}", timeout=10_000
    )
    assert pg.evaluate("window.matchreplayViewer.markers") == every
    hollow = pg.locator("#markers .marker.abandoned")
    assert hollow.count() >= 1 and "(abandoned)" in hollow.first.get_attribute("title")
    for i in range(hollow.count()):
        assert to < int(hollow.nth(i).get_attribute("data-tick")) < boundary
    # Playing into the branch with it hidden again jumps to the rewind: the surviving
    # timeline. Where it paused is exact.
    pg.locator("#abandoned-toggle").click()
    pg.wait_for_function(f"window.matchreplayViewer.markers.length === {len(shown)}")
    pg.evaluate(f"window.matchreplayViewer.seek({to - 3})")
    settled(pg)
    pg.select_option("#speed", "4")
    pg.locator("#play").click()
    pg.wait_for_function(f"window.matchreplayViewer.tick() > {boundary}", timeout=20_000)
    pg.locator("#play").click()
    settled(pg)
    log = pg.evaluate("window.matchreplayViewer.events")
    skips = [e for e in log if e["type"] == "skip_abandoned"]
    assert skips and skips[0]["to"] == boundary and to < skips[0]["from"] < boundary
    tick = pg.evaluate("window.matchreplayViewer.tick()")
    assert drawn(pg) == server_states(server.db, REWOUND, [tick])[tick]
    assert console.errors == []


def test_fork_links_to_its_parent_and_the_parent_to_its_forks(
    server: ViewerServer, page: Any, rewound: dict[str, int]
) -> None:
    pg, console = page
    admin, at = admin_token(), rewound["fork_at"]
    status, lineage = server.request("GET", f"/api/viewer/matches/{REWOUND}/lineage", admin)
    assert status == 200 and lineage["parent"] is None
    assert lineage["forks"] == [{"match_id": FORK, "tick": at, "status": "ended"}]
    # Without a token neither is visible (both private): no lineage, no names.
    assert server.request("GET", f"/api/viewer/matches/{FORK}/lineage")[0] == 403
    open_viewer(pg, server, f"?match={REWOUND}&tick=0&token={admin}")
    link = pg.locator(f'#lineage .forks a[data-match="{FORK}"]')
    assert link.is_visible()
    link.click()
    pg.wait_for_url(f"**match={FORK}**")
    pg.evaluate("window.matchreplayViewer.ready.then(() => true)")
    assert pg.evaluate("window.matchreplayViewer.tick()") == at
    expected = server_states(server.db, FORK, [at])[at]
    assert drawn(pg) == expected == server_states(server.db, REWOUND, [at])[at]
    assert pg.evaluate("window.matchreplayViewer.lineage")["parent"] == {
        "match_id": REWOUND,
        "tick": at,
    }
    # The fork's first event (``forked``, carrying the parent's state) folded by the page's
    # fold.js over any state gives that state: what a FRAME of the fork tick would do.
    tick, blob = first_batch(server.db, FORK)
    assert tick == at
    restored = pg.evaluate(
        """async ([bytes, tick]) => {
        const A = await import('/static/games/arena/viewer.js');
        const F = await import('/static/js/fold.js');
        const events = A.decodeBatch(new Uint8Array(bytes), tick);
        const before = A.copyState(A.decodeKeyframe(events[0].data[3]));
        before.tick = 0;
        return [events[0].type, A.plainState(F.foldEvents(A, before, events, tick))];
    }""",
        [list(blob), tick],
    )
    assert restored == [0xFF05, expected]
    back = pg.locator(f'#lineage .parent a[data-match="{REWOUND}"]')
    assert "Forked from" in pg.locator("#lineage").inner_text()
    back.click()
    pg.wait_for_url(f"**match={REWOUND}&**")
    pg.evaluate("window.matchreplayViewer.ready.then(() => true)")
    assert pg.evaluate("window.matchreplayViewer.tick()") == at
    assert drawn(pg) == expected
    assert console.errors == []
