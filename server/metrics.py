"""Prometheus metrics of one server (its own registry, so several servers can share a
process in tests). Process CPU and memory come with ``ProcessCollector``.

Hot paths count in bulk (one ``inc(n)`` per frame or per tick), never per input."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.connections = Gauge(
            "matchreplay_connections", "Open websocket connections", registry=r
        )
        self.matches = Gauge(
            "matchreplay_matches", "Matches held by this process", ["status"], registry=r
        )
        self.inputs = Counter("matchreplay_inputs", "Inputs accepted from players", registry=r)
        self.rejected = Counter(
            "matchreplay_rejected_inputs",
            "Inputs and frames refused, by reason (protocol or rules code)",
            ["reason"],
            registry=r,
        )
        self.events = Counter("matchreplay_events_appended", "Events durably appended", registry=r)
        self.append_latency = Histogram(
            "matchreplay_append_latency_seconds",
            "From handing a tick's events to the store to their durable commit",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.ticks = Counter("matchreplay_ticks", "Simulation ticks run", registry=r)
        self.tick_overruns = Counter(
            "matchreplay_tick_overruns",
            "Ticks that finished after the next tick was due",
            registry=r,
        )
        self.tick_seconds = Histogram(
            "matchreplay_tick_duration_seconds",
            "CPU time of one tick (commands, simulation, hand-off)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
            registry=r,
        )
        self.slow_consumers = Counter(
            "matchreplay_slow_consumers", "Connections closed for not reading updates", registry=r
        )

        self.cpu = Gauge(
            "matchreplay_cpu_busy_ratio", "Busy fraction of a core (last 2 s)", registry=r
        )
        self.tick_lateness = Gauge(
            "matchreplay_tick_lateness_seconds",
            "How late the ticker runs its passes (p90 over the last 2 s)",
            registry=r,
        )
        self.seated_players = Gauge(
            "matchreplay_seated_players", "Players holding a seat in this process", registry=r
        )
        self.full = Gauge(
            "matchreplay_full", "1 while the process refuses new players and matches", registry=r
        )
        self.leaderboard_skipped_batches = Gauge(
            "matchreplay_leaderboard_skipped_batches",
            "Damaged stored batches the leaderboard projection passed over",
            registry=r,
        )
        self.store_damaged_matches = Gauge(
            "matchreplay_store_damaged_matches",
            "Matches whose stored row does not decode, left out of listings",
            registry=r,
        )

        self._rejected_by: dict[str, Counter] = {}

    def reject(self, reason: str, n: int = 1) -> None:
        """Count refused inputs (the labelled child is cached: ``labels()`` is not free)."""
        child = self._rejected_by.get(reason)
        if child is None:
            child = self._rejected_by[reason] = self.rejected.labels(reason=reason)
        child.inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
