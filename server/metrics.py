"""Prometheus metrics of one server (its own registry, so several servers can share a
process in tests). Process CPU and memory come with ``ProcessCollector``.

Hot paths count in bulk (one ``inc(n)`` per frame or per tick), never per input. What
every match counts on every tick (ticks, inputs, events, the tick and append times) goes
to :class:`LoopCounter` and :class:`LoopHistogram`: plain numbers updated from the event
loop's thread and read when /metrics is scraped (on that thread too). prometheus_client's
own take a lock per update (0.5-1 us each here): five of them per match per tick were
~3% of the main thread's samples with 150 matches of 2 (py-spy)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["CONTENT_TYPE", "LoopCounter", "LoopHistogram", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LoopCounter(Collector):
    """A counter updated from the event loop's thread only (see the module docstring);
    exported as ``<name>_total`` like prometheus_client's ``Counter``."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.value = 0.0
        registry.register(self)

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


class LoopHistogram(Collector):
    """A histogram updated from the event loop's thread only (see the module docstring);
    exported like prometheus_client's ``Histogram`` (cumulative ``le`` buckets, sum, count)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        """Observations per bucket, not cumulative; the last is above every bound."""
        self.sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: a value on a bound is in it
        self.sum += value

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        buckets, total = [], 0
        for bound, n in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            buckets.append((bound, total))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.sum
        )


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
        self.inputs = LoopCounter("matchreplay_inputs", "Inputs accepted from players", r)
        self.rejected = Counter(
            "matchreplay_rejected_inputs",
            "Inputs and frames refused, by reason (protocol or rules code)",
            ["reason"],
            registry=r,
        )
        self.events = LoopCounter("matchreplay_events_appended", "Events durably appended", r)
        self.append_latency = LoopHistogram(
            "matchreplay_append_latency_seconds",
            "From handing a tick's events to the store to their durable commit",
            (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            r,
        )
        self.ticks = LoopCounter("matchreplay_ticks", "Simulation ticks run", r)
        self.tick_overruns = Counter(
            "matchreplay_tick_overruns",
            "Ticks that finished after the next tick was due",
            registry=r,
        )
        self.tick_seconds = LoopHistogram(
            "matchreplay_tick_duration_seconds",
            "CPU time of one tick (commands, simulation, hand-off)",
            (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
            r,
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
