"""One ``matchreplay serve --node`` child process on loopback: started, killed
(SIGKILL), paused (SIGSTOP), stopped (SIGTERM) and started again on the same port, so
its URL stays the same across restarts. ``matchreplay cluster``, the cluster tests and
``benchmarks/cluster.py`` run their nodes with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["NodeProcess", "free_port"]

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    def __init__(
        self,
        name: str,
        store: str,
        data_dir: Path,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        """``data_dir``: the node's own directory (its log is ``serve.log`` there);
        ``args``: more ``serve`` flags; ``env``: the child's environment (a shared
        ``MATCHREPLAY_SECRET`` in it)."""
        self.name = name
        self.store = store
        self.port = port or free_port()
        self.data = data_dir
        self.args = list(args)
        self.env = dict(env if env is not None else os.environ)
        self.proc: subprocess.Popen[str] | None = None
        self.log = self.data / "serve.log"
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> NodeProcess:
        """Start it and return once it serves (RuntimeError if it exits first)."""
        self.data.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "server.cli", "serve", "--node", self.name,
            "--store", self.store, "--port", str(self.port), "--data-dir", str(self.data),
            *self.args,
        ]  # fmt: skip
        with self.log.open("a") as stderr:
            self.proc = subprocess.Popen(
                command, env=self.env, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        proc = self.proc
        assert proc.stdout is not None
        watchdog = threading.Timer(READY_TIMEOUT_S, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                if line.strip().startswith("a player token:"):  # the banner's last line
                    # Keep draining stdout so the child never blocks on a full pipe.
                    threading.Thread(target=proc.stdout.read, daemon=True).start()
                    return self
        finally:
            watchdog.cancel()
        raise RuntimeError(
            f"node {self.name} exited with {proc.wait()} before serving: {self.log.read_text()}"
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the node dies without a word (its leases lapse)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a paused node is resumed first) and its exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
