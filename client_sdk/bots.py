"""Network bot players: GameClients driven by the arena's vectorised bot brain.

One process runs many bots of one match. The first bot folds the match's events
into a state (``track_state``); the brain reads that shared state once per tick
and every bot sends its own slot's input, so the per-tick cost is one numpy
step for all bots plus one small frame per bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from client_sdk.game_client import ClientClosed, GameClient
from replay import protocol as p

__all__ = ["run_bots"]

log = logging.getLogger(__name__)


async def run_bots(
    url: str,
    match_id: str,
    tokens: Sequence[str],
    *,
    rate: float | None = None,
    duration: float | None = None,
    seed: int = 1,
    nodes: Sequence[str] = (),
) -> list[GameClient]:
    """Play ``match_id`` with one bot per token until the match ends (or ``duration``
    seconds). ``rate``: inputs per second per bot (default: the match's tick rate).
    ``nodes``: the cluster's other nodes (``url`` may be any node: bots are redirected
    to the match's owner and follow it through a failover like any player)."""
    from replay.games.arena.bots import BotBrain

    clients = [
        GameClient(url, t, nodes=nodes, track_state=(i == 0), keep_messages=(i == 0))
        for i, t in enumerate(tokens)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    for c in clients:  # one at a time: slots are assigned in join order
        await c.join(match_id)
    leader = clients[0]
    assert leader.joined is not None and leader.rules is not None
    if leader.joined.game != "arena":
        raise ValueError(f"bots play arena, not {leader.joined.game!r}")
    period = 1.0 / (rate or leader.joined.tick_rate)
    brain = BotBrain(leader.state.settings.max_players, seed, leader.joined.tick_rate)
    drains = [asyncio.create_task(_drain(c)) for c in clients]
    start = time.monotonic()
    next_at = start
    try:
        while not drains[0].done():
            if duration is not None and time.monotonic() - start >= duration:
                break
            inputs = brain.inputs(leader.state, leader.tick + 1)
            alive = leader.state.alive
            for c in clients:
                if c.slot is not None and alive[c.slot]:
                    c.send_input(inputs.raw(c.slot))
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        for c in clients:
            await c.close()
        for d in drains:
            d.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientClosed):
                await d
    return clients


async def _drain(client: GameClient) -> None:
    """Read the client's messages (its state and acks advance as they are read)."""
    async for message in client:
        if isinstance(message, p.Error) and message.code != p.E_REJECTED:
            log.info("bot %s: %s %s", client.slot, message.code, message.message)
