"""A throwaway PostgreSQL on this machine: ``initdb`` and ``pg_ctl start`` in a
temporary directory, on a free loopback port with its own socket directory, as the
``postgres`` user when run as root (initdb refuses root). ``matchreplay cluster``
(a local cluster in one command) and the test suite start one; neither needs a
PostgreSQL the machine already runs, only its binaries (Debian's ``postgresql``
package, installed by :func:`install_postgresql` when we are root)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PgCluster", "install_postgresql", "pg_bindir"]


def pg_bindir() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return str(Path(found).parent)
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return str(Path(candidate).parent)
    return None


def install_postgresql() -> None:
    """Debian's postgresql package, when we are root and apt-get is there."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "postgresql"], env=env, capture_output=True, timeout=900
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary directory."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="matchreplay-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            pw = pwd.getpwnam(self._user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        user = self._user
        preexec = None
        if user:
            pw = pwd.getpwnam(user)

            def preexec() -> None:  # drop to the postgres user: initdb refuses root
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

        subprocess.run(
            cmd,
            check=True,
            capture_output=True,
            timeout=timeout,
            preexec_fn=preexec,
            cwd=self.dir,
            env={**os.environ, "HOME": self.dir},
        )

    def init(self) -> None:
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run(
            "pg_ctl",
            "-D",
            self.data,
            "-l",
            os.path.join(self.dir, "log"),
            "-o",
            opts,
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", timeout=60)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
