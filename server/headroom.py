"""What one process can still take: its measured load and the admission decision.

A process that takes players past what it can tick degrades every match on it at
once. So it measures its own headroom (CPU use, how late the ticker runs its
passes) and refuses new matches and new players when it is full, with the code
``server_full``, so the matches it already runs keep their tick rate and latency
(docs/operations.md, "Admission control"). Resumes of a seat already held are
always let in.

Measured load lags a burst of joins (players who just joined cost nothing yet),
so a budget of seated players is the first check; CPU and tick lateness catch
what the budget does not foresee (heavier matches, other work on the machine).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["Headroom", "Limits"]


@dataclass(frozen=True)
class Limits:
    """When a process is full (docs/operations.md, "Admission control")."""

    max_players: int = 0
    """Players seated across the process's matches (0: no budget)."""
    max_cpu: float = 0.85
    """Busy fraction of one core over the window (the process runs on one core); 0: off."""
    max_lateness_s: float = 0.010
    """Tick lateness (p90 over the window) beyond which matches would start to overrun;
    0: off."""
    window_s: float = 2.0
    """How far back the figures look."""


class Headroom:
    """The process's load, measured by the ticker: CPU, tick lateness, event-loop lag."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._lateness: deque[tuple[float, float]] = deque()
        """(when, seconds late) of recent passes."""
        self._cpu_marks: deque[tuple[float, float]] = deque(
            [(time.monotonic(), time.process_time())]
        )

    def record_pass(self, now: float, late: float) -> None:
        self._lateness.append((now, late))
        horizon = now - self.limits.window_s
        while self._lateness and self._lateness[0][0] < horizon:
            self._lateness.popleft()

    def measure_from_now(self) -> None:
        """Forget the CPU used so far: start-up (opening the store, catching the read
        models up) is not load, and a server just up must not refuse its first match."""
        self._cpu_marks = deque([(time.monotonic(), time.process_time())])

    def cpu(self) -> float:
        """Busy fraction of one core over about the last window."""
        now, used = time.monotonic(), time.process_time()
        marks = self._cpu_marks
        marks.append((now, used))
        while len(marks) > 2 and marks[1][0] < now - self.limits.window_s:
            marks.popleft()
        then, used_then = marks[0]
        return (used - used_then) / (now - then) if now > then else 0.0

    def _cpu_measured(self) -> bool:
        """The CPU figure spans half a window at least: over less, the request being
        answered is most of what it measures."""
        return time.monotonic() - self._cpu_marks[0][0] >= self.limits.window_s / 2

    def lateness(self, quantile: float = 0.9) -> float:
        """Seconds the ticker ran behind its due times (a quantile over the window)."""
        values = sorted(late for _, late in self._lateness)
        if not values:
            return 0.0
        return values[min(len(values) - 1, math.floor(quantile * len(values)))]

    def report(self, players: int) -> dict[str, float | int | bool | str]:
        cpu, late = self.cpu(), self.lateness()
        full = self.full_reason(players, cpu, late)
        return {
            "players": players,
            "max_players": self.limits.max_players,
            "cpu": round(cpu, 3),
            "tick_lateness_p90_s": round(late, 4),
            "loop_lag_max_s": round(self.lateness(1.0), 4),
            "full": bool(full),
            "reason": full,
        }

    def full_reason(self, players: int, cpu: float | None = None, late: float | None = None) -> str:
        """Why the process takes no more matches or players now ("" when it does);
        ``players``: seated now."""
        budget = self.limits.max_players
        if budget and players >= budget:
            return f"{players} players seated (limit {budget})"
        cpu = self.cpu() if cpu is None else cpu
        late = self.lateness() if late is None else late
        if self.limits.max_cpu and cpu > self.limits.max_cpu and self._cpu_measured():
            return f"CPU at {cpu:.0%} (limit {self.limits.max_cpu:.0%})"
        if self.limits.max_lateness_s and late > self.limits.max_lateness_s:
            limit = self.limits.max_lateness_s * 1000
            return f"ticks {late * 1000:.1f} ms late (limit {limit:g} ms)"
        return ""
