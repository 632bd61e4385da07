"""What every subcommand shares: the one error format and access to the store files.

A command fails by raising: :func:`as_cli_error` turns whatever it raised into one
line on stderr, ``matchreplay <command>: <message> [<code>]``, and an exit status
(:data:`USAGE` for a bad argument, :data:`FAILURE` otherwise). A traceback is never
an answer.
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing, suppress
from pathlib import Path

from replay.store import open_store
from replay.store.base import EventStore

__all__ = [
    "FAILURE",
    "USAGE",
    "CliError",
    "UsageError",
    "as_cli_error",
    "check_server_store",
    "check_store",
    "coded_error",
    "listen_error",
    "plural",
    "store_opened",
]

USAGE = 2
"""Exit status of a usage error: the command line asked for something impossible."""
FAILURE = 1
"""Exit status of a command that was asked well but could not do it."""

# Codes of typed errors (their ``code`` attribute) that mean "you asked wrong".
_USAGE_CODES = frozenset(
    {
        "bad_argument",
        "bad_setting",
        "unknown_board",
        "unknown_period",
        "limit_too_large",
        "bad_parameter",
        "bad_cursor",
    }
)


class CliError(Exception):
    """A failure reported as one line: ``matchreplay <command>: <message> [<code>]``."""

    status = FAILURE

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """A bad argument (exit status :data:`USAGE`)."""

    status = USAGE

    def __init__(self, message: str, code: str = "bad_argument") -> None:
        super().__init__(message, code)


def coded_error(message: str, code: str) -> CliError:
    """The report of an error with a code of ours: a usage error or a failure."""
    return UsageError(message, code) if code in _USAGE_CODES else CliError(message, code)


def as_cli_error(exc: Exception) -> CliError:
    """The one-line report of anything a command raised."""
    if isinstance(exc, CliError):
        return exc
    code = getattr(exc, "code", None)
    if isinstance(code, str):  # a typed error of ours (ReplayError, LeaderboardError, ...)
        return coded_error(str(exc), code)
    if isinstance(exc, sqlite3.DatabaseError):
        return CliError(f"the store cannot be used: {exc}", "store_unreadable")
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return CliError(f"{exc.strerror or exc}{where}", "io")
    # A bug: still one line, with what it was, so it can be reported.
    return CliError(f"unexpected {type(exc).__name__}: {exc} (a bug: please report it)", "internal")


def plural(count: int, noun: str) -> str:
    """``1 bot``, ``2 bots``, ``1 entry``, ``0 entries``."""
    if count == 1:
        return f"{count} {noun}"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return f"{count} {noun[:-1]}ies"
    return f"{count} {noun}s"


# -- store files --------------------------------------------------------------------------

_SQLITE_HEADER = b"SQLite format 3\x00"
_STORE_TABLES = {"matches", "batches"}


def _sqlite_file(db: str) -> Path | None:
    """The file of an SQLite store address (``path`` or ``sqlite:///path``); None for
    another backend's URL, which its own driver checks."""
    if db.startswith("sqlite:"):
        return Path(db.removeprefix("sqlite:///").removeprefix("sqlite://"))
    return None if "://" in db else Path(db)


def check_store(db: str, *, create: bool) -> bool:
    """Check that ``db`` names a usable store before anything opens it; returns whether
    opening will create it. Only commands that write new data pass ``create``: a mistyped
    ``--db`` must not leave an empty store behind and report success."""
    path = _sqlite_file(db)
    if path is None:
        return False
    if path.is_dir():
        raise CliError(f"{db} is a directory, not a store file", "not_a_store")
    if not path.exists():
        if not create:
            raise CliError(
                f"no store at {db} (check --db; this command never creates one)", "no_store"
            )
        if not path.parent.is_dir():
            raise CliError(
                f"cannot create the store {db}: there is no directory {path.parent}", "no_directory"
            )
        return True
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise CliError(f"cannot read the store {db}: {exc.strerror}", "store_unreadable") from None
    if head and head != _SQLITE_HEADER:
        raise CliError(f"{db} is not a matchreplay store (not an SQLite file)", "not_a_store")
    try:
        with closing(sqlite3.connect(path)) as conn:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
    except sqlite3.DatabaseError as exc:
        raise CliError(f"{db} is not a readable store: {exc}", "not_a_store") from None
    if not tables and create:
        return False  # an empty SQLite file: it becomes the store
    if not tables >= _STORE_TABLES:
        raise CliError(
            f"{db} is not a matchreplay store (an SQLite file without its tables)", "not_a_store"
        )
    return False


def check_server_store(db: str) -> None:
    """:func:`check_store` for a server, which creates its store's directory (its data
    directory) when it is missing."""
    path = _sqlite_file(db)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(
                f"cannot create the directory {path.parent}: {exc.strerror}", "io"
            ) from None
    check_store(db, create=True)


@asynccontextmanager
async def store_opened(db: str, *, create: bool, **options: object) -> AsyncIterator[EventStore]:
    """The store at ``db``, open (see :func:`check_store` for ``create``). A store this
    call created is removed again when the command fails: a failed import or simulation
    leaves no empty file."""
    created = check_store(db, create=create)
    store = open_store(db, **options)
    try:
        try:
            await store.open()
        except BaseException:
            # A half-open store still has worker threads, which keep the process alive.
            await store.close()
            raise
        try:
            yield store
        finally:
            await store.close()
    except BaseException:
        if created:
            _remove_store_files(db)
        raise


def _remove_store_files(db: str) -> None:
    path = _sqlite_file(db)
    assert path is not None
    for suffix in ("", "-wal", "-shm", "-journal", ".writer.lock"):
        with suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


def listen_error(exc: OSError, host: str, port: int) -> CliError | None:
    """The one-line report of a server that cannot listen, or None for another OSError."""
    if isinstance(exc, socket.gaierror):
        return CliError(f"cannot listen on {host}:{port}: {exc.strerror}", "cannot_listen")
    if exc.filename is not None:
        return None
    if exc.errno == errno.EADDRINUSE:
        return CliError(
            f"cannot listen on {host}:{port}: the port is taken (another server?);"
            " pick another with --port",
            "port_taken",
        )
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
        return CliError(f"cannot listen on {host}:{port}: {exc.strerror}", "cannot_listen")
    return None
