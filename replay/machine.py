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

Inputs are samples of a player's controls: the newest valid input received
before a tick is the one the tick uses, and the tick acknowledges every input
received before it (cumulatively: applied, superseded or refused). Each client
seq is applied at most once: a seq at or below the highest one received from
that player is ignored, so a client may resend unacknowledged inputs after a
reconnect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from replay.events import NewEvent
from replay.rules import JOIN, LEAVE, START, Command, Rejection, Rules
from replay.system import InputRecorder

__all__ = ["MatchMachine", "MatchOver", "Tick"]


class MatchOver(RuntimeError):
    """:meth:`MatchMachine.step` after the rules ended the match."""


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
        self._scoreboard_triggers = rules.scoreboard_triggers()
        self._last_scoreboard: list[dict[str, Any]] | None = None

    # -- in -------------------------------------------------------------------------------

    def queue(self, command: Command, token: Any = None) -> None:
        """Decide ``command`` at the next tick; its outcome comes back in that tick's
        ``replies`` with ``token``."""
        self._commands.append((command, token))

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

    # -- out ------------------------------------------------------------------------------

    def step(self) -> Tick:
        """Run the next tick (see the module docstring for the order)."""
        if self.over:
            raise MatchOver("the match is over")
        rules, state = self.rules, self.state
        t = self.tick + 1
        events: list[NewEvent] = []
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
