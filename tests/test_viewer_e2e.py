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
    ARTIFACTS,
    FINISHED,
    FINISHED_OPTIONS,
    LIVE,
    LIVE_OPTIONS,
    ViewerServer,
    launch_chromium,
    server_scoreboard,
    server_states,
    spectator_token,
)

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
        assert row.locator(".status").inner_text() == info["status"]
        standings = viewer_list[info["match_id"]]["standings"]
        assert {s["player"] for s in standings} == set(info["players"])
        assert set(row.locator(".players").inner_text().split(", ")) == {
            s["name"] for s in standings
        }
    fin = pg.locator(f'#match-list tr[data-match="{FIN}"]')
    last = server.request("GET", f"/api/matches/{FIN}")[1]["tick"]
    top = server_scoreboard(server.db, FIN, last)[:3]
    assert fin.locator(".score").inner_text() == " · ".join(
        f"{s['name']} {s['score']}" for s in top
    )
    seconds = last // 30
    assert fin.locator(".duration").inner_text() == f"{seconds // 60}:{seconds % 60:02d}"
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


@pytest.mark.parametrize("match_id", [FIN, BIG])
def test_js_fold_equals_server_state_at(server: ViewerServer, page: Any, match_id: str) -> None:
    """The page's arena decode + fold (arena.js) from tick 0 over the whole match,
    checked at several ticks against the server's state_at; and the v1 upcaster."""
    pg, console = page
    open_viewer(pg, server)
    last = server.request("GET", f"/api/matches/{match_id}")[1]["tick"]
    checks = sorted({0, 1, 40, 89, 90, 150, last // 2, last - 1, last, *range(7, last, 97)})
    folded = pg.evaluate(
        """async ([id, checks, token]) => {
        const A = await import('/static/js/arena.js');
        const { Api } = await import('/static/js/api.js');
        const api = new Api(token);
        const [base, kf] = await api.state(id, 0);
        const s = A.decodeKeyframe(kf);
        const byTick = new Map();
        for (let from = 1; from <= checks.at(-1); from += 300) {
            const [first, , , , batch] = await api.events(id, from, from + 299);
            for (const e of A.decodeBatch(batch, first)) {
                if (!byTick.has(e.tick)) byTick.set(e.tick, []);
                byTick.get(e.tick).push(e);
            }
        }
        const out = {};
        if (checks.includes(base)) out[base] = A.plainState(s);
        for (let t = base + 1; t <= checks.at(-1); t++) {
            A.evolve(s, byTick.get(t) ?? [], t);
            if (checks.includes(t)) out[t] = A.plainState(s);
        }
        // A joined event at version 1 ([slot, player]) is upcast: name = player id.
        const u = A.copyState(s);
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
    assert any(p["kills"] for p in expected[last]["players"])  # the match had kills
    assert console.errors == []


def test_deep_link_shows_exact_tick(server: ViewerServer, page: Any) -> None:
    pg, console = page
    last = server.request("GET", f"/api/matches/{FIN}")[1]["tick"]
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
    markers = server.request("GET", f"/api/viewer/matches/{BIG}/markers?token={BIG_TOKEN}")[1]
    kill = next(m for m in markers["markers"] if m["kind"] == "killed" and m["tick"] > 300)
    at = kill["tick"] + 2
    killer = kill["data"]["killer_player"]
    open_viewer(pg, server, f"?match={BIG}&tick={at}&follow={killer}&token={BIG_TOKEN}")
    assert drawn(pg) == server_states(server.db, BIG, [at])[at]
    pg.wait_for_function("window.matchreplayViewer.frames() > 2")
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "viewer-match.png"))
    assert Path(ARTIFACTS / "viewer-match.png").stat().st_size > 10_000
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
    log = pg.evaluate("window.matchreplayViewer.events")
    play = [e for e in log if e["type"] == "play"][-1]
    pause = [e for e in log if e["type"] == "pause"][-1]
    return pause["tick"] - play["tick"], (pause["at"] - play["at"]) / 1000


def test_play_advances_at_the_chosen_speed(server: ViewerServer, page: Any) -> None:
    pg, console = page
    open_viewer(pg, server, f"?match={FIN}&tick=0")
    for speed in (1, 4):
        ticks, seconds = play_for(pg, speed, 1.5)
        expected = 30 * speed * seconds
        # Never faster than the speed asked (the frame clock caps it); the lower bound is
        # loose on purpose: a loaded 2-core machine drops frames.
        assert expected * 0.4 <= ticks <= expected + 2, (speed, ticks, seconds)
        assert drawn(pg) == server_states(server.db, FIN, [ticks])[ticks]
    assert console.errors == []


def test_clip_before_a_kill(server: ViewerServer, page: Any) -> None:
    pg, console = page
    markers = server.request("GET", f"/api/viewer/matches/{FIN}/markers")[1]["markers"]
    kills = [m for m in markers if m["kind"] in ("killed", "multi_kill")]
    at = next(m["tick"] for m in kills if m["tick"] > 60) + 5
    kill = [m for m in kills if m["tick"] <= at][-1]  # the kill the clip is about
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
    assert pg.evaluate("window.matchreplayViewer.follow()") == kill["data"]["killer"]
    assert drawn(pg) == server_states(server.db, FIN, [kill["tick"]])[kill["tick"]]
    assert console.errors == []


def test_live_follows_the_delayed_edge(server: ViewerServer, page: Any) -> None:
    pg, console = page
    open_viewer(pg, server, f"?match={LIVE_ID}")
    badge = pg.locator("#live-status")
    assert pg.evaluate("window.matchreplayViewer.live()") is True
    assert "LIVE" in badge.inner_text()
    start = pg.evaluate("window.matchreplayViewer.tick()")
    pg.wait_for_function(f"window.matchreplayViewer.tick() > {start + 30}", timeout=15_000)
    shown = pg.evaluate("window.matchreplayViewer.tick()")
    latest = server.request("GET", f"/api/matches/{LIVE_ID}")[1]["tick"]
    # Never past the delayed edge: the delay behind the match (half of it as a margin
    # for ticks published late on a loaded machine).
    delay = LIVE_OPTIONS["spectator_delay"]
    assert f"{delay:.1f} s delay" in badge.inner_text()
    assert shown <= latest - round(delay * 30 / 2), (shown, latest)
    pg.keyboard.press(" ")  # pause: the state is then exact for its tick
    assert pg.evaluate("window.matchreplayViewer.live()") is False
    tick = pg.evaluate("window.matchreplayViewer.tick()")
    assert drawn(pg) == server_states(server.db, LIVE_ID, [tick])[tick]
    pg.wait_for_function("document.querySelector('#live-status').textContent.includes('behind')")
    pg.locator("#live").click()
    pg.wait_for_function("window.matchreplayViewer.live()")
    assert console.errors == []


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
    # Only the failed requests themselves were logged by the browser, no script errors.
    assert not [e for e in console.errors if "Failed to load resource" not in e]


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


def test_bad_requests_get_typed_errors(server: ViewerServer) -> None:
    base = f"/api/viewer/matches/{FIN}"
    cases = {
        "/api/viewer/matches/nope": (404, "unknown_match"),
        f"{base}/state": (400, "invalid_field"),
        f"{base}/state?tick=abc": (400, "invalid_field"),
        f"{base}/state?tick=-1": (400, "tick_out_of_range"),
        f"{base}/state?tick=99999999": (400, "tick_out_of_range"),
        f"{base}/events?from=-5&to=10": (400, "invalid_field"),
        f"{base}/clip?tick=100&seconds=nan": (400, "invalid_field"),
        f"{base}/clip?tick=100&seconds=x": (400, "invalid_field"),
        f"{base}/clip?tick=0": (404, "no_kill"),
        "/api/viewer/matches?limit=0": (400, "invalid_field"),
        f"{base}?token=forged": (401, "unauthorized"),
        f"/api/viewer/matches/{BIG}": (403, "forbidden"),
        f"/api/viewer/matches/{BIG}/events?from=0&to=10": (403, "forbidden"),
        f"/api/viewer/matches/{BIG}?token={spectator_token(FIN)}": (403, "forbidden"),
    }
    for path, (status, code) in cases.items():
        got, body = server.request("GET", path)
        assert (got, body["error"]["code"]) == (status, code), path
        assert body["error"]["message"]
    # A live match never answers past its delayed edge.
    latest = server.request("GET", f"/api/matches/{LIVE_ID}")[1]["tick"]
    got, body = server.request("GET", f"/api/viewer/matches/{LIVE_ID}/state?tick={latest}")
    assert (got, body["error"]["code"]) == (400, "tick_out_of_range")
