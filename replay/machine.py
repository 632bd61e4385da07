"""The match machine: one match's tick contract, without I/O.

Like websockets' sans-I/O ``Protocol`` for a connection, :class:`MatchMachine`
holds the whole state machine of a match and does no I/O: inputs and commands
go in, and each :meth:`MatchMachine.step` gives back one :class:`Tick` of
decisions: the events to store, the acknowledgements to send once they are
durable, the replies to the commands it decided, whether the match started or
ended, the standings when they changed and, on keyframe ticks, a copy of the
state. The server's match, the offline generator and the tests drive this same
machine, so the replay contract (``replay/rules.py``) is implemented once::

    machine = MatchMachine(rules, rules.initial_state(settings, seed), keyframe_every=150)
    machine.queue(Command(JOIN, "alice", {"name": "Alice"}), reply_to)
    machine.submit_inputs("alice", [(1, [1.0, 0.0, 0.5, False])])
    tick = machine.step()          # tick.events -> the store; then tick.acks -> the players

Order within a tick ``t``: the commands queued since the previous tick are
decided one by one (``decide``, then ``evolve`` at once, so later commands see
earlier ones), then each seated player's newest valid input goes to ``tick``
and its events are evolved; then the tick's ``inputs`` event records which seq
of each seat the tick applied (replay/system.py). The live state is only ever
changed by ``evolve``, so folding the stored events gives it back bit for bit.

A rewind (:meth:`MatchMachine.rewind`, docs/replay.md "Rewinds and forks") takes the
next tick B for itself: B stores the ``rewound`` event (the state of the earlier tick T,
exactly) and the input audit, and nothing else; the state at the end of B is the
state of T re-clocked to B (``rules.rebase``), and play goes on at B + 1. Inputs
received before B were sent for the abandoned ticks: B acknowledges them all and
applies none (the audit records them as unapplied), so a resent one is still a
duplicate and at-most-once holds. Commands queued before B are decided at B + 1.

Inputs are samples of a player's controls: the newest valid input received
before a tick is the one the tick uses, and the tick acknowledges every input
received before it (cumulatively: applied, superseded or refused). Each client
seq is applied at most once: a seq at or below the highest one received from
that player is ignored, so a client may resend unacknowledged inputs after a
reconnect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from replay.events import SYSTEM_REWOUND, NewEvent
from replay.rules import JOIN, LEAVE, START, Command, Rejection, Rules
from replay.system import InputRecorder

__all__ = ["MatchMachine", "MatchOver", "RewindError", "Tick"]


class MatchOver(RuntimeError):
    """:meth:`MatchMachine.step` after the rules ended the match."""


class RewindError(ValueError):
    """A rewind the machine refuses; ``code`` is stable and documented (docs/protocol.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class _Rewind:
    state: Any
    """The state of ``to_tick``, not to be mutated (its encoding goes into the event)."""
    to_tick: int
    actor: str
    reason: str
    at_ms: int
    token: Any


@dataclass(slots=True)
class Tick:
    """The decisions of one tick."""

    tick: int
    events: list[NewEvent]
    """What to store, in order: the commands' events, the simulation's, then ``inputs``."""
    acks: list[int]
    """Flat ``[seat, seq, ...]``: every input of that seat up to ``seq`` is done. Tell the
    players only once ``events`` are durable (acknowledged means durable)."""
    replies: list[tuple[Any, list[NewEvent] | Rejection]] = field(default_factory=list)
    """``(token, outcome)`` of each command decided this tick, in queue order."""
    keyframe: Any = None
    """A copy of the state after this tick when it is a keyframe tick or the last one."""
    started: bool = False
    """The match started at this tick."""
    over: bool = False
    """The rules ended the match at this tick (no further step)."""
    scoreboard: list[dict[str, Any]] | None = None
    """The standings after this tick, when this tick changed them."""
    accepted: int = 0
    """Inputs accepted since the previous tick (a metric)."""

    @property
    def quiet(self) -> bool:
        """Nothing for anyone: no event, ack, reply, keyframe, standing or end."""
        return not (
            self.events
            or self.acks
            or self.replies
            or self.keyframe is not None
            or self.over
            or self.scoreboard is not None
        )


class MatchMachine:
    """The state machine of one match (see the module docstring). Not thread-safe;
    every call is synchronous and never waits."""

    def __init__(
        self,
        rules: Rules[Any],
        state: Any,
        *,
        keyframe_every: int,
        auto_start: int | None = None,
        acked: dict[int, int] | None = None,
    ) -> None:
        """``state``: where the match is (the initial state, or one rebuilt from the
        store). ``auto_start``: queue ``start`` once that many players are seated
        (again after each join while the rules refuse it). ``acked``: each seat's
        acknowledged seq so far (a rebuilt match: folded from its ``inputs`` events)."""
        self.rules = rules
        self.state = state
        self.tick = rules.state_tick(state)
        self.keyframe_every = max(1, keyframe_every)
        self.auto_start = auto_start
        self.over = rules.is_over(state)
        self._commands: list[tuple[Command, Any]] = []
        self._pending: dict[str, tuple[int, Any]] = {}
        """player -> (seq, validated input) for the next tick."""
        self._highest: dict[str, int] = {}
        """player -> highest seq received (lower or equal seqs are duplicates)."""
        self._received: dict[str, int] = {}
        """Players who sent inputs since the previous tick -> the highest seq among them."""
        self._audit = InputRecorder(acked)
        """Each seat's acknowledged seq, recorded as ``inputs`` events (replay/system.py)."""
        self._seat_player: dict[int, str] = {}
        self._accepted = 0
        self._start_queued = False
        self._members: set[str] = set()
        """Players whose join the rules accepted (and who did not leave): auto-start counts
        those still seated."""
        self._rewind: _Rewind | None = None
        self._notes: list[NewEvent] = []
        self._scoreboard_triggers = rules.scoreboard_triggers()
        self._last_scoreboard: list[dict[str, Any]] | None = None

    def resume(
        self, acked: Mapping[int, int], stepping: Iterable[int], seats: Mapping[str, int]
    ) -> None:
        """Carry on a match rebuilt from the store (replay/resume.py: another node's, after
        a takeover): each seat's acknowledged seq and stepping seats, as its ``inputs``
        events left them, and who holds which seat. A seq up to ``acked`` that a player
        sends again is a duplicate: applied at most once across the takeover."""
        self._audit = InputRecorder(dict(acked))
        self._audit.stepping = set(stepping)
        for player, seat in seats.items():
            self._seat_player[seat] = player
            self._highest[player] = acked.get(seat, 0)
            self._members.add(player)

    # -- in -------------------------------------------------------------------------------

    def queue(self, command: Command, token: Any = None) -> None:
        """Decide ``command`` at the next tick; its outcome comes back in that tick's
        ``replies`` with ``token``."""
        self._commands.append((command, token))

    def note(self, event: NewEvent) -> None:
        """Store one of matchreplay's own events (``admin``, ``session``:
        replay/system.py) with the next tick, first; its ``tick`` is set to that tick.
        It never changes the state."""
        self._notes.append(event)

    def take_commands(self) -> list[tuple[Command, Any]]:
        """The queued commands, removed (the match is stopping: each still needs a reply)."""
        commands, self._commands = self._commands, []
        return commands

    def submit_inputs(
        self, player: str, inputs: Iterable[tuple[int, Sequence[Any]]]
    ) -> list[tuple[int, Rejection]]:
        """Validate and queue inputs (oldest first). Returns ``(seq, rejection)`` per refused
        input; duplicates (a seq already received) are skipped silently."""
        highest = self._highest.get(player, 0)
        start = highest
        rejected: list[tuple[int, Rejection]] = []
        validate, state = self.rules.validate_input, self.state
        for seq, raw in inputs:
            if seq <= highest:
                continue
            highest = seq
            value = validate(state, player, raw)
            if isinstance(value, Rejection):
                rejected.append((seq, value))
            else:
                self._pending[player] = (seq, value)
                self._accepted += 1
        if highest > start:
            # Refused inputs are done too: the next tick's ack covers them (cumulatively).
            self._highest[player] = highest
            self._received[player] = highest
        return rejected

    def highest_seq(self, player: str) -> int:
        """The highest seq received from ``player`` (0: none)."""
        return self._highest.get(player, 0)

    def forget_player(self, player: str) -> None:
        """``player`` gave up the seat for good: a later seat starts its seqs afresh."""
        self._highest.pop(player, None)
        self._pending.pop(player, None)
        self._received.pop(player, None)

    def rewind(
        self,
        state: Any,
        *,
        actor: str,
        reason: str,
        at_ms: int,
        token: Any = None,
    ) -> None:
        """Continue the match, from the next tick on, from ``state``: the exact state of an
        earlier tick T (``ReplayEngine.state_at(T)``). The next :meth:`step` is the rewind
        tick (module docstring); its ``replies`` carry ``(token, [rewound event])``.
        Raises RewindError: ``rewind_pending`` (one per tick), ``rewind_ahead`` (T is not
        a played tick), ``rewind_to_end`` (the state of T is over), ``rewind_unsupported``
        (the game has no ``rebase``)."""
        rules = self.rules
        if self.over:
            raise MatchOver("the match is over")
        if self._rewind is not None:
            raise RewindError("rewind_pending", "a rewind is already waiting for the next tick")
        to_tick = rules.state_tick(state)
        if not 0 <= to_tick <= self.tick:
            raise RewindError("rewind_ahead", f"tick {to_tick} is not a played tick")
        if rules.is_over(state):
            raise RewindError("rewind_to_end", f"the match is over at tick {to_tick}")
        if not rules.rewindable():
            raise RewindError("rewind_unsupported", f"game {rules.name!r} cannot be rewound")
        self._rewind = _Rewind(state, to_tick, actor, reason, at_ms, token)

    @property
    def rewind_pending(self) -> bool:
        return self._rewind is not None

    # -- out ------------------------------------------------------------------------------

    def step(self) -> Tick:
        """Run the next tick (see the module docstring for the order)."""
        if self.over:
            raise MatchOver("the match is over")
        if self._rewind is not None:
            return self._step_rewind(self._rewind)
        rules, state = self.rules, self.state
        t = self.tick + 1
        events: list[NewEvent] = self._take_notes(t)
        out = Tick(t, events, [])
        was_started = rules.started(state)
        commands, self._commands = self._commands, []
        for command, token in commands:
            result = rules.decide(state, t, command)
            if not isinstance(result, Rejection):
                state = rules.evolve(state, result, t)
                events.extend(result)
            if command.kind == START:
                self._start_queued = False
            elif command.kind == JOIN and not isinstance(result, Rejection):
                self._members.add(command.player)
            elif command.kind == LEAVE and not isinstance(result, Rejection):
                self._members.discard(command.player)
            out.replies.append((token, result))
        self.state = state
        if self.auto_start is not None and not was_started:
            self._maybe_start(commands)

        inputs: dict[str, Any] = {}
        applied: dict[int, tuple[int, int]] = {}
        seat_of = rules.seat_of
        for player, acked in self._received.items():
            pending = self._pending.pop(player, None)
            seat = seat_of(state, player)
            if seat is None:
                continue  # not (or no longer) seated: nothing applies, nothing to ack
            if pending is not None:
                inputs[player] = pending[1]
            if self._seat_player.get(seat) != player:
                self._seat_player[seat] = player
                self._audit.forget(seat)  # another player's seqs: not a continuation
            applied[seat] = (acked, pending[0] if pending is not None else 0)
            out.acks += (seat, acked)
        self._received.clear()
        out.accepted, self._accepted = self._accepted, 0

        ticked = rules.tick(state, t, inputs)
        self.state = state = rules.evolve(state, ticked, t)
        events.extend(ticked)
        audit = self._audit.record(t, applied)
        if audit is not None:
            events.append(audit)
        self.tick = t
        out.started = not was_started and rules.started(state)
        out.over = self.over = rules.is_over(state)
        out.scoreboard = self._scoreboard(events)
        if t % self.keyframe_every == 0 or out.over:
            out.keyframe = rules.copy_state(state)
        return out

    def _step_rewind(self, rewind: _Rewind) -> Tick:
        """The rewind tick B: the ``rewound`` event, every received input acknowledged and
        none applied, the restored state re-clocked to B, a keyframe and the standings."""
        self._rewind = None
        rules = self.rules
        t = self.tick + 1
        was_started = rules.started(self.state)
        event = NewEvent(
            SYSTEM_REWOUND,
            t,
            (
                self.tick,
                rewind.to_tick,
                rewind.actor,
                rewind.reason,
                rewind.at_ms,
                rules.state_format,
                rules.encode_state(rewind.state),
            ),
        )
        out = Tick(t, [*self._take_notes(t), event], [])
        out.replies.append((rewind.token, [event]))
        # Inputs of the abandoned timeline: acknowledged (by the seat their sender held
        # when sending), never applied.
        applied: dict[int, tuple[int, int]] = {}
        seat_of, old = rules.seat_of, self.state
        for player, acked in self._received.items():
            seat = seat_of(old, player)
            if seat is not None:
                applied[seat] = (acked, 0)
                out.acks += (seat, acked)
        self._received.clear()
        self._pending.clear()
        out.accepted, self._accepted = self._accepted, 0
        self.state = state = rules.rebase(rules.copy_state(rewind.state), t)
        audit = self._audit.record(t, applied)
        if audit is not None:
            out.events.append(audit)
        self.tick = t
        out.started = not was_started and rules.started(state)
        out.over = self.over = rules.is_over(state)
        self._last_scoreboard = out.scoreboard = rules.scoreboard(state)
        out.keyframe = rules.copy_state(state)
        return out

    def _take_notes(self, tick: int) -> list[NewEvent]:
        notes, self._notes = self._notes, []
        return [n._replace(tick=tick) for n in notes]

    def _maybe_start(self, commands: list[tuple[Command, Any]]) -> None:
        """Queue ``start`` for the next tick once enough players are seated; after a
        refusal (a join that the rules still count as too few), again at the next join."""
        if self._start_queued or not any(c.kind == JOIN for c, _ in commands):
            return
        seat_of, state = self.rules.seat_of, self.state
        seated = sum(1 for p in self._members if seat_of(state, p) is not None)
        if seated >= (self.auto_start or 0):
            self._start_queued = True
            self._commands.append((Command(START, "", {}), None))

    def _scoreboard(self, events: list[NewEvent]) -> list[dict[str, Any]] | None:
        """The standings when this tick's events may have changed them and they did."""
        triggers = self._scoreboard_triggers
        if not any(e.type in triggers for e in events):
            return None
        board = self.rules.scoreboard(self.state)
        if board == self._last_scoreboard:
            return None
        self._last_scoreboard = board
        return board
