"""``matchreplay`` as a new user meets it: every command run as a real process on real
files. Bad input gets one line, ``matchreplay <command>: <message> [<code>]``, and an
exit status (2 for a usage error, 1 for a failure), never a traceback or a hang; commands
that only read a store never create one."""

from __future__ import annotations

import argparse
import re
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import SECRET, error_of, free_port, run, run_all

from server import auth
from server.cli import build_parser


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding one short simulated match, and what `simulate` printed."""
    db = tmp_path_factory.mktemp("sim") / "sim.db"
    done = run(
        "simulate", "--players", "4", "--minutes", "0.5", "--tick-rate", "10", "--db", str(db)
    )
    assert done.returncode == 0, done.stderr
    return db, done.stdout


def test_bad_input_gets_one_line_and_an_exit_code(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 20)
    missing = str(tmp_path / "missing.db")
    closed = f"ws://127.0.0.1:{free_port()}/ws"
    secret = ["--secret", SECRET]
    cases: list[tuple[list[str], int, str]] = [
        (["token", "alice", "--ttl", "-5", *secret], 2, "bad_argument"),
        (["token", "", *secret], 2, "bad_argument"),
        (["token", "alice", "--secret-file", "/nope"], 1, "no_secret"),
        (["token", "alice", "--secret-file", str(garbage)], 1, "no_secret"),
        (["bots", "--match", "m", "--url", "http://127.0.0.1:1/", *secret], 2, "bad_argument"),
        (["bots", "--match", "m", "--url", closed, *secret], 1, "unreachable"),
        (["simulate", "--db", "/nonexistent/dir/x.db"], 1, "no_directory"),
        (["simulate", "--db", str(garbage), "--minutes", "0.05"], 1, "not_a_store"),
        (["keyframes", "rebuild", "--db", str(garbage)], 1, "not_a_store"),
        (["export", "m", "-o", str(tmp_path / "x.mrp"), "--db", str(garbage)], 1, "not_a_store"),
        (["import", str(garbage), "--db", str(tmp_path / "new.db")], 1, "replay_file_corrupt"),
        (["leaderboards", "show", "kills", "--db", missing], 1, "no_store"),
        (["leaderboards", "show", "kills", "--db", str(garbage)], 1, "not_a_store"),
        (["serve", "--synchronous", "BOGUS", "--port", "0"], 2, "bad_argument"),
        (["serve", "--port", "99999"], 2, "bad_setting"),
        (["serve", "--port", "abc"], 2, "bad_argument"),
        (["serve", "--port", "0", "--db", str(garbage)], 1, "not_a_store"),
        (["demo", "--bots", "0", "--port", "0"], 2, "bad_argument"),
        (["nonsense"], 2, "bad_argument"),
    ]
    results = run_all([args for args, _, _ in cases], cwd=tmp_path)
    for (args, status, code), done in zip(cases, results, strict=True):
        assert done.returncode == status, (args, done.stderr)
        error = error_of(done)
        assert error["code"] == code, (args, done.stderr)
        named = error["command"].split()[0] if error["command"] else None
        assert named == (None if args[0] == "nonsense" else args[0]), done.stderr
    # A bad setting from the environment names the variable.
    done = run("serve", extra_env={"MATCHREPLAY_PORT": "abc"}, cwd=tmp_path)
    assert done.returncode == 2 and "MATCHREPLAY_PORT" in error_of(done)["message"]
    # Nothing above made a store, a data directory or a secret.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.bin"]


def test_commands_that_only_read_never_create_a_store(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.db")
    out = str(tmp_path / "x.mrp")
    cases = [
        ["keyframes", "rebuild", "--db", missing],
        ["leaderboards", "rebuild", "--db", missing],
        ["leaderboards", "show", "kills", "--db", missing],
        ["export", "m1", "-o", out, "--db", missing],
    ]
    for args, done in zip(cases, run_all(cases, cwd=tmp_path), strict=True):
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        error = error_of(done)
        assert error["code"] == "no_store" and missing in error["message"]
        assert "rebuilt" not in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_failed_import_leaves_no_file(simulated: tuple[Path, str], tmp_path: Path) -> None:
    db, _ = simulated
    replay = tmp_path / "m.mrp"
    assert run("export", "sim-0-4p", "-o", str(replay), "--db", str(db)).returncode == 0
    replay.write_bytes(replay.read_bytes()[:-10])  # truncated
    target = tmp_path / "new.db"
    done = run("import", str(replay), "--db", str(target))
    assert done.returncode == 1 and error_of(done)["code"] == "replay_file_truncated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mrp"]


def test_a_store_that_is_another_sqlite_file_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    done = run("simulate", "--db", str(other), "--minutes", "0.05")
    assert done.returncode == 1 and error_of(done)["code"] == "not_a_store"
    with sqlite3.connect(other) as conn:  # untouched: no matchreplay tables added
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"notes"}


def test_simulate_and_keyframes_rebuild_agree_on_the_tick_count(
    simulated: tuple[Path, str],
) -> None:
    db, printed = simulated
    simulated_ticks = re.search(r"^(\d+) ticks? \(", printed, re.M)
    assert simulated_ticks is not None, printed
    done = run("keyframes", "rebuild", "sim-0-4p", "--db", str(db))
    assert done.returncode == 0, done.stderr
    rebuilt = re.search(r"over (\d+) ticks?$", done.stdout, re.M)
    assert rebuilt is not None, done.stdout
    assert rebuilt[1] == simulated_ticks[1] == "301"  # ticks 1..301 of 30 s at 10 Hz
    for text in (printed, done.stdout):  # no "1 keyframes"
        assert not re.search(r"(?<![\d.])1 (keyframes|ticks|events|bytes)\b", text), text


def test_leaderboards_show_prints_column_headers(simulated: tuple[Path, str]) -> None:
    db, _ = simulated
    done = run("leaderboards", "show", "kills", "--limit", "2", "--db", str(db))
    assert done.returncode == 0, done.stderr
    title, header, *rows = done.stdout.splitlines()
    entries = re.match(r"kills \(\w+\) at position \d+: (\d+) entr(y|ies)$", title)
    assert entries is not None and (entries[1] == "1") == (entries[2] == "y"), title
    assert header.split() == ["rank", "player", "value", "subscore"]
    assert len(rows) == min(2, int(entries[1])) >= 1 and rows[0].split()[0] == "1"
    # The columns line up under their headers.
    assert header.index("player") == rows[0].index(rows[0].split()[1])


def test_every_option_of_every_command_is_documented() -> None:
    def undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    missing += undocumented(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
        return missing

    assert undocumented(build_parser(), "matchreplay") == []
    done = run("demo", "--help")
    assert done.returncode == 0
    for option, words in [
        ("--port", "listen port"),
        ("--bots", "bots per match"),
        ("--db", "store"),
    ]:
        assert option in done.stdout and words in done.stdout, done.stdout


def test_token_reads_the_servers_secret_and_never_makes_one_up(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run("token", "alice", cwd=elsewhere)
    assert done.returncode == 1
    error = error_of(done)
    assert error["code"] == "no_secret" and "--secret-file" in error["message"]
    assert list(elsewhere.iterdir()) == []  # no ./data/secret made up here
    # With the server's data directory (where a server generated its secret) it signs.
    data = tmp_path / "data"
    secret = auth.load_secret("", "", str(data))
    for args in (["--data-dir", str(data)], ["--secret-file", str(data / "secret")]):
        done = run("token", "alice", "--match", "m1", *args, cwd=elsewhere)
        assert done.returncode == 0, done.stderr
        assert auth.verify(secret, done.stdout.strip()).player == "alice"
    done = run("token", "bob", cwd=elsewhere, extra_env={"MATCHREPLAY_DATA_DIR": str(data)})
    assert auth.verify(secret, done.stdout.strip()).player == "bob"


def test_a_token_signed_with_another_secret_is_refused_with_a_hint(tmp_path: Path) -> None:
    server_file = tmp_path / "deep" / ("d" * 150) / "secret"
    server_file.parent.mkdir(parents=True)
    server_file.write_text("server-secret-0123456789-0123456789\n")
    for origin in (
        auth.secret_origin("", str(server_file), "unused"),
        auth.secret_origin("", "", str(tmp_path)),
        auth.secret_origin("from-the-env", "", "unused"),
    ):
        token = auth.issue("another-secret-0123456789-0123456789", "alice", "player")
        with pytest.raises(auth.AuthError) as refused:
            auth.verify("server-secret-0123456789-0123456789", token, origin)
        reason = str(refused.value)
        assert reason.startswith("token signature is invalid: signed with another secret")
        assert len(reason.encode()) <= auth.REASON_BYTES  # fits a websocket close reason
        assert reason.endswith(origin[-20:])  # the file name (or the setting) survives
