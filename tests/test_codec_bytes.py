"""The batch bytes never change: stores written before must read, and the live server
sends the same bytes to its players. ``encode_batch`` and the blob the store keeps for
an append it encodes itself give exactly the bytes of the documented rule
(docs/events.md): one msgpack array of ``[type, version, tick - base_tick, *data]``
per event."""

from __future__ import annotations

import asyncio

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.codec import encode_batch
from replay.events import NewEvent
from replay.store.base import EventStore
from replay.store.memory import MemoryRecorder
from replay.store.records import MatchRecord


def reference(events: list[NewEvent]) -> bytes:
    base = events[0].tick
    rows = [[e.type, e.version, e.tick - base, *e.data] for e in events]
    return msgpack.packb(rows, use_bin_type=True)


scalars = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-5, 5), max_size=3),
)
payloads = st.one_of(
    st.tuples(),
    st.lists(scalars, max_size=5).map(tuple),
    st.lists(scalars, max_size=5),  # a list is encoded by the same rule
)


@st.composite
def batches(draw: st.DrawFn) -> list[NewEvent]:
    n = draw(st.integers(1, 20))
    base = draw(st.integers(0, 2**40))
    steps = draw(st.lists(st.sampled_from([0, 0, 0, 1, 7]), min_size=n, max_size=n))
    ticks, tick = [], base
    for step in steps:
        tick += step
        ticks.append(tick)
    return [
        NewEvent(draw(st.integers(0, 0xFFFF)), t, draw(payloads), draw(st.integers(1, 300)))
        for t in ticks
    ]


@settings(max_examples=300, deadline=None)
@given(batches())
def test_encode_batch_gives_the_bytes_of_the_rule(events: list[NewEvent]) -> None:
    assert encode_batch(events) == reference(events)


@settings(max_examples=100, deadline=None)
@given(batches())
def test_the_store_stores_the_bytes_of_the_rule(events: list[NewEvent]) -> None:
    recorder = MemoryRecorder()

    async def append() -> bytes:
        async with EventStore(recorder) as store:
            await store.create_match(MatchRecord("m", "g", "1", 30))
            await store.append("m", events, 0)
            row = await recorder.find_batch((await recorder.match("m")).mkey, 1)
        assert row is not None
        return row.blob

    assert asyncio.run(append()) == reference(events)
