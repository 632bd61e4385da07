"""The arena match state: a struct of numpy arrays indexed by player slot.

Every field is set only by ``ArenaRules.evolve`` from events, so a replayed
state equals the live one bit for bit. Fields that are not events themselves
are derived from them: a cooldown is ``last_fire`` (set by ``fired``), a
respawn timer is ``death_tick`` (set by ``killed``), velocity is the last
movement delta (set by ``moved``), health comes from ``hit``/``spawned``/
``respawned``.

Memory: 13 arrays of 1-4 bytes per slot, about 40 bytes per slot (10 KiB at
256 slots) plus the player id strings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import msgpack
import numpy as np

from replay.games.arena.settings import ArenaSettings

NEVER = -(2**30)
"""Tick value meaning "never happened" (far enough below 0 that cooldowns have elapsed)."""

# (name, dtype): the fixed order of arrays in hashes and keyframes. Append only.
ARRAYS: tuple[tuple[str, str], ...] = (
    ("present", "?"),  # slot holds a player who joined and has not left
    ("alive", "?"),
    ("x", "<i4"),  # centimetres
    ("y", "<i4"),
    ("vx", "<i4"),  # last movement delta, centimetres per tick
    ("vy", "<i4"),
    ("move_tick", "<i4"),  # tick of the last movement; velocity is 0 after it
    ("aim", "<i4"),  # 1/4096 turn, last emitted
    ("health", "<i4"),
    ("last_fire", "<i4"),  # tick of the last shot (cooldown)
    ("death_tick", "<i4"),  # tick of the last death (respawn timer)
    ("kills", "<i4"),
    ("deaths", "<i4"),
    ("score", "<i4"),
)

TICK_ARRAYS = ("move_tick", "last_fire", "death_tick")
"""The arrays holding ticks (re-clocked by :meth:`ArenaState.rebase`)."""

# (name, type): the fixed order of the scalar fields after ``settings`` in hashes and
# keyframes, and the one list ``copy``, ``digest``, ``encode`` and ``decode`` walk, so
# a new field cannot be hashed but not copied (or the reverse). Append only. ``type``
# converts a decoded value and copies a live one (``list`` copies, the rest are immutable).
SCALARS: tuple[tuple[str, type], ...] = (
    ("seed", int),
    ("tick", int),
    ("started_tick", int),
    ("ended", bool),
    ("winner", str),
    ("end_reason", str),
    ("players", list),
    ("names", list),
)


@dataclass
class ArenaState:
    settings: ArenaSettings
    seed: int
    tick: int = 0
    started_tick: int = -1
    """Tick of ``match_started``; -1 before."""
    ended: bool = False
    winner: str = ""
    end_reason: str = ""
    players: list[str | None] = field(default_factory=list)
    """Player id per slot (None: free)."""
    names: list[str] = field(default_factory=list)
    slot_of: dict[str, int] = field(default_factory=dict)
    """Invariant: ``slot_of[p] == s`` iff ``players[s] == p`` (kept by joined/left)."""
    present: np.ndarray = None  # type: ignore[assignment]
    alive: np.ndarray = None  # type: ignore[assignment]
    x: np.ndarray = None  # type: ignore[assignment]
    y: np.ndarray = None  # type: ignore[assignment]
    vx: np.ndarray = None  # type: ignore[assignment]
    vy: np.ndarray = None  # type: ignore[assignment]
    move_tick: np.ndarray = None  # type: ignore[assignment]
    aim: np.ndarray = None  # type: ignore[assignment]
    health: np.ndarray = None  # type: ignore[assignment]
    last_fire: np.ndarray = None  # type: ignore[assignment]
    death_tick: np.ndarray = None  # type: ignore[assignment]
    kills: np.ndarray = None  # type: ignore[assignment]
    deaths: np.ndarray = None  # type: ignore[assignment]
    score: np.ndarray = None  # type: ignore[assignment]

    @classmethod
    def new(cls, settings: ArenaSettings, seed: int) -> ArenaState:
        n = settings.max_players
        state = cls(settings, seed, players=[None] * n, names=[""] * n)
        for name, dtype in ARRAYS:
            setattr(state, name, np.zeros(n, dtype=dtype))
        state.move_tick.fill(NEVER)
        state.last_fire.fill(NEVER)
        state.death_tick.fill(NEVER)
        return state

    def reset_slot(self, slot: int) -> None:
        for name, _ in ARRAYS:
            getattr(self, name)[slot] = 0
        self.move_tick[slot] = NEVER
        self.last_fire[slot] = NEVER
        self.death_tick[slot] = NEVER

    def copy(self) -> ArenaState:
        out = ArenaState(
            self.settings,
            slot_of=dict(self.slot_of),
            **{name: kind(getattr(self, name)) for name, kind in SCALARS},
        )
        for name, _ in ARRAYS:
            setattr(out, name, getattr(self, name).copy())
        return out

    def rebase(self, tick: int) -> None:
        """Re-clock to ``tick`` (``Rules.rebase``): every tick-valued field moves by the
        same delta, so cooldowns, respawn timers and the time limit keep their elapsed
        times; "never" (NEVER) and "not started" (-1) stay as they are."""
        delta = tick - self.tick
        self.tick = tick
        if self.started_tick >= 0:
            self.started_tick += delta
        for name in TICK_ARRAYS:
            values = getattr(self, name)
            values[values != NEVER] += delta

    def _scalars(self) -> list[object]:
        return [self.settings.as_dict(), *(getattr(self, name) for name, _ in SCALARS)]

    def digest(self) -> bytes:
        """blake2b-128 over the scalars (msgpack) then every array's bytes, in ARRAYS order."""
        h = hashlib.blake2b(digest_size=16)
        h.update(msgpack.packb(self._scalars(), use_bin_type=True))
        for name, _ in ARRAYS:
            h.update(getattr(self, name).tobytes())
        return h.digest()

    def encode(self) -> bytes:
        """Keyframe format 1: msgpack ``[scalars, {array name: raw little-endian bytes}]``."""
        arrays = {name: getattr(self, name).tobytes() for name, _ in ARRAYS}
        return msgpack.packb([self._scalars(), arrays], use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> ArenaState:
        """Inverse of :meth:`encode`; ValueError for anything malformed."""
        try:
            scalars, arrays = msgpack.unpackb(data, raw=False, strict_map_key=True)
            settings_d, *values = scalars
            if len(values) != len(SCALARS):
                raise ValueError(f"{len(values)} scalars, expected {len(SCALARS)}")
            state = cls(
                ArenaSettings(**settings_d),
                **{name: kind(v) for (name, kind), v in zip(SCALARS, values, strict=True)},
            )
            n = state.settings.max_players
            if len(state.players) != n or len(state.names) != n:
                raise ValueError("player list length does not match max_players")
            for name, dtype in ARRAYS:
                arr = np.frombuffer(arrays[name], dtype=dtype).copy()
                if arr.shape != (n,):
                    raise ValueError(f"array {name!r} has {arr.shape[0]} slots, expected {n}")
                setattr(state, name, arr)
            state.slot_of = {p: s for s, p in enumerate(state.players) if p is not None}
            return state
        except ValueError:
            raise
        except Exception as exc:  # malformed msgpack, wrong shapes or types
            raise ValueError(f"undecodable arena keyframe: {exc!r}") from exc
