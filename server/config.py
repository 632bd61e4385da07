"""Server settings: command-line flags over ``MATCHREPLAY_*`` environment variables
over defaults (docs/operations.md lists every one)."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, fields
from typing import Any

from replay import protocol
from replay.games import load_games
from replay.rules import GameRegistry

__all__ = ["Settings", "SettingsError", "add_arguments", "configured_games", "from_args"]


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8765
    db: str = "data/matchreplay.db"
    data_dir: str = "data"
    """Where the generated secret lives when none is configured."""
    secret: str = ""
    """HS256 key for tokens (MATCHREPLAY_SECRET); see also ``secret_file``."""
    secret_file: str = ""
    synchronous: str = "FULL"
    """SQLite durability of an acknowledged append (FULL survives power loss)."""
    max_connections: int = 10_000
    """Each connection costs ~20-300 KiB (buffers); 10k connections <= ~3 GiB worst case."""
    open_timeout: float = 10.0
    """Seconds to complete the HTTP upgrade (handshake timeout)."""
    http_idle_timeout: float = 15.0
    """Seconds a plain HTTP connection is kept open between an answer and the next request
    (idle ones are closed first when ``max_connections`` is reached)."""
    http_max_requests: int = 1000
    """Plain HTTP requests answered on one connection; the last answer closes it."""
    join_timeout: float = 10.0
    """Seconds after WELCOME within which a JOIN must arrive."""
    ping_interval: float = 15.0
    ping_timeout: float = 15.0
    grace_period: float = 30.0
    """Seconds a dropped player's seat is kept for a reconnect (then the player leaves)."""
    seat_timeout: float = 15.0
    """Seconds a reserved seat waits for its player's JOIN."""
    input_rate: float = protocol.DEFAULT_INPUT_RATE
    input_burst: int = protocol.DEFAULT_INPUT_BURST
    command_rate: float = protocol.DEFAULT_COMMAND_RATE
    """COMMANDs (chat included) per second per connection; ``command_burst`` at once."""
    command_burst: int = protocol.DEFAULT_COMMAND_BURST
    query_rate: float = protocol.DEFAULT_QUERY_RATE
    """LEADERBOARD queries per second per connection; ``query_burst`` at once."""
    query_burst: int = protocol.DEFAULT_QUERY_BURST
    control_rate: float = protocol.DEFAULT_CONTROL_RATE
    """Other messages (JOIN, LEAVE, LIST, WATCH, STEP, ...; not SEEK) per second per connection."""
    control_burst: int = protocol.DEFAULT_CONTROL_BURST
    anonymous_timeout: float = 10.0
    """Seconds a token-less connection may stay without WATCHing a match (LIST and
    queries do not extend it); then it is closed with 4004."""
    authenticated_reserve: float = 0.1
    """Share of ``max_connections`` only connections with a token may take: token-less
    ones are refused with 4009 past ``max_connections * (1 - authenticated_reserve)``."""
    close_timeout: float = 2.0
    """Seconds a connection has to answer the server's close (shutdown included) before
    its TCP connection is dropped: a client that stops reading cannot delay a shutdown."""
    max_frame_bytes: int = protocol.MAX_FRAME_BYTES
    send_buffer_bytes: int = 256 * 1024
    """A connection whose unsent updates exceed this is closed with 4010 (slow consumer)."""
    spectator_delay: float = 0.0
    """Default ``spectator_delay`` (seconds) of matches that set none (a demo: 30)."""
    spectator_queue_bytes: int = 64 * 1024
    """Unsent bytes per spectator before it is skipped to the next keyframe (~2 s of a
    10-player match); memory per spectator is at most this plus one frame."""
    spectator_stall_seconds: float = 10.0
    """A spectator skipped (or its playback blocked) this long is closed with 4010."""
    spectator_max_skips: int = 3
    """Skips allowed per minute; one more closes the spectator with 4010."""
    shutdown_timeout: float = 30.0
    """Seconds a graceful shutdown may take before the process exits anyway (status 1)."""
    rewind_horizon_s: float = 300.0
    """How far back (seconds of play) an admin may rewind a live match (docs/replay.md)."""
    token_ttl: float = 24 * 3600.0
    """Default lifetime of tokens issued by the admin API."""
    boards_config: str = ""
    """Leaderboard definitions (TOML or JSON, docs/leaderboards.md); empty: each game's defaults."""
    boards_db: str = ""
    """The leaderboards' read-model file; empty: ``<db>.boards.sqlite``."""
    max_seated_players: int = 0
    """Admission: players seated across this process's matches before it refuses new
    players and matches with ``server_full`` (0: no budget; docs/operations.md)."""
    max_cpu: float = 0.85
    """Admission: the process is full past this busy fraction of a core (2 s window; 0: off)."""
    max_tick_lateness_ms: float = 25.0
    """Admission: the process is full when its ticks run this late (p90 over 2 s; 0: off)."""
    node: str = ""
    """This node's name in a cluster (docs/operations.md, "A cluster"); empty: a single
    server. Nodes share one PostgreSQL store and one ``secret``."""
    public_url: str = ""
    """The websocket URL players and other nodes reach this node at (a cluster node;
    default ``ws://HOST:PORT/ws``). Redirects carry it in a close reason: <= 120 bytes."""
    lease_ttl: float = 1.5
    """Seconds a cluster node's lease on its matches lasts without a heartbeat: a node
    that dies is taken over this long after its last heartbeat (renewed every third)."""
    games: str = ""
    """More games beside the built-in ones: comma-separated ``module:attribute`` specs of
    ``replay.rules.Rules`` subclasses (docs/games.md, "Adding a game to a server")."""

    @property
    def game_specs(self) -> list[str]:
        return [s.strip() for s in self.games.split(",") if s.strip()]


_ENV_PREFIX = "MATCHREPLAY_"
_NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,32}")
MAX_PUBLIC_URL_BYTES = 120
"""A redirect's close reason holds the URL (a close reason is at most 123 bytes)."""

_ALIASES: dict[str, tuple[str, ...]] = {"db": ("--store",)}
"""Other spellings of a flag: ``--store postgresql://...`` reads better for a database."""

_CHOICES: dict[str, tuple[str, ...]] = {"synchronous": ("FULL", "NORMAL")}
"""Settings that take one of a few words."""


class SettingsError(ValueError):
    """A setting (flag or environment variable) with a value it cannot take."""

    code = "bad_setting"


def _coerce(kind: Any, raw: str) -> Any:
    name = kind if isinstance(kind, str) else kind.__name__
    convert = {"int": int, "float": float}.get(name, str)
    try:
        return convert(raw)
    except ValueError:
        raise ValueError(
            f"{raw!r} is not {'an integer' if name == 'int' else 'a number'}"
        ) from None


def _check(settings: Settings) -> None:
    if settings.node and not _NODE_NAME.fullmatch(settings.node):
        raise SettingsError(
            f"node must be 1..32 characters of A-Z a-z 0-9 . _ -, not {settings.node!r}"
        )
    if len(settings.public_url.encode()) > MAX_PUBLIC_URL_BYTES:
        raise SettingsError(
            f"public_url is over {MAX_PUBLIC_URL_BYTES} bytes (a close reason carries it)"
        )
    if settings.node and not settings.db.startswith(("postgresql://", "postgres://")):
        raise SettingsError(
            f"a cluster node (node {settings.node!r}) needs a postgresql:// store shared by"
            f" every node, not {settings.db!r}"
        )
    if settings.node and settings.lease_ttl < 0.5:
        raise SettingsError("lease_ttl must be at least 0.5 s")
    if not 0 <= settings.port <= 65535:
        raise SettingsError(f"port {settings.port} is not in 0..65535 (0: any free port)")
    for name, choices in _CHOICES.items():
        if getattr(settings, name) not in choices:
            raise SettingsError(
                f"{name} must be one of {', '.join(choices)}, not {getattr(settings, name)!r}"
            )


def _flag_type(kind: Any) -> Any:
    def convert(raw: str) -> Any:
        try:
            return _coerce(kind, raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per setting (``--max-connections``); defaults come from the environment."""
    for f in fields(Settings):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            *_ALIASES.get(f.name, ()),
            dest=f.name,
            default=None,
            type=_flag_type(f.type),
            choices=_CHOICES.get(f.name),
            help=f"env {_ENV_PREFIX}{f.name.upper()} (default {f.default!r})",
        )


def from_args(args: argparse.Namespace | None = None, **overrides: Any) -> Settings:
    """Flags over environment over defaults; raises :class:`SettingsError` for a value a
    setting cannot take (naming the variable when it came from the environment)."""
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = _ENV_PREFIX + f.name.upper()
        env = os.environ.get(name)
        if env is not None:
            try:
                values[f.name] = _coerce(f.type, env)
            except ValueError as exc:
                raise SettingsError(f"{name}: {exc}") from None
        flag = getattr(args, f.name, None) if args is not None else None
        if flag is not None:
            values[f.name] = flag
    values.update(overrides)
    settings = Settings(**values)
    _check(settings)
    return settings


def configured_games() -> GameRegistry:
    """The built-in games plus ``MATCHREPLAY_GAMES``: what every command knows."""
    return load_games(from_args(None).game_specs)
