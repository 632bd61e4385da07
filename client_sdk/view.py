"""What a viewer gets from a :class:`~client_sdk.spectator.Spectator` or a
:class:`~client_sdk.replay_file.ReplayFile`: frames with the tick, its events and
the state after it, and a buffer of them for ``async for``.

Both sources keep one local state (the game's own state object, folded with
``rules.evolve``): ``frame.state`` is that object, not a copy, so a viewer that
keeps it past the next frame should ``rules.copy_state`` it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from replay.source import StoredEvent

__all__ = ["MAX_BUFFERED_FRAMES", "FrameBuffer", "ViewFrame"]

MAX_BUFFERED_FRAMES = 4096
"""Frames kept for ``async for`` when the viewer does not iterate (2 min at 30 Hz);
older ones are dropped, the local state stays exact (it is folded on arrival)."""


@dataclass(frozen=True, slots=True)
class ViewFrame:
    tick: int
    events: list[StoredEvent]
    """The tick's events ``(type, version, tick, data)``; empty for a reset or a quiet tick."""
    state: Any
    """The local state after this tick (shared, see the module docstring)."""
    reset: bool = False
    """True when the state was replaced (late join, seek, backward step, skip)."""


class FrameBuffer:
    """A bounded queue of frames with an end marker, for ``async for``."""

    def __init__(self) -> None:
        self._frames: deque[ViewFrame] = deque(maxlen=MAX_BUFFERED_FRAMES)
        self._ready = asyncio.Event()
        self.closed = False
        self.error: BaseException | None = None
        """Raised by :meth:`get` after the last frame instead of ending the iteration."""

    def put(self, frame: ViewFrame) -> None:
        if frame.reset:
            self._frames.clear()  # frames before a reset are obsolete: the state moved
        self._frames.append(frame)
        self._ready.set()

    def close(self, error: BaseException | None = None) -> None:
        self.closed = True
        self.error = error
        self._ready.set()

    async def get(self) -> ViewFrame:
        while not self._frames:
            if self.closed:
                if self.error is not None:
                    raise self.error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()
