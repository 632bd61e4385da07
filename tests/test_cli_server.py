"""``matchreplay serve``, ``demo`` (``make run``) and ``bots`` as real processes on real
ports: a server that cannot start ends at once with one line; a running one says how to
begin; bots say how the match went."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_helpers import ROOT, SECRET, TIMEOUT, command, env, error_of, free_port, run
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from replay import protocol as p
from server import auth


class Server:
    """A ``matchreplay serve`` child and what it printed until it was ready."""

    def __init__(self, proc: subprocess.Popen[str], banner: str, log: Path) -> None:
        self.proc = proc
        self.log = log
        """The server's stderr (its log)."""
        self.banner = banner
        self.port = int(banner.split(" serving on ws://127.0.0.1:")[1].split("/")[0])
        self.base = f"http://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, token: str) -> dict:
        request = urllib.request.Request(
            self.base + path, method=method, headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return json.load(answer)


def read_banner(proc: subprocess.Popen[str], last: str) -> str:
    """Stdout up to the line starting with ``last``; fails if the process ends first or
    is not there within TIMEOUT seconds (then it is killed)."""
    assert proc.stdout is not None
    lines = []
    watchdog = threading.Timer(TIMEOUT, proc.kill)
    watchdog.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith(last):
                return "".join(lines)
    finally:
        watchdog.cancel()
    raise AssertionError(f"exited {proc.wait()} before it was ready: {''.join(lines)}")


@contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[Server]:
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            command("serve", "--port", "0", "--db", str(tmp_path / "s.db"), *args),
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        yield Server(proc, read_banner(proc, "a player token:"), log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=TIMEOUT)


def test_a_server_that_cannot_start_ends_at_once_with_one_line(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    quiet = {"MATCHREPLAY_SECRET": SECRET}  # no "generated a new secret" warning
    try:
        for cmd in ("serve", "demo"):
            started = time.monotonic()
            db = str(tmp_path / f"{cmd}.db")
            done = run(cmd, "--port", port, "--db", db, cwd=tmp_path, extra_env=quiet)
            assert done.returncode == 1, done.stderr
            error = error_of(done)  # one line; a hang would be subprocess.TimeoutExpired
            assert error["code"] == "port_taken" and port in error["message"], done.stderr
            assert time.monotonic() - started < TIMEOUT
    finally:
        taken.close()


def test_a_second_server_on_the_same_store_is_refused_and_harms_nothing(tmp_path: Path) -> None:
    with serving(tmp_path, "--secret", SECRET) as first:
        admin = auth.issue(SECRET, "admin", "admin")
        match = first.admin("POST", "/api/matches?game=arena", admin)["match_id"]
        done = run(
            "serve",
            *("--port", "0", "--db", str(tmp_path / "s.db"), "--secret", SECRET),
            cwd=tmp_path,
        )
        assert done.returncode == 1 and error_of(done)["code"] == "store_busy", done.stderr
        # The refused server did not mark the first one's match interrupted.
        assert first.admin("GET", f"/api/matches/{match}", admin)["status"] == "created"


def test_serve_says_how_to_begin_and_its_instructions_work(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        banner = server.banner
        assert f"viewer      {server.base}/\n" in banner
        assert f"websocket   ws://127.0.0.1:{server.port}/ws " in banner
        secret_file = tmp_path / "data" / "secret"
        assert f"secret      {secret_file}\n" in banner
        # The printed token command, run from another directory, signs what the server takes.
        lines = dict(line.strip().split(":  ", 1) for line in banner.splitlines() if ":  " in line)
        admin_cmd = lines["an admin token"].strip().removeprefix("ADMIN=$(").removesuffix(")")
        assert admin_cmd.startswith("matchreplay token admin --role admin --secret-file")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        done = run(*admin_cmd.split()[1:], cwd=elsewhere)
        assert done.returncode == 0, done.stderr
        admin = done.stdout.strip()
        assert lines["a match"].strip().startswith("curl -X POST")
        url = lines["a match"].split("'")[1]
        request = urllib.request.Request(
            url, method="POST", headers={"Authorization": f"Bearer {admin}"}
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            assert json.load(answer)["status"] == "created"
        assert list(elsewhere.iterdir()) == []
        for _ in range(3):
            with urllib.request.urlopen(f"{server.base}/healthz", timeout=TIMEOUT) as answer:
                assert answer.status == 200
    # HTTP requests are not logged one by one (websockets logs two INFO lines for each).
    log = server.log.read_text()
    assert "server.lobby" in log and "websockets" not in log, log


def test_a_token_signed_elsewhere_is_refused_with_where_the_secret_is(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        stray = auth.issue("a-secret-made-up-elsewhere-0123456789", "alice", "player")
        secret_file = str(tmp_path / "data" / "secret")
        ws = f"ws://127.0.0.1:{server.port}/ws"
        with (
            pytest.raises(ConnectionClosed) as closed,
            connect(
                ws,
                subprotocols=[p.SUBPROTOCOL],  # type: ignore[list-item]
                additional_headers={"Authorization": f"Bearer {stray}"},
                open_timeout=TIMEOUT,
            ) as conn,
        ):
            conn.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == p.CLOSE_UNAUTHORIZED
        assert closed.value.rcvd.reason.endswith(secret_file[-40:]), closed.value.rcvd.reason
        with pytest.raises(urllib.error.HTTPError) as refused:
            server.admin("POST", "/api/matches", stray)
        body = json.load(refused.value)
        assert refused.value.code == 401 and secret_file[-40:] in body["error"]["message"]


def test_bots_report_how_the_match_went(tmp_path: Path) -> None:
    with serving(tmp_path, "--secret", SECRET) as server:
        admin = auth.issue(SECRET, "admin", "admin")
        url = f"ws://127.0.0.1:{server.port}/ws"
        done = run("bots", "--url", url, "--match", "nope", "--secret", SECRET)
        assert done.returncode == 1 and error_of(done)["code"] == "unknown_match", done.stderr
        match = server.admin("POST", "/api/matches?game=arena&start_players=2", admin)
        bots = subprocess.Popen(
            command("bots", "--url", url, "--match", match["match_id"], "--count", "2"),
            env=env(MATCHREPLAY_SECRET=SECRET),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            path = f"/api/matches/{match['match_id']}"
            while server.admin("GET", path, admin)["status"] != "running":
                assert time.monotonic() < deadline and bots.poll() is None, bots.stderr
                time.sleep(0.2)
            server.proc.send_signal(signal.SIGTERM)  # the match is interrupted
            assert server.proc.wait(timeout=TIMEOUT) == 0
            out, err = bots.communicate(timeout=TIMEOUT)
        finally:
            bots.kill()
    assert bots.returncode == 1 and out == ""
    error = error_of(subprocess.CompletedProcess([], 1, out, err))
    assert error["code"] == "interrupted" and "2 bots played" in error["message"], err
    assert "server shutdown" in error["message"]


def test_make_run_takes_a_port(tmp_path: Path) -> None:
    port = free_port()
    make_env = env(MATCHREPLAY_DB=str(tmp_path / "demo.db"), MATCHREPLAY_SECRET=SECRET)
    demo = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=ROOT,
        env=make_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # make and the demo: one group to stop
    )
    try:
        banner = read_banner(demo, "viewer")
        assert f"http://127.0.0.1:{port}/" in banner
        # The same port again: the second `make run` ends at once, in one line.
        again = subprocess.run(
            ["make", "--no-print-directory", "run", f"PORT={port}"],
            cwd=ROOT,
            env=make_env | {"MATCHREPLAY_DB": str(tmp_path / "other.db")},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert again.returncode != 0 and "Traceback" not in again.stderr
        ours = [line for line in again.stderr.splitlines() if line.startswith("matchreplay")]
        assert len(ours) == 1 and ours[0].endswith("[port_taken]"), again.stderr
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        demo.communicate(timeout=TIMEOUT)
