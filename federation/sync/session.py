"""The client side of one sync round, as a sans-IO state machine (protocol.md §6.2).

    START --frontier_known()--> AWAIT_FRONTIER --frontier--> STREAMING --done--> DONE
                                      |                                         |
                                      +---(unchanged, or nothing to want)------>+
    DONE --stored(heads)--+--> START   the peer said `more` and a head moved: ask again
                          +--> CLOSED  the round is over; `complete` says if it caught up

The shell does the I/O: it asks for what the session asks for, feeds it what
arrives (`on_frontier`, `on_message`), stores the batches, says when the events
answer ended (`end_of_stream`) and reports the heads it then holds (`stored`).
Every legal move is one row of TRANSITIONS, at the end of this module. Any other
(state, message) pair is the peer's fault (RemoteProtocolError); any other (state,
call) the caller's (LocalProtocolError). A refused input leaves the session as it
was. Any other exception is a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

from federation.core.events import Head
from federation.errors import LocalProtocolError, RemoteProtocolError
from federation.sync.messages import (
    MAX_FRONTIER_LOGS,
    Batch,
    ClubInfo,
    Done,
    Error,
    Frontier,
    LogHead,
    LogInfo,
    Message,
    Want,
    WantLog,
)

Heads = Mapping[bytes, Head | None]


def own_logs_behind(frontier: Iterable[LogHead], ours: Heads) -> dict[bytes, int]:
    """The restore guard's rule (protocol.md §3.6). `ours`: our own logs that this
    peer may hold, with our heads. Returns those the peer holds beyond our head, with
    the peer's seq: this node was restored from an old backup or lost writes, and
    must not write to them until it has caught up. A claim about any other log (our
    private ones, say) is ignored: the peer cannot hold it, so it is a lie."""
    behind = {}
    for entry in frontier:
        if entry.log in ours:
            head = ours[entry.log]
            if entry.seq > (head.seq if head else 0):
                behind[entry.log] = entry.seq
    return behind


class State(Enum):
    START = "start"
    AWAIT_FRONTIER = "await_frontier"
    STREAMING = "streaming"
    DONE = "done"
    CLOSED = "closed"


# The shell's inputs, beside the peer's messages.
@dataclass(frozen=True, slots=True)
class AskFrontier:
    """The shell asks the peer for its frontier (§6.2 step 1)."""


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The events answer ended at a frame boundary (one ending inside a frame is the
    transport's `truncated`)."""


@dataclass(frozen=True, slots=True)
class Stored:
    """The shell stored what arrived; `heads` is every log it now holds."""

    heads: Heads


LOCAL_INPUTS = (AskFrontier, EndOfStream, Stored)
Input = Message | AskFrontier | EndOfStream | Stored

_WHERE = {
    State.AWAIT_FRONTIER: "where a frontier was expected",
    State.STREAMING: "in the event stream",
    State.DONE: "after done",
}


class Session:
    def __init__(
        self,
        local: Heads,
        known: bytes | None,
        frozen: Collection[bytes] = (),
        *,
        wait_s: float = 0,
    ) -> None:
        """`local`: the heads of the logs we hold; `known`: the digest of this peer's
        frontier after our last complete round with it (None: never, or not complete);
        `frozen`: our forked logs, which take nothing more (protocol.md §3.6); `wait_s`:
        how long the peer may hold the first frontier request (§6.5)."""
        self.state = State.START
        self.local = local
        self._frozen = frozenset(frozen)
        self.known = known
        self.wait_s = wait_s
        self.frontier: Frontier | None = None
        self.want: Want | None = None
        self.wanted: dict[bytes, WantLog] = {}
        self.target: dict[bytes, int] = {}  # log -> the seq the peer holds
        self.more = False
        self._caught_up = False

    # --- the shell's calls: each one input to the table ---------------------------------

    def frontier_known(self) -> bytes | None:
        """Start asking; the digest to send as `known` (with `wait_s`)."""
        self._step(AskFrontier())
        return self.known

    def on_frontier(self, message: Message) -> Want | None:
        """The answer to the frontier request. Returns what to ask for, or None."""
        if self.state is not State.AWAIT_FRONTIER:
            raise LocalProtocolError(f"no frontier was asked for (state {self.state.value})")
        self._step(message)
        return self.want

    def on_message(self, message: Message) -> Message:
        """A message of the event stream; returned when legal, for the shell to act on."""
        self._step(message)
        return message

    def end_of_stream(self) -> None:
        self._step(EndOfStream())

    def stored(self, heads: Heads) -> None:
        """After the frontier, and after a stream once stored: the heads we now hold."""
        self._step(Stored(heads))

    @property
    def complete(self) -> bool:
        """The round is over, the peer held nothing back, and we now hold every head
        its last frontier showed (§6.2), frozen logs excepted."""
        return self.state is State.CLOSED and self._caught_up

    def behind(self, local: Heads) -> int:
        """How many events the peer's frontier holds that `local` does not."""
        total = 0
        for log, seq in self.target.items():
            if log in self._frozen:
                continue  # we take no more of it: waiting for it would never end
            head = local.get(log)
            total += max(0, seq - (head.seq if head else 0))
        return total

    def _step(self, event: Input) -> None:
        move = TRANSITIONS.get((self.state, type(event)))
        if move is None:
            name = type(event).__name__
            if isinstance(event, LOCAL_INPUTS):
                raise LocalProtocolError(f"{name} is not legal in state {self.state.value}")
            where = _WHERE.get(self.state, "outside a round")
            raise RemoteProtocolError(f"peer sent {name} {where}", code="unexpected")
        after = move.handler(self, event)
        assert after in move.to, (self.state, type(event), after)
        self.state = after

    # --- the handlers: checks first, then changes (a refusal leaves the session) --------

    def _ask(self, _: AskFrontier) -> State:
        return State.AWAIT_FRONTIER

    def _frontier(self, message: Frontier) -> State:
        """Compare the peer's frontier with our heads, and build the want (§6.2)."""
        if message.logs is None:
            if self.known is None or message.digest != self.known:
                raise RemoteProtocolError("peer said unchanged for a frontier we never had")
            self.frontier = message
            return State.DONE
        if len(message.logs) > MAX_FRONTIER_LOGS:
            raise RemoteProtocolError("frontier lists too many logs", code="too_large")
        target: dict[bytes, int] = {}
        wanted: dict[bytes, WantLog] = {}
        for entry in message.logs:
            if entry.log in target or entry.seq < 1 or len(entry.head) != 32:
                raise RemoteProtocolError("frontier lists a log twice or a bad head")
            target[entry.log] = entry.seq
            ours = self.local.get(entry.log)
            if entry.log in self._frozen:
                # Asking would fail every round, and with it every log after this one
                # in the stream: a fork freezes its log, not the sync (protocol.md §3.6).
                continue
            if ours is None:
                wanted[entry.log] = WantLog(entry.log, 0, 0, True)
            elif entry.seq > ours.seq:
                # Overlap by one: the peer's event at our head seq shows continuity,
                # or is the proof of a fork (protocol.md §6.3).
                wanted[entry.log] = WantLog(entry.log, ours.seq - 1, 0, False)
            elif entry.seq == ours.seq and entry.head != ours.id:
                wanted[entry.log] = WantLog(entry.log, ours.seq - 1, 1, False)  # the proof
            # else: the same head, or we are ahead: nothing to fetch
        self.frontier, self.target, self.wanted = message, target, wanted
        self.want = Want(list(wanted.values())) if wanted else None
        return State.STREAMING if wanted else State.DONE

    def _refused(self, message: Error) -> State:
        raise RemoteProtocolError(f"peer refused: {message.message}", code=message.code)

    def _club(self, _: ClubInfo) -> State:
        return State.STREAMING  # checked and kept aside by the shell's ingest (§6.3)

    def _log(self, message: LogInfo) -> State:
        if message.id not in self.wanted:
            raise RemoteProtocolError("peer sent a log we did not ask for")
        return State.STREAMING

    def _batch(self, message: Batch) -> State:
        if message.log not in self.wanted:
            raise RemoteProtocolError("peer sent events of a log we did not ask for")
        if not message.events:
            raise RemoteProtocolError("peer sent an empty batch")
        return State.STREAMING

    def _done(self, message: Done) -> State:
        self.more = message.more
        return State.DONE

    def _truncated(self, _: EndOfStream) -> State:
        raise RemoteProtocolError("event stream ended without done", code="truncated")

    def _ended(self, _: EndOfStream) -> State:
        return State.DONE  # the stream ended after done, as it should

    def _stored(self, stored: Stored) -> State:
        """§6.2 step 4, and when the round is complete."""
        if self.more:
            if stored.heads == self.local:
                # An honest peer says `more` only after a full answer; one that says it
                # and moves no head would hold the round forever (DESIGN principle 13).
                raise RemoteProtocolError(
                    "peer said it holds more but sent nothing new", code="no_progress"
                )
            # Ask again at once, in the same round: no `known`, no wait.
            self.local, self.known, self.wait_s = stored.heads, None, 0
            self.frontier, self.want, self.wanted, self.target = None, None, {}, {}
            self.more = False
            return State.START
        self.local = stored.heads
        self._caught_up = self.behind(stored.heads) == 0
        return State.CLOSED


class Move(NamedTuple):
    handler: Callable[[Session, Any], State]
    to: frozenset[State]


def _move(handler: Callable[[Session, Any], State], *to: State) -> Move:
    return Move(handler, frozenset(to))


S = State
# protocol.md §6.2, the client's state machine: (state, input) -> handler, next states.
# A handler may refuse (a condition of the table fails), naming the code to report.
TRANSITIONS: dict[tuple[State, type], Move] = {
    (S.START, AskFrontier): _move(Session._ask, S.AWAIT_FRONTIER),
    (S.AWAIT_FRONTIER, Frontier): _move(Session._frontier, S.STREAMING, S.DONE),
    (S.AWAIT_FRONTIER, Error): _move(Session._refused),
    (S.STREAMING, ClubInfo): _move(Session._club, S.STREAMING),
    (S.STREAMING, LogInfo): _move(Session._log, S.STREAMING),
    (S.STREAMING, Batch): _move(Session._batch, S.STREAMING),
    (S.STREAMING, Done): _move(Session._done, S.DONE),
    (S.STREAMING, Error): _move(Session._refused),
    (S.STREAMING, EndOfStream): _move(Session._truncated),
    (S.DONE, EndOfStream): _move(Session._ended, S.DONE),
    (S.DONE, Stored): _move(Session._stored, S.START, S.CLOSED),
}
