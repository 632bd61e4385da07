"""Child process of the projection crash test: folds the store into the boards file,
printing the checkpoint after every committed chunk, until caught up.

usage: leaderboard_projection_child.py STORE BOARDS READ_LIMIT [follow]

With ``follow`` it then keeps following the store (as a server's projection
does, serving rebuild requests) until killed.
"""

from __future__ import annotations

import asyncio
import sys

from games import GAMES, METRICS, open_test_store

from replay.leaderboards.projection import LeaderboardProjection


async def main(store_path: str, boards_path: str, read_limit: int, follow: bool) -> None:
    store = open_test_store(store_path, read_only=True)  # beside the test's writer
    await store.open()
    projection = LeaderboardProjection(
        store, boards_path, GAMES.default_boards(), METRICS, read_limit=read_limit
    )
    await projection.open()
    print(f"start {projection.position}", flush=True)
    while await projection.step():
        print(f"pos {projection.position}", flush=True)
    print(f"done {projection.position}", flush=True)
    if follow:
        await projection.run(poll_interval=0.05)
    await projection.close()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:] == ["follow"]))
