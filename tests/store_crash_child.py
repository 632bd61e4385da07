"""Child process of test_store_crash.py: appends until killed, reporting every ack.

Usage: ``python tests/store_crash_child.py STORE MATCHES`` (a file path or store URL).
Reopens the store (it
may have been killed before), creates the matches that do not exist yet, prints
``ready``, then appends batches from one task per match forever, printing
``ack MATCH_ID LAST_SEQ`` (flushed) after each append returns, i.e. once durable.
Event ``seq`` carries data ``(seq,)``, so the parent can check contents too.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from replay.errors import MatchExistsError
from replay.events import NewEvent
from replay.store import open_store
from replay.store.base import MatchRecord


async def main(db: str, matches: int) -> None:
    async with open_store(db) as store:  # SQLite: synchronous=FULL, the default

        async def run(match_id: str) -> None:
            with contextlib.suppress(MatchExistsError):  # created before a kill
                await store.create_match(MatchRecord(match_id, "crash-game", "1", 30))
            version = (await store.get_match(match_id)).version
            while True:
                n = 1 + version % 13  # batches of varying size
                tick = version // 8
                events = [NewEvent(1, tick, (version + 1 + i,)) for i in range(n)]
                result = await store.append(match_id, events, version)
                version = result.last_seq
                sys.stdout.write(f"ack {match_id} {version}\n")
                sys.stdout.flush()

        tasks = [asyncio.create_task(run(f"crash-{i}")) for i in range(matches)]
        await asyncio.sleep(0.01)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
