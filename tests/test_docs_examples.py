"""The copy-paste examples of the docs run as written, against a real server.

docs/operations.md's "create a match" lines are read from the file (the block after
the ``tested by tests/test_docs_examples.py`` comment) and run by bash with curl, only
the port changed; without curl the same request (the same ``--data-urlencode`` fields)
is sent with urllib. And the input directions protocol.md states are the rules'.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from games import ARENA
from viewer_harness import SECRET, ViewerServer, admin_token

import replay.games.arena.events as ev
from replay.events import NewEvent
from replay.rules import Command, Rejection

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC_PORT = "127.0.0.1:8765"


def doc_block(doc: str) -> str:
    """The shell block right after the ``tested by`` comment of ``doc``."""
    text = (DOCS / doc).read_text()
    m = re.search(r"tested by tests/test_docs_examples\.py.*?\n```sh\n(.*?)```", text, re.S)
    assert m, f"{doc} lost its tested example"
    return m.group(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerServer]:
    srv = ViewerServer(tmp_path_factory.mktemp("docs"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_create_match_example_works(server: ViewerServer) -> None:
    block = doc_block("operations.md")
    assert DOC_PORT in block and "--data-urlencode 'settings={" in block
    block = block.replace(DOC_PORT, f"127.0.0.1:{server.port}")
    if shutil.which("curl"):
        env = os.environ | {
            "MATCHREPLAY_SECRET": SECRET,  # `matchreplay token` signs with the server's key
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        created = json.loads(done.stdout)
    else:  # the same request: the fields of the doc's --data-urlencode arguments
        words = shlex.split(block.split("curl", 1)[1].replace("\\\n", " "))
        fields = [w for prev, w in itertools.pairwise(words) if prev == "--data-urlencode"]
        query = urllib.parse.urlencode([tuple(f.split("=", 1)) for f in fields])
        req = urllib.request.Request(f"{server.base}/api/matches?{query}", method="POST")
        req.add_header("Authorization", f"Bearer {admin_token()}")
        with urllib.request.urlopen(req, timeout=10) as r:
            created = json.loads(r.read())
    match_id = created["match_id"]
    assert created["settings"]["time_limit_s"] == 120
    status, info = server.request("GET", f"/api/matches/{match_id}")  # no token: public
    assert status == 200 and info["game"] == "arena" and info["status"] in ("created", "running")


def test_unescaped_json_is_what_the_doc_warns_about(server: ViewerServer) -> None:
    """The doc's warning is true: curl without -g globs an unescaped ``{...}``."""
    if not shutil.which("curl"):
        pytest.skip("curl is not installed: the warning is about curl")
    url = f'{server.base}/api/matches?game=arena&settings={{"time_limit_s":120}}'
    done = subprocess.run(
        ["curl", "-sS", "-X", "POST", "-H", f"Authorization: Bearer {admin_token()}", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 or "invalid_settings" in done.stdout, done.stdout
    done = subprocess.run(
        ["curl", "-sS", "-g", "-X", "POST", "-H", f"Authorization: Bearer {admin_token()}", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["settings"]["time_limit_s"] == 120


def test_aim_and_movement_directions_are_what_protocol_md_says() -> None:
    """docs/protocol.md (INPUT) and docs/games.md (Units): +y is down the map,
    ``move_y > 0`` increases y, and aim is ``atan2(dy, dx)`` in map coordinates
    (clockwise on a y-down screen): aimed that way a shot hits, mirrored it misses."""
    protocol = (DOCS / "protocol.md").read_text()
    assert "atan2(target_y - y, target_x - x)" in protocol and "`move_y > 0` moves" in protocol

    def duel() -> object:
        state = ARENA.initial_state({}, 1)
        for p in ("a", "b"):
            ARENA.evolve(state, ARENA.decide(state, 1, Command("join", p, {"name": p})), 1)
        ARENA.evolve(state, ARENA.decide(state, 1, Command("start", "admin")), 1)
        # a at (3000, 500); b straight *down* the map from it (larger y), no wall between.
        ARENA.evolve(state, [NewEvent(ev.SPAWNED, 2, (0, 3000, 500))], 2)
        ARENA.evolve(state, [NewEvent(ev.SPAWNED, 2, (1, 3000, 1200))], 2)
        return state

    def shoot(aim: float) -> list[str]:
        state = duel()
        value = ARENA.validate_input(state, "a", [0, 0, aim, True])
        assert not isinstance(value, Rejection)
        return [ARENA.catalog[e.type].name for e in ARENA.tick(state, 10, {"a": value})]

    dy, dx = 1200 - 500, 0
    assert "hit" in shoot(math.atan2(dy, dx))  # pi/2: down the map, clockwise on screen
    assert "hit" not in shoot(math.atan2(-dy, dx))  # the maths-plot (y up) angle misses

    state = duel()
    value = ARENA.validate_input(state, "a", [0, 1, 0, False])
    assert not isinstance(value, Rejection)
    ARENA.evolve(state, ARENA.tick(state, 10, {"a": value}), 10)
    assert int(state.y[0]) > 500 and int(state.x[0]) == 3000  # move_y > 0: down the map
