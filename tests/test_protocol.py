"""The sans-I/O protocol core: every client message parsed or refused with a code."""

from __future__ import annotations

import argparse

import msgpack
import pytest

from replay import protocol as p
from server import auth, config


def bad(frame: bytes | str) -> str:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client(frame)
    return info.value.code


def test_client_messages_round_trip():
    assert p.decode_client(p.encode_join("m1", 0)) == p.Join("m1", 0)
    assert p.decode_client(p.encode_join("m1", None)) == p.Join("m1", None)
    frame = p.encode_inputs([(1, [0.5, 0, 1.0, True]), (2, [0, 0, 0, False])])
    assert p.decode_client(frame) == p.Inputs([(1, [0.5, 0, 1.0, True]), (2, [0, 0, 0, False])])
    assert p.decode_client(p.encode_command(3, "chat", {"text": "hi"})) == p.Command(
        3, "chat", {"text": "hi"}
    )
    assert p.decode_client(p.encode_leave()) == p.Leave()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"", p.E_MALFORMED),
        (b"\xc1", p.E_MALFORMED),
        (msgpack.packb([1, "m"]) + b"\x00", p.E_MALFORMED),  # trailing bytes
        (msgpack.packb({"t": 1}), p.E_MALFORMED),
        (msgpack.packb([]), p.E_MALFORMED),
        (msgpack.packb(["1"]), p.E_MALFORMED),
        (msgpack.packb([1.0, "m", 0]), p.E_MALFORMED),
        (msgpack.packb({1: 2}), p.E_MALFORMED),  # non-string map key
        ("text", p.E_TEXT_FRAME),
        (msgpack.packb([0]), p.E_UNKNOWN_TYPE),
        (msgpack.packb([16, 1, "p", "player", {}]), p.E_UNKNOWN_TYPE),  # a server message
        (msgpack.packb([1, "m"]), p.E_INVALID_FIELD),
        (msgpack.packb([1, "", 0]), p.E_INVALID_FIELD),
        (msgpack.packb([1, "m", True]), p.E_INVALID_FIELD),
        (msgpack.packb([1, "m", 2**53]), p.E_INVALID_FIELD),
        (msgpack.packb([2, [[0, 1]]]), p.E_INVALID_FIELD),  # seq 0
        (msgpack.packb([2, [[1]]]), p.E_INVALID_FIELD),  # no input fields
        (msgpack.packb([2, [[1, *range(17)]]]), p.E_INVALID_FIELD),
        (msgpack.packb([2, [[2, 0], [2, 0]]]), p.E_INVALID_FIELD),  # not increasing
        (msgpack.packb([2, [[1.5, 0]]]), p.E_INVALID_FIELD),
        (msgpack.packb([2, "x"]), p.E_INVALID_FIELD),
        (msgpack.packb([3, 1, "chat", []]), p.E_INVALID_FIELD),
        (msgpack.packb([3, -1, "chat", {}]), p.E_INVALID_FIELD),
        (msgpack.packb([4, 1]), p.E_INVALID_FIELD),
        (b"\xdd\xff\xff\xff\xff", p.E_MALFORMED),  # claims a 4-billion-item array
    ],
)
def test_invalid_frames_are_refused_with_a_code(frame, code):
    assert bad(frame) == code


def test_server_messages_decode_to_typed_tuples():
    update = p.decode_server(p.update(7, 42, b"\x90", [0, 5, 3, 9]))
    assert update == p.Update(7, 42, b"\x90", [0, 5, 3, 9])
    assert update.ack_for(3) == 9 and update.ack_for(1) is None
    assert p.decode_server(p.error("x", "y", 4)) == p.Error("x", "y", 4)
    assert p.decode_server(p.ok(1, 2)) == p.Ok(1, 2)
    with pytest.raises(p.ProtocolError):
        p.decode_server(msgpack.packb([99]))


def test_tokens_and_settings_precedence(tmp_path, monkeypatch):
    tok = auth.issue("k" * 32, "alice", "player", "m1", ttl=60)
    ident = auth.verify("k" * 32, tok)
    assert (ident.player, ident.role, ident.match) == ("alice", "player", "m1")
    assert ident.may_enter("m1") and not ident.may_enter("m2")
    with pytest.raises(ValueError):
        auth.issue("k" * 32, "alice", "superuser")
    # A generated secret is stable across restarts and private to its owner.
    first = auth.load_secret("", "", str(tmp_path))
    assert auth.load_secret("", "", str(tmp_path)) == first
    assert (tmp_path / "secret").stat().st_mode & 0o077 == 0
    # Flags over environment over defaults.
    monkeypatch.setenv("MATCHREPLAY_PORT", "9001")
    monkeypatch.setenv("MATCHREPLAY_GRACE_PERIOD", "2.5")
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    s = config.from_args(parser.parse_args(["--db", str(tmp_path / "x.db")]))
    assert (s.port, s.grace_period, s.db) == (9001, 2.5, str(tmp_path / "x.db"))
    s = config.from_args(parser.parse_args(["--port", "9002", "--db", str(tmp_path / "x.db")]))
    assert s.port == 9002


@pytest.mark.parametrize(
    ("query", "args", "path"),
    [
        ("boards", {}, "/api/leaderboards"),
        ("top", {"board": "kills", "limit": 5}, "/api/leaderboards/kills"),
        ("count", {"board": "kills"}, "/api/leaderboards/kills/count"),
        ("periods", {"board": "kills"}, "/api/leaderboards/kills/periods"),
        ("entry", {"board": "kills", "player": "a/b"}, "/api/leaderboards/kills/players/a%2Fb"),
        (
            "around",
            {"board": "k", "player": "around", "limit": 3},
            "/api/leaderboards/k/players/around/around",
        ),
    ],
)
def test_leaderboard_routes_are_one_table_both_ways(query, args, path):
    """The SDK builds paths and the server parses them with the same table."""
    built, rest = p.leaderboard_path(query, args)
    assert built == path
    assert rest == {k: v for k, v in args.items() if k not in ("board", "player")}
    name, where = p.parse_leaderboard_path(built)
    assert name == query and where == {k: v for k, v in args.items() if k in ("board", "player")}


@pytest.mark.parametrize(
    "path", ["/api/leaderboardsx", "/api/leaderboards/k/nope", "/api/leaderboards/k/players"]
)
def test_paths_outside_the_leaderboard_table_parse_to_none(path):
    assert p.parse_leaderboard_path(path) is None


def test_every_type_code_is_declared_once_with_a_name():
    from replay.protocol import leaderboard, player, spectator

    parts = (player, spectator, leaderboard)
    client = [code for m in parts for code in m.CLIENT_MESSAGES]
    server = [code for m in parts for code in m.SERVER_MESSAGES]
    assert len(set(client)) == len(client) and len(set(server)) == len(server)
    assert set(p.CLIENT_TYPES) == set(client) and set(p.SERVER_TYPES) == set(server)
    assert p.CLIENT_TYPES[p.WATCH] == "WATCH" and p.SERVER_TYPES[p.LEADERBOARD_REPLY]


def test_a_player_does_not_retry_what_a_spectator_does_not():
    assert p.NO_RETRY < p.PLAYER_NO_RETRY
    assert p.CLOSE_GOING_AWAY in p.PLAYER_NO_RETRY - p.NO_RETRY  # its match is interrupted
    for retried in (p.CLOSE_SLOW_CONSUMER, p.CLOSE_TOO_MANY_CONNECTIONS, p.CLOSE_JOIN_TIMEOUT):
        assert retried not in p.PLAYER_NO_RETRY
