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
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

from replay.errors import NotRewindableError
from replay.events import SYSTEM_FIRST, EventCatalog, NewEvent
from replay.system import CATALOG

if TYPE_CHECKING:
    from replay.leaderboards.definitions import BoardDefinition
    from replay.leaderboards.metrics import GameMetrics

__all__ = [
    "END",
    "JOIN",
    "LEAVE",
    "START",
    "Bots",
    "Command",
    "GameRegistry",
    "KillEvent",
    "MatchLimits",
    "MatchResult",
    "Rejection",
    "Rules",
    "SeatEvent",
    "StoredEvent",
    "UnknownGameError",
]

S = TypeVar("S")

StoredEvent = tuple[int, int, int, tuple[Any, ...]]
"""``(type, version, tick, data)``, as ``EventBatch.events`` holds them (already upcast)."""

# The lifecycle commands every game answers. The server issues them (a seat taken or
# given up, the match started when enough players are in, an admin's end); a game
# may refuse them with a Rejection like any command.
JOIN = "join"
"""``args``: what the joining client offered (``name``, game-specific keys)."""
LEAVE = "leave"
START = "start"
END = "end"
"""``args``: ``reason`` (an admin's). A game answers with its match-ended event."""


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


class MatchLimits(NamedTuple):
    """What the server needs to know of a match's (normalized) settings."""

    tick_rate: int
    min_players: int
    """Seated players needed before the server sends ``start``."""
    max_players: int
    """Seats."""


class MatchResult(NamedTuple):
    """How a match ended, as its own events say."""

    winner: str
    """Player id of the winner; "" for none (a draw, nobody left)."""
    reason: str
    """``time_limit``, ``score_limit``, an admin's reason, ..."""


class SeatEvent(NamedTuple):
    """The event that seats a player, by its fields' names: what lets generic code
    (timeline markers) name the player behind a seat number."""

    code: int
    seat: str
    """The field holding the seat (slot) number."""
    player: str
    """The field holding the player id."""


class KillEvent(NamedTuple):
    """The event that is a kill, by its fields' names: timeline kill markers,
    multi-kills and killcam clips (replay/timeline.py) read it."""

    code: int
    killer: str
    """The field holding the killer's seat; a negative or None value: no killer (the map)."""
    victim: str
    """The field holding the victim's seat."""


class Bots(Protocol):
    """Input producers for bot players of one match (the offline generator, the
    network bots). Bots are not rules: their randomness is their own and never
    replayed, since what they cause is stored as events."""

    def join_args(self, player: str) -> dict[str, Any]:
        """The ``join`` args of a bot (its display name, a team, ...)."""
        ...

    def inputs(self, state: Any, tick: int) -> dict[str, list[Any]]:
        """Raw inputs (as a client sends them) of the bots seated in ``state`` for ``tick``."""
        ...

    def commands(self, state: Any, tick: int) -> list[Command]:
        """Commands the bots send before ``tick`` (chat, ...); usually none."""
        ...


class Rules(abc.ABC, Generic[S]):
    """A game's rules. Implementations are stateless; all match data is in ``S``."""

    name: str
    """Game id stored with each match (``[a-z0-9_]``, 1..32 characters)."""
    version: str
    """Rules version stored with each match. Replays do not depend on it: they replay
    stored outcomes, so a match recorded under an older version replays under newer code."""
    catalog: EventCatalog
    """Every event type with its schema versions and upcasters."""
    state_format: int = 1
    """Keyframe format version; bump whenever ``encode_state`` changes its layout."""
    player_commands: frozenset[str] = frozenset()
    """Command kinds a seated player may send (``chat``, ...), besides the lifecycle ones."""
    admin_commands: frozenset[str] = frozenset()
    """Command kinds an admin may send to a running match besides ``start`` and ``end``."""
    scoreboard_columns: tuple[tuple[str, str], ...] = ()
    """``(row key, label)`` of the scoreboard's numbers, in display order (the viewer's
    columns). Every row also has ``player`` and ``name``; a row with ``slot`` is drawn
    in that slot's colour."""
    scoreboard_events: frozenset[int] | None = None
    """Event codes that may change ``scoreboard(state)``; None: the notable ones."""
    viewer_dir: Path | None = None
    """A folder with the game's viewer module (``viewer.js``, docs/viewer.md), served at
    ``/static/games/<name>/``; None: the viewer lists the game's matches but cannot draw them."""
    demo_settings: Mapping[str, Any] = {}
    """Settings of a bot match that shows the game off (``matchreplay demo``)."""
    seat_event: SeatEvent | None = None
    """How the game's events say who holds a seat; None: they do not (no player names
    on timeline markers)."""
    kill_event: KillEvent | None = None
    """The game's kill; None: a game without kills (its timeline has no kill or
    multi-kill markers and no killcam clips, its notable events still mark it)."""

    # -- settings and state ------------------------------------------------------

    @abc.abstractmethod
    def normalize_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults and validate; raise ValueError with a clear message."""

    @abc.abstractmethod
    def limits(self, settings: Mapping[str, Any]) -> MatchLimits:
        """Tick rate and seats of normalized ``settings``."""

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
        state's clock to ``to_tick``. May change ``state`` in place; returns it.
        Events of matchreplay's own types (``replay.events.SYSTEM_FIRST`` and up) are
        skipped: they never change a game state."""

    # -- read helpers ---------------------------------------------------------------

    @abc.abstractmethod
    def seat_of(self, state: S, player: str) -> int | None:
        """The seat (slot) ``player`` holds in ``state``; None when not in the match."""

    @abc.abstractmethod
    def started(self, state: S) -> bool:
        """Whether the match has started (its start event was applied)."""

    @abc.abstractmethod
    def is_over(self, state: S) -> bool:
        """Whether the match has ended (the rules emitted their match-ended event)."""

    @abc.abstractmethod
    def result(self, state: S) -> MatchResult | None:
        """How the match ended; None while it is not over."""

    @abc.abstractmethod
    def scoreboard(self, state: S) -> list[dict[str, Any]]:
        """Per-player standings at the state's tick, best first."""

    # -- optional parts ---------------------------------------------------------------

    def rebase(self, state: S, tick: int) -> S:
        """The same state re-clocked to ``tick``: every tick-valued field (the clock, a
        start tick, cooldown and respawn ticks, ...) shifted by ``tick - state_tick(state)``,
        so play continues from it at ``tick + 1`` exactly as it would have continued from
        the original one (same elapsed times). May change ``state`` in place; returns it.
        Must be invertible: ``rebase(rebase(s, b), state_tick(s))`` hashes like ``s``.

        What a rewind (and the fold of its ``rewound`` event, replay/fold.py) uses: the
        stream's ticks never go back, the restored state moves forward instead. A game
        that does not define it cannot be rewound (:meth:`rewindable`): NotRewindableError."""
        raise NotRewindableError(f"game {self.name!r} cannot be rewound (it has no rebase)")

    def rewindable(self) -> bool:
        """Whether the game defines :meth:`rebase`, so its matches can be rewound."""
        return type(self).rebase is not Rules.rebase

    def bots(self, settings: Mapping[str, Any], seed: int) -> Bots | None:
        """Bot players for a match with these settings; None: the game has none."""
        return None

    def bot_match_settings(self, players: int, seconds: float, tick_rate: int) -> dict[str, Any]:
        """Settings of a bot match of ``players`` that lasts ``seconds`` of play (the
        offline generator, ``matchreplay simulate``). Raises ValueError when the game
        cannot make one (no bots, a match that does not end on time)."""
        raise ValueError(f"game {self.name!r} has no timed bot matches")

    def leaderboard_metrics(self) -> GameMetrics | None:
        """What the global leaderboards can rank for this game (docs/leaderboards.md)."""
        return None

    def default_boards(self) -> tuple[BoardDefinition, ...]:
        """The leaderboards a server keeps for this game when it is given no config."""
        return ()

    @functools.cached_property
    def stream_catalog(self) -> EventCatalog:
        """What a match's stream holds: the game's events plus matchreplay's system
        events (replay/system.py), for upcasting and describing stored events."""
        return CATALOG.joined(self.catalog)

    def scoreboard_triggers(self) -> frozenset[int]:
        """:attr:`scoreboard_events`, or the catalog's notable event codes."""
        if self.scoreboard_events is not None:
            return self.scoreboard_events
        return frozenset(t.code for t in self.catalog if t.notable)


class UnknownGameError(LookupError):
    """A game name no registered rules answer to; ``code`` ``unknown_game``."""

    code = "unknown_game"


class GameRegistry(Mapping[str, "Rules[Any]"]):
    """The games one process knows, by name. The first one is the default game.

    Built by whoever runs matchreplay (``replay.games.builtin_games()`` plus any
    configured ones) and handed to the parts that need games by name: the server,
    the replay engine, the store (for upcasting), the leaderboards."""

    def __init__(self, games: Iterable[Rules[Any]]) -> None:
        self._games: dict[str, Rules[Any]] = {}
        for rules in games:
            if rules.name in self._games:
                raise ValueError(f"two games named {rules.name!r}")
            taken = [t.code for t in rules.catalog if t.code >= SYSTEM_FIRST]
            if taken:
                raise ValueError(
                    f"game {rules.name!r} uses event codes {taken}: codes from"
                    f" {SYSTEM_FIRST:#x} up are matchreplay's own"
                )
            self._games[rules.name] = rules
        if not self._games:
            raise ValueError("a registry needs at least one game")

    def __getitem__(self, name: str) -> Rules[Any]:
        try:
            return self._games[name]
        except KeyError:
            raise UnknownGameError(f"unknown game {name!r}; known: {sorted(self._games)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._games)

    def __len__(self) -> int:
        return len(self._games)

    @property
    def default(self) -> str:
        return next(iter(self._games))

    def catalogs(self) -> dict[str, EventCatalog]:
        """Each game's stream catalog (its own events plus matchreplay's system events,
        replay/system.py), for upcasting and describing stored events on read."""
        return {name: rules.stream_catalog for name, rules in self._games.items()}

    def leaderboard_metrics(self) -> dict[str, GameMetrics]:
        """The metrics of every game that has some, by game name."""
        out = {}
        for name, rules in self._games.items():
            metrics = rules.leaderboard_metrics()
            if metrics is not None:
                out[name] = metrics
        return out

    def default_boards(self) -> tuple[BoardDefinition, ...]:
        """Every game's default boards (docs/leaderboards.md)."""
        return tuple(b for rules in self._games.values() for b in rules.default_boards())
