"""What must not reach or stop the boards: a damaged stored batch (passed over and
reported, everything else still folded) and results the match's spectators may not
see yet (held back until they may). Real SQLite files throughout."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path

from games import ARENA, METRICS, open_test_store
from leaderboard_fixtures import PUBLIC, record_matches

import replay.games.arena.events as ev
from replay.leaderboards.projection import LeaderboardProjection
from replay.leaderboards.visibility import NOTHING, Visibility
from replay.offline import simulate
from replay.store.base import MatchRecord

BOARDS = ARENA.default_boards()


async def kills_from_events(
    store,
    match_ids,
    skip: tuple[str, int, int] | None = None,
    upto_tick: dict[str, int] | None = None,
) -> Counter:
    """Kills per player as the events say, leaving out ``skip`` (match, first seq, last
    seq) and, per match of ``upto_tick``, the events of later ticks."""
    kills: Counter[str] = Counter()
    for m in match_ids:
        slots: dict[int, str] = {}
        for e in await store.read(m):
            if skip and skip[0] == m and skip[1] <= e.seq <= skip[2]:
                continue
            if upto_tick and m in upto_tick and e.tick > upto_tick[m]:
                break
            if e.type == ev.JOINED:
                slots[e.data[0]] = e.data[1]
            elif e.type == ev.LEFT:
                slots.pop(e.data[0], None)
            elif e.type == ev.KILLED and e.data[0] in slots:
                kills[slots[e.data[0]]] += 1
    return kills


def board_values(p: LeaderboardProjection, board: str = "kills") -> dict[str, int]:
    b = p.state.board(board, "all")
    return {} if b is None else {e.owner: e.value for e in b.slice(0, len(b))}


def damage_a_kill_batch(path: Path, match_id: str) -> tuple[int, int, int]:
    """Overwrite the blob of one stored batch of ``match_id`` that holds a kill with
    bytes no decoder reads; returns (position, first seq, last seq)."""
    with sqlite3.connect(path) as db:
        position, first_seq, count, blob = db.execute(
            "SELECT b.position, b.first_seq, b.count, b.blob FROM batches b"
            " JOIN matches m ON m.mkey = b.mkey WHERE m.match_id = ? AND b.types & ?"
            " ORDER BY b.position LIMIT 1 OFFSET 2",
            (match_id, 1 << ev.KILLED),
        ).fetchone()
        db.execute(
            "UPDATE batches SET blob = ? WHERE position = ?", (b"\xc1" * len(blob), position)
        )
    return position, first_seq, first_seq + count - 1


async def test_a_damaged_batch_is_passed_over_and_reported(tmp_path: Path) -> None:
    intact, damaged = tmp_path / "intact.db", tmp_path / "damaged.db"
    store = open_test_store(str(intact), synchronous="NORMAL")
    await store.open()
    ids = await record_matches(store, 3, players=6, seconds=15, seed=4)
    await store.close()
    shutil.copy(intact, damaged)
    position, first, last = damage_a_kill_batch(damaged, "m1")

    store = open_test_store(str(damaged))
    await store.open()
    boards = tmp_path / "b.sqlite"
    try:
        p = LeaderboardProjection(store, str(boards), BOARDS, METRICS, read_limit=50)
        await p.open()
        assert p.degraded() is None
        await p.catch_up()
        # Every other batch was folded: the position is the store's end, and the kills are
        # those of the events minus the damaged batch's, for every match.
        assert p.position == await store.last_position()
        expected = await kills_from_events(_Reader(intact), ids, ("m1", first, last))
        assert board_values(p) == dict(expected)
        full = await kills_from_events(_Reader(intact), ids)
        assert sum(full.values()) > sum(expected.values())  # the batch held a kill
        # Reported: which batch, in the counter and the health reason.
        assert p.skipped_batches == 1
        assert [d.position for d in p.damaged] == [position]
        reason = p.degraded()
        assert reason is not None and "'m1'" in reason and f"seq {first}..{last}" in reason
        # A rebuild passes over it again, without reporting it twice; the boards are the same.
        await p.rebuild()
        assert board_values(p) == dict(expected) and p.skipped_batches == 1
        await p.close()

        # The damage stays reported across a restart (the read model keeps it), and the
        # projection follows the store on: a new match is folded.
        await record_matches(store, 1, players=4, seconds=5, seed=40, prefix="after")
        p = LeaderboardProjection(store, str(boards), BOARDS, METRICS)
        await p.open()
        assert p.skipped_batches == 1 and p.degraded() == reason
        await p.catch_up()
        assert board_values(p) == dict(expected + await kills_from_events(store, ["after0"]))
        await p.close()
    finally:
        await store.close()


class _Reader:
    """``read`` of a store file opened for one call (the intact copy)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def read(self, match_id: str):
        async with open_test_store(str(self.path)) as store:
            return await store.read(match_id)


# -- what spectators may not see yet ---------------------------------------------------------


def record(status: str = "running", last_tick: int = 900, ended_at=None, **options) -> MatchRecord:
    return MatchRecord(
        "m",
        "arena",
        "1",
        30,
        status=status,
        last_tick=last_tick,
        ended_at=ended_at,
        options=options,
    )


def test_the_visibility_rule() -> None:
    now = 1000.0
    assert Visibility.of(record(**PUBLIC)).immediate
    assert Visibility.of(record(**PUBLIC)).edge(record(), now) == 900
    delayed = Visibility.of(record(public_spectating=True, spectator_delay=2.0))
    assert delayed.edge(record(), now) == 900 - 60
    assert delayed.edge(record("ended", ended_at=now - 0.5), now) == 900 - 45
    assert delayed.edge(record("interrupted", ended_at=now - 2), now) == 900
    private = Visibility.of(record(spectator_delay=1.0))
    assert private.edge(record(), now) == NOTHING
    assert private.edge(record("ended", ended_at=now - 0.5), now) == NOTHING
    assert private.edge(record("ended", ended_at=now - 1), now) == 900
    # Options that do not say, or say nonsense: private, without delay.
    for options in (
        {},
        {"public_spectating": "yes", "spectator_delay": -1},
        {"spectator_delay": "x"},
    ):
        assert Visibility.of(record(**options)) == Visibility(0.0, False)


class LiveMatch:
    """A bot match stored tick by tick, as far as the test says."""

    def __init__(self, store, match_id: str, seed: int, options: dict) -> None:
        self.store, self.match_id, self.options = store, match_id, options
        self.settings = ARENA.bot_match_settings(6, 20.0, 30)
        self.run = simulate(ARENA, 6, self.settings, seed)
        self.seed, self.version, self.tick = seed, 0, 0

    async def create(self) -> None:
        await self.store.create_match(
            MatchRecord(
                self.match_id,
                "arena",
                ARENA.version,
                30,
                settings=self.settings,
                seed=self.seed,
                status="running",
                options=self.options,
            )
        )

    async def play(self, to_tick: int | None = None) -> None:
        while to_tick is None or self.tick < to_tick:
            out = next(self.run, None)
            if out is None:
                return
            self.tick = out.tick
            if out.events:
                await self.store.append(self.match_id, out.events, self.version)
                self.version += len(out.events)


async def test_results_reach_the_boards_when_spectators_may_see_them(tmp_path: Path) -> None:
    """A public match with a 2 s spectator delay shows on the boards 60 ticks (2 s) behind
    its newest stored tick, then all of it 2 s after it ended; a private match nothing
    until it is over; a public match without delay at once. Holds survive a restart
    and a rebuild, and once everything is visible the boards are those of a rebuild."""
    now = [time.time()]
    store = open_test_store(str(tmp_path / "events.db"), synchronous="NORMAL")
    await store.open()
    boards = tmp_path / "b.sqlite"
    matches = {
        "open": LiveMatch(store, "open", 1, dict(PUBLIC)),
        "late": LiveMatch(store, "late", 2, {"public_spectating": True, "spectator_delay": 2.0}),
        "priv": LiveMatch(store, "priv", 3, {"public_spectating": False, "spectator_delay": 0.0}),
    }
    ids = list(matches)

    def projection() -> LeaderboardProjection:
        return LeaderboardProjection(
            store, str(boards), BOARDS, METRICS, read_limit=40, clock=lambda: now[0]
        )

    async def expect(upto: dict[str, int]) -> None:
        await p.catch_up()
        assert board_values(p) == dict(await kills_from_events(store, ids, upto_tick=upto))

    p = projection()
    try:
        for m in matches.values():
            await m.create()
            await m.play(300)
        await p.open()
        await expect({"late": 300 - 60, "priv": -1})
        assert p.state.held.keys() == {"late", "priv"}
        for m in matches.values():
            await m.play(450)
        await expect({"late": 450 - 60, "priv": -1})

        # A restart reads the held batches back from the store; a rebuild holds them too.
        await p.close()
        with sqlite3.connect(boards) as db:
            assert {m for (m,) in db.execute("SELECT match_id FROM held")} == {"late", "priv"}
        p = projection()
        await p.open()
        await expect({"late": 450 - 60, "priv": -1})
        await p.rebuild()
        await expect({"late": 450 - 60, "priv": -1})

        # Played to their end (match_ended stored), but the records still say running.
        for m in matches.values():
            await m.play()
        last = {m: (await store.get_match(m)).last_tick for m in ids}
        await expect({"late": last["late"] - 60, "priv": -1})
        # Over: the private one as soon as a caller waits for it (no new event wakes the
        # loop), the delayed one at the rate its spectators see it.
        for m in ids:
            await store.update_match(m, status="ended", ended_at=now[0])
        assert await p.wait_for(await store.last_position(), 1.0)
        assert board_values(p) == dict(
            await kills_from_events(store, ids, upto_tick={"late": last["late"] - 60})
        )
        now[0] += 0.5
        await expect({"late": last["late"] - 45})
        now[0] += 1.5
        await expect({})
        assert not p.state.held
        with sqlite3.connect(boards) as db:
            assert db.execute("SELECT count(*) FROM held").fetchone() == (0,)
        released = {b: board_values(p, b) for b in ("kills", "wins")}
        await p.close()
    finally:
        await store.close()

    store = open_test_store(str(tmp_path / "events.db"))
    await store.open()
    try:
        # The same clock: past every match's end plus its delay, so a fresh fold shows all.
        p = LeaderboardProjection(
            store, str(tmp_path / "ref.sqlite"), BOARDS, METRICS, clock=lambda: now[0]
        )
        await p.open()
        await p.catch_up()
        assert {b: board_values(p, b) for b in released} == released
        await p.close()
    finally:
        await store.close()


# -- the same, served by a real server -------------------------------------------------------


async def test_a_server_shows_neither_delayed_nor_damaged_results(tmp_path: Path) -> None:
    """Over HTTP, anonymously: a private match with a 30 s spectator delay, played to its
    end over real websockets, is not on the boards (its spectators may not see its end
    for 30 s yet). A damaged batch in the store makes /healthz say degraded, with the
    reason, and /metrics count it."""
    import json
    from urllib.parse import quote

    from server_helpers import FAST_SETTINGS, call, running_app, token, url

    from client_sdk.bots import run_bots

    # A store with a damaged batch, where the server will find it.
    store = open_test_store(str(tmp_path / "server.db"), synchronous="NORMAL")
    await store.open()
    await record_matches(store, 2, players=4, seconds=10, seed=5)
    await store.close()
    damage_a_kill_batch(tmp_path / "server.db", "m0")

    async with running_app(tmp_path) as app:
        match_settings = FAST_SETTINGS | {
            "max_players": 4,
            "time_limit_s": 20.0,
            "score_limit": 2,
            "spectator_delay": 30.0,
            "public_spectating": False,
        }
        status, created = await call(
            app,
            "POST",
            f"/api/matches?game=arena&settings={quote(json.dumps(match_settings))}&start_players=4",
            token("root", "admin"),
        )
        assert status == 201, created
        match_id = created["match_id"]
        players = [f"secret-{i}" for i in range(4)]
        await run_bots(url(app), match_id, [token(p, match=match_id) for p in players], seed=7)
        assert (await app.store.get_match(match_id)).status == "ended"
        kills = await kills_from_events(app.store, [match_id])
        assert sum(kills.values()) > 0, "bots that never score make this test vacuous"

        position = await app.store.last_position()
        status, top = await call(app, "GET", f"/api/leaderboards/kills?wait={position}&limit=100")
        assert status == 200 and top["reached"] is True
        assert not {e["owner"] for e in top["entries"]} & set(players)
        for player in players:
            status, body = await call(app, "GET", f"/api/leaderboards/kills/players/{player}")
            assert status == 404 and body["error"]["code"] == "unknown_player"
        # The recorded matches are on the boards, but for the damaged batch.
        assert top["count"] > 0

        status, health = await call(app, "GET", "/healthz")
        assert status == 200 and health["status"] == "degraded"
        assert "'m0'" in health["degraded"]["leaderboards"]
        status, metrics = await call(app, "GET", "/metrics")
        assert "matchreplay_leaderboard_skipped_batches 1.0" in metrics


def test_an_event_no_metric_can_fold_is_passed_over_with_its_batch() -> None:
    """A batch that decodes but holds an event of the wrong shape (a damaged payload the
    store cannot tell from a good one): that batch is reported, the others are folded."""
    from replay.leaderboards.metrics import MatchTally
    from replay.leaderboards.state import LeaderboardState
    from replay.store.base import EventBatch

    state = LeaderboardState(BOARDS, METRICS)
    state.add_match("m", MatchTally("arena", time.time(), 30))
    joined = [(ev.JOINED, 2, 1, (s, f"p{s}", f"P{s}", 0)) for s in range(2)]
    good = [(ev.KILLED, 1, 5, (0, 1))]
    bad = [(ev.KILLED, 1, 6, ("zero",))]  # a killer slot that is no slot, no victim
    batches = [
        EventBatch("m", 1, 1, 1, joined),
        EventBatch("m", 3, 3, 3, good),
        EventBatch("m", 4, 4, 4, bad),
        EventBatch("m", 5, 5, 5, good),
    ]
    changes = state.apply(batches)
    assert [d.position for d in changes.damaged] == [4]
    assert "'m' seq 4..4" in changes.damaged[0].error
    assert state.position == 5
    assert {e.owner: e.value for e in state.board("kills", "all").slice(0, 10)} == {"p0": 2}
