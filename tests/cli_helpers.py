"""Running ``matchreplay`` as real child processes: ``python -m server.cli ...``."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "cli-test-secret-0123456789abcdef-0123456789"
TIMEOUT = 60
"""Seconds any one command may take: a hang fails the test instead of stalling it."""

ERROR_LINE = re.compile(
    r"^matchreplay(?: (?P<command>[a-z]+(?: [a-z]+)?))?: (?P<message>.+) \[(?P<code>[a-z_]+)\]$"
)
"""The one error format of every command (the command is absent when none was named)."""


def env(**extra: str) -> dict[str, str]:
    """The environment of a child: this checkout importable, no MATCHREPLAY_* leaking in
    but the admission settings tests/conftest.py sets (a busy test machine must not
    refuse a child's matches at random either)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MATCHREPLAY_") or k in _ADMISSION_SETTINGS
    }
    return base | {"PYTHONPATH": str(ROOT)} | extra


_ADMISSION_SETTINGS = frozenset({"MATCHREPLAY_MAX_CPU", "MATCHREPLAY_MAX_TICK_LATENESS_MS"})


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "server.cli", *args]


def run(
    *args: str, cwd: Path | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        cwd=cwd or ROOT,
        env=env(**(extra_env or {})),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def run_all(
    commands: Sequence[Sequence[str]], cwd: Path, extra_env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands a few at a time (each is a process that mostly starts up); a
    command over :data:`TIMEOUT` fails the test (subprocess.TimeoutExpired)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: run(*args, cwd=cwd, extra_env=extra_env), commands))


def error_of(done: subprocess.CompletedProcess[str]) -> re.Match[str]:
    """The one error line a failed command printed (asserts there is exactly that)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    match = ERROR_LINE.match(lines[0])
    assert match is not None, lines[0]
    return match


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
