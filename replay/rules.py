"""The game rules interface: how a game plugs into matchreplay.

A game is a set of pure functions over a state (see docs/games.md). The
server runs them live, the replay engine folds their events, the spectator
SDK rebuilds state with them; all of them see only this interface.

The contract that makes replay trustworthy::

    state = rules.initial_state(settings, seed)
    for each tick t = 1, 2, ...:
        for each command queued for t:     # join, leave, chat, ...
            result = rules.decide(state, t, command)
            if result is not a Rejection:
                rules.evolve(state, result, t)   # apply now: later commands see it
                events += result
        ticked = rules.tick(state, t, inputs of t)
        rules.evolve(state, ticked, t)
        events += ticked

The live state is *only ever changed by* ``evolve``. So folding the stored
events from the initial state (in any grouping: tick by tick, or thousands
of ticks in one call) yields the live state bit for bit, and ``state_hash``
proves it. Nothing in a state may depend on the wall clock, on randomness
other than a generator seeded from the match seed and the tick, or on
inputs that did not become events.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from replay.events import EventCatalog, NewEvent

__all__ = ["Command", "Rejection", "Rules", "StoredEvent", "register", "rules_for"]

S = TypeVar("S")

StoredEvent = tuple[int, int, int, tuple[Any, ...]]
"""``(type, version, tick, data)``, as ``EventBatch.events`` holds them (already upcast)."""


class Command(NamedTuple):
    """What a participant asks for outside the per-tick input stream."""

    kind: str
    """``join``, ``leave``, ``chat``, ... (each game documents its own)."""
    player: str
    """Player id from the authenticated token."""
    args: Mapping[str, Any] = {}


class Rejection(NamedTuple):
    """Why a command or input was refused; ``code`` is stable and documented."""

    code: str
    reason: str


class Rules(abc.ABC, Generic[S]):
    """A game's rules. Implementations are stateless; all match data is in ``S``."""

    name: str
    """Game id stored with each match, e.g. ``"arena"``."""
    version: str
    """Rules version stored with each match. Replays do not depend on it: they replay
    stored outcomes, so a match recorded under an older version replays under newer code."""
    catalog: EventCatalog
    """Every event type with its schema versions and upcasters."""
    state_format: int = 1
    """Keyframe format version; bump whenever ``encode_state`` changes its layout."""

    # -- settings and state ------------------------------------------------------

    @abc.abstractmethod
    def normalize_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults and validate; raise ValueError with a clear message."""

    @abc.abstractmethod
    def initial_state(self, settings: Mapping[str, Any], seed: int) -> S:
        """The state at tick 0, before any event."""

    @abc.abstractmethod
    def copy_state(self, state: S) -> S: ...

    @abc.abstractmethod
    def state_tick(self, state: S) -> int:
        """The tick whose end this state reflects."""

    @abc.abstractmethod
    def state_hash(self, state: S) -> bytes:
        """A stable digest of everything in the state, in a fixed order."""

    @abc.abstractmethod
    def encode_state(self, state: S) -> bytes:
        """Keyframe bytes (layout versioned by ``state_format``)."""

    @abc.abstractmethod
    def decode_state(self, data: bytes, format_version: int) -> S:
        """Raise ValueError for bytes it cannot read, including other format versions."""

    # -- the simulation ------------------------------------------------------------

    @abc.abstractmethod
    def decide(self, state: S, tick: int, command: Command) -> list[NewEvent] | Rejection:
        """Events for a discrete command taking effect at ``tick``, or why not. Pure."""

    @abc.abstractmethod
    def validate_input(self, state: S, player: str, raw: Sequence[Any]) -> Any | Rejection:
        """Check one raw per-tick input (the msgpack array a client sent, without
        its sequence number) and return the value ``tick`` takes, or a Rejection.
        Must never raise on any msgpack-decodable value."""

    @abc.abstractmethod
    def tick(self, state: S, tick: int, inputs: Mapping[str, Any]) -> list[NewEvent]:
        """Events of the simulation step to ``tick`` given each player's latest
        validated input. Pure: does not change ``state``. Must not read the
        state's clock (it may already read ``tick`` after commands were applied)."""

    @abc.abstractmethod
    def evolve(self, state: S, events: Sequence[StoredEvent | NewEvent], to_tick: int) -> S:
        """Apply events (in order, all with tick <= ``to_tick``) and move the
        state's clock to ``to_tick``. May change ``state`` in place; returns it."""

    # -- read helpers ---------------------------------------------------------------

    @abc.abstractmethod
    def is_over(self, state: S) -> bool:
        """Whether the match has ended (the rules emitted their match-ended event)."""

    @abc.abstractmethod
    def scoreboard(self, state: S) -> list[dict[str, Any]]:
        """Per-player standings at the state's tick, best first."""


_registry: dict[str, Rules[Any]] = {}


def register(rules: Rules[Any]) -> Rules[Any]:
    """Make a game available by name to the server, the engine and the store's upcasting."""
    _registry[rules.name] = rules
    return rules


def rules_for(game: str) -> Rules[Any]:
    """The registered rules of ``game``; importing ``replay.games`` registers the built-in ones."""
    import replay.games  # noqa: F401  (registers the built-in games; cached after the first call)

    try:
        return _registry[game]
    except KeyError:
        raise LookupError(f"unknown game {game!r}; known: {sorted(_registry)}") from None
