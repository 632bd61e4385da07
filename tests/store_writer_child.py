"""A writer process for the store's cross-process tests (tests/test_store_recorders.py).

python tests/store_writer_child.py race URL MATCH_ID
    prints "ready"; then for each stdin line "go VERSION TICK" appends 4 events at
    expected VERSION and prints "ok LAST_SEQ" or "conflict".
python tests/store_writer_child.py acquire URL OWNER MATCH_ID...
    prints "ready", waits for a stdin line, then takes the lease of every match at
    once and prints "won MATCH_ID EPOCH" or "lost MATCH_ID" for each.
python tests/store_writer_child.py write URL PREFIX MATCHES BATCHES
    creates MATCHES matches PREFIX-0.., prints "ready", waits for a stdin line,
    then appends BATCHES batches of 4 events to each, all matches at once, and
    prints "ack FIRST_POSITION LAST_POSITION" per append.
"""

from __future__ import annotations

import asyncio
import sys

from store_contract import record, tick_batch

from replay.errors import ConcurrencyError
from replay.store import open_store


async def race(url: str, match_id: str) -> None:
    async with open_store(url) as store:
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).split():
            _, version, tick = line
            try:
                result = await store.append(match_id, tick_batch(int(tick)), int(version))
                print(f"ok {result.last_seq}", flush=True)
            except ConcurrencyError:
                print("conflict", flush=True)


async def write(url: str, prefix: str, matches: int, batches: int) -> None:
    async with open_store(url) as store:
        ids = []
        for i in range(matches):
            rec = record()
            ids.append(
                (await store.create_match(rec.with_changes(match_id=f"{prefix}-{i}"))).match_id
            )
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def play(match_id: str) -> None:
            for b in range(batches):
                r = await store.append(match_id, tick_batch(b), b * 4)
                print(f"ack {r.first_position} {r.last_position}", flush=True)

        await asyncio.gather(*(play(m) for m in ids))


async def acquire(url: str, owner: str, match_ids: list[str]) -> None:
    async with open_store(url) as store:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        leases = await asyncio.gather(*(store.acquire_lease(m, owner, 60) for m in match_ids))
        for match_id, lease in zip(match_ids, leases, strict=True):
            print(f"won {match_id} {lease.epoch}" if lease else f"lost {match_id}", flush=True)


if __name__ == "__main__":
    mode, url, *rest = sys.argv[1:]
    if mode == "race":
        asyncio.run(race(url, rest[0]))
    elif mode == "acquire":
        asyncio.run(acquire(url, rest[0], rest[1:]))
    else:
        asyncio.run(write(url, rest[0], int(rest[1]), int(rest[2])))
