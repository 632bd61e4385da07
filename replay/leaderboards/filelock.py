"""One writer per read model: an exclusive ``flock`` on ``<read model>.lock``.

The kernel releases the lock when its holder exits, even by SIGKILL, so a crashed
server never leaves a read model locked."""

from __future__ import annotations

import fcntl
import os

from replay.leaderboards.errors import ReadModelBusyError

__all__ = ["WriterLock"]


class WriterLock:
    """The exclusive lock of the read model at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises ReadModelBusyError when another process holds it."""
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ReadModelBusyError(
                f"the read model {self.path!r} is open in another process (a running server?)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
