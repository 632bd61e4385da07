"""The hot-path metrics (server/metrics.py's LoopCounter and LoopHistogram) export what
prometheus_client's Counter and Histogram export for the same updates."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from server.metrics import LoopCounter, LoopHistogram

BOUNDS = (0.0005, 0.001, 0.002, 0.1)
# On a bound (counted in that bucket: ``le``), between bounds, below all, above all.
VALUES = (0.0005, 0.0001, 0.0007, 0.001, 0.05, 0.1, 0.25, 0.0)


def _exposition(registry: CollectorRegistry) -> list[str]:
    # prometheus_client's own add a ``_created`` sample (a timestamp); ours do not.
    return [
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    ]


def test_a_loop_histogram_exports_what_a_histogram_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopHistogram("x_seconds", "Some durations", BOUNDS, ours)
    reference = Histogram("x_seconds", "Some durations", buckets=BOUNDS, registry=theirs)
    assert _exposition(ours) == _exposition(theirs)  # empty
    for value in VALUES:
        mine.observe(value)
        reference.observe(value)
    assert _exposition(ours) == _exposition(theirs)
    assert 'x_seconds_bucket{le="0.0005"} 3.0' in _exposition(ours)


def test_a_loop_counter_exports_what_a_counter_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = LoopCounter("x_events", "Some events", ours)
    reference = Counter("x_events", "Some events", registry=theirs)
    for n in (1, 5, 0, 2.5):
        mine.inc(n)
        reference.inc(n)
    assert _exposition(ours) == _exposition(theirs)
    assert "x_events_total 8.5" in _exposition(ours)
