"""The writer lock of an SQLite store: one writer process per store file.

SQLite serialises single transactions between processes, but not a whole writer:
two processes that each keep a match's version and the head position in memory
(a server and an ``import``) would interleave and fail each other's appends. So a
process that opens a store for writing takes an exclusive ``flock`` on
``<db>.writer.lock`` and writes its details into it (pid, command line, since
when); a second writer is refused at open with an error naming the holder. The
kernel releases the lock when the holder exits, however it exits, so a crash
never leaves a stale lock (the file stays; its contents are only a description).
Readers take no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time

from replay.errors import StoreLockedError

__all__ = ["WriterLock", "lock_path"]


def lock_path(db_path: str) -> str:
    return db_path + ".writer.lock"


class WriterLock:
    """An exclusive lock on ``<db>.writer.lock``, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, db_path: str) -> None:
        self.path = lock_path(db_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StoreLockedError` naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise StoreLockedError(
                f"{self.path.removesuffix('.writer.lock')} is open for writing by {holder};"
                " one writer process per store file: stop it first, or use a read-only"
                " command (export, leaderboards show, store verify, store backup)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        details = {
            "pid": os.getpid(),
            "command": _command(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(details) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock


def _command() -> str:
    """What the holder is, for people: the program and its subcommand, never the rest
    of the command line (it may hold a secret; the lock file is readable by all)."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if program in ("cli.py", "__main__.py", "matchreplay", ""):
        program = "matchreplay"
    words = [program, *(a for a in sys.argv[1:2] if not a.startswith("-"))]
    return " ".join(words)


def _describe(raw: bytes) -> str:
    try:
        d = json.loads(raw)
        return f"pid {d['pid']} ({d['command']}) since {d['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process (its details are not readable)"
