"""The client side of one sync round, as a sans-IO state machine (protocol.md §6.2).

    START --frontier_known()--> AWAIT_FRONTIER --frontier--> STREAMING --done--> DONE
                                  |      ^                                      |  |
                                  +------+ a page with `more`: ask `after`=cursor  |
                                  +---(unchanged, or nothing to want)----------->+ |
    DONE --next_want()--> STREAMING    a further want of at most MAX_FRONTIER_LOGS  |
    DONE --stored(heads)--+--> START   the peer said `more` and a head moved: ask again
                          +--> CLOSED  the round is over; `complete` says if it caught up

The shell does the I/O: it asks for what the session asks for (a frontier page
after `cursor`, a want), feeds it what arrives (`on_frontier`, `on_message`), stores
the batches, says when each events answer ended (`end_of_stream`), asks for the
next want (`next_want`) and reports the heads it then holds (`stored`).
Every legal move is one row of TRANSITIONS, at the end of this module. Any other
(state, message) pair is the peer's fault (RemoteProtocolError); any other (state,
call) the caller's (LocalProtocolError). A refused input leaves the session as it
was. Any other exception is a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from operator import itemgetter
from typing import Any, NamedTuple

from federation.core import canonical
from federation.core.events import Head
from federation.errors import InvalidEventError, LocalProtocolError, RemoteProtocolError
from federation.sync.messages import (
    BATCH_MAX_BYTES,
    BATCH_MAX_EVENTS,
    MAX_EVENTS_PER_RESPONSE,
    MAX_FRONTIER_LOGS,
    MAX_FRONTIER_PAGES,
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
    """The restore guard's claims (protocol.md §3.6). `ours`: our own logs that this
    peer may hold, with our heads. Returns those the peer says it holds beyond our
    head, with the peer's seq. A claim is unsigned: it is only a warning, and the
    round asks the peer for those events anyway (§6.2); only a validly signed event
    of ours beyond our head holds a log back. A claim about any other log (our
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
    """The shell stored what arrived; `heads` is every log it now holds, `frozen` the
    logs it now takes nothing more of (forked, or refused for good over a quota)."""

    heads: Heads
    frozen: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class AskWant:
    """The shell asks for the round's next want, once an events answer is over."""


LOCAL_INPUTS = (AskFrontier, EndOfStream, AskWant, Stored)
Input = Message | AskFrontier | EndOfStream | AskWant | Stored

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
        hidden: Collection[bytes] = (),
        refetch: Mapping[bytes, int] | None = None,
        wait_s: float = 0,
    ) -> None:
        """`local`: the heads of the logs we hold; `known`: the digest of this peer's
        frontier after our last complete round with it (None: never, or not complete);
        `frozen`: our forked logs, which take nothing more (protocol.md §3.6);
        `hidden`: logs we hold that this peer may not receive from us (§5.4): the
        session acts exactly as if we did not hold them, so nothing we send (a want,
        a `known`) depends on them (DESIGN principle 17); `wait_s`: how long the peer
        may hold the first frontier request (§6.5)."""
        self.state = State.START
        self._hidden = frozenset(hidden)
        # `refetch`: logs holding an event whose payload is missing here, with the
        # lowest such seq: asked for again where the peer holds it (§6.3).
        self._refetch = dict(refetch or {})
        self._viewed: tuple[Heads | None, Heads] = (None, {})
        self.local = self._view(local)
        # A frozen log is skipped, hidden or not: the peer learns only that we take no
        # more of a log it listed, never our head of it.
        self._frozen = frozenset(frozen)
        # Logs frozen or refused for good since the round began (`stored`): a `more`
        # pass does not ask for them again, but they still count as not held.
        self._stopped: frozenset[bytes] = frozenset()
        self.known = known
        self.wait_s = wait_s
        self.frontier: Frontier | None = None
        self.digest: bytes | None = None  # the first page's: what `known` may keep
        self.cursor: bytes | None = None  # ask the next frontier page after this log
        self.pages = 0
        self.listed = 0  # logs the frontier listed, over all its pages
        self.want: Want | None = None
        self.wanted: dict[bytes, WantLog] = {}  # the current want's entries
        self._wants: list[Want] = []  # the round's further wants
        self.target: dict[bytes, int] = {}  # log -> the seq the peer holds, where ahead
        self._received: dict[bytes, int] = {}  # hidden log -> the last seq it sent us
        self._sent: dict[bytes, int] = {}  # this answer: log -> the last seq it sent
        self._described: set[bytes] = set()  # this answer: logs whose descriptor came
        self._clubs = 0  # this answer: club messages
        self._events = 0  # this answer: events
        self.more = False
        self._caught_up = False

    def _view(self, heads: Heads) -> Heads:
        """Our heads as this peer may know of them: hidden logs left out (§5.4). The
        same heads as last time (nothing was stored) give the same view, not a copy."""
        if not self._hidden:
            return heads
        if heads is not self._viewed[0]:
            view = {log: head for log, head in heads.items() if log not in self._hidden}
            self._viewed = (heads, view)
        return self._viewed[1]

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

    def next_want(self) -> Want | None:
        """After an events answer: the round's next want (the wants of a large frontier
        go in several requests of at most MAX_FRONTIER_LOGS logs), or None."""
        self._step(AskWant())
        return self.want

    def stored(self, heads: Heads, frozen: Collection[bytes] = ()) -> None:
        """After the frontier, and after a stream once stored: the heads we now hold,
        and the logs we now take nothing more of (a `more` answer's next pass does not
        ask for them again, §6.4)."""
        self._step(Stored(heads, frozenset(frozen)))

    @property
    def complete(self) -> bool:
        """The round is over, the peer held nothing back, and we now hold every head
        its last frontier showed (§6.2), frozen logs excepted."""
        return self.state is State.CLOSED and self._caught_up

    def behind(self, local: Heads) -> int:
        """How many events the peer's frontier holds that `local` does not. A hidden
        log counts as one we did not hold: as far as the peer's events reached."""
        total = 0
        for log, seq in self.target.items():
            if log in self._frozen:
                continue  # we take no more of it: waiting for it would never end
            if log in self._hidden:
                total += max(0, seq - self._received.get(log, 0))
                continue
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
        """Compare one page of the peer's frontier with our heads, and build the want
        (§6.2); the last page sends it, in requests of at most MAX_FRONTIER_LOGS logs."""
        first = self.pages == 0
        if message.logs is None:
            if not first or self.known is None or message.digest != self.known:
                raise RemoteProtocolError("peer said unchanged for a frontier we never had")
            if message.more:
                raise RemoteProtocolError("peer said unchanged and that more follows")
            self.frontier, self.digest = message, message.digest
            return State.DONE
        if len(message.logs) > MAX_FRONTIER_LOGS:
            raise RemoteProtocolError("frontier lists too many logs", code="too_large")
        if message.more and self.pages + 1 >= MAX_FRONTIER_PAGES:
            raise RemoteProtocolError(
                f"frontier runs over {MAX_FRONTIER_PAGES} pages", code="too_large"
            )
        if message.more and not message.logs:
            raise RemoteProtocolError("frontier page lists nothing and says more follows")
        previous = self.cursor or b""
        for entry in message.logs:
            # Sorted by log id, after the page's cursor (§6.1): no log twice, across pages.
            if entry.log <= previous or entry.seq < 1 or len(entry.head) != 32:
                raise RemoteProtocolError("frontier lists a log twice, out of order, or a bad head")
            previous = entry.log
        for entry in message.logs:
            ours = self.local.get(entry.log)  # a hidden log is not in `local`: unknown
            if entry.log in self._frozen:
                # Asking would fail every round, and with it every log after this one
                # in the stream: a fork freezes its log, not the sync (protocol.md §3.6).
                continue
            if entry.log in self._stopped:
                self.target[entry.log] = entry.seq  # behind on it, and taking no more
                continue
            if ours is None:
                self.target[entry.log] = entry.seq
                self.wanted[entry.log] = WantLog(entry.log, 0, 0, True)
            elif entry.seq > ours.seq:
                self.target[entry.log] = entry.seq
                # Overlap by one: the peer's event at our head seq shows continuity,
                # or is the proof of a fork (protocol.md §6.3).
                self.wanted[entry.log] = WantLog(entry.log, ours.seq - 1, 0, False)
            elif entry.seq == ours.seq and entry.head != ours.id:
                self.wanted[entry.log] = WantLog(entry.log, ours.seq - 1, 1, False)  # the proof
            # else: the same head, or we are ahead: nothing to fetch
            missing = self._refetch.get(entry.log)
            if ours is not None and missing is not None and missing <= min(ours.seq, entry.seq):
                # A payload missing here, which the peer may hold: ask for its event
                # again, with whatever else of the log we want (protocol.md §6.3).
                more = self.wanted.get(entry.log)
                after = missing - 1 if more is None else min(more.after, missing - 1)
                self.wanted[entry.log] = WantLog(entry.log, after, 1 if more is None else 0)
        self.listed += len(message.logs)
        self.pages += 1
        if first:
            # Later pages may come from a newer view: keeping the first page's digest
            # is safe (a stale `known` only costs a full frontier), a later one is not.
            self.digest = message.digest
        self.frontier = message
        if message.more:
            self.cursor = message.logs[-1].log
            return State.AWAIT_FRONTIER
        entries = list(self.wanted.values())
        self._wants = [
            Want(entries[i : i + MAX_FRONTIER_LOGS])
            for i in range(0, len(entries), MAX_FRONTIER_LOGS)
        ]
        return self._next_answer()

    def _next_answer(self) -> State:
        """Send the round's next want, if any; a new events answer starts."""
        if not self._wants:
            self.want, self.wanted = None, {}
            return State.DONE
        self.want = self._wants.pop(0)
        self.wanted = {entry.log: entry for entry in self.want.logs}
        self._sent, self._described, self._clubs, self._events = {}, set(), 0, 0
        return State.STREAMING

    def _ask_want(self, _: AskWant) -> State:
        return self._next_answer()

    def _refused(self, message: Error) -> State:
        raise RemoteProtocolError(f"peer refused: {message.message}", code=message.code)

    def _club(self, _: ClubInfo) -> State:
        # At most one a log asked for (§6.3): no peer can make us check genesis after
        # genesis. Checked and kept aside by the shell's ingest.
        if self._clubs >= len(self.wanted):
            raise RemoteProtocolError("peer sent more clubs than the logs asked for")
        self._clubs += 1
        return State.STREAMING

    def _log(self, message: LogInfo) -> State:
        # A log asked for, once an answer (§6.3): frames are bounded by the want.
        if message.id not in self.wanted or message.id in self._described:
            raise RemoteProtocolError("peer sent a log we did not ask for, or twice")
        self._described.add(message.id)
        return State.STREAMING

    def _batch(self, message: Batch) -> State:
        """The client enforces §6.4 itself: an answer that breaks a limit, or a batch
        that does not advance, is refused before a byte of it is verified or stored,
        so no peer can hold a round or burn our CPU by repeating events we hold."""
        entry = self.wanted.get(message.log)
        if entry is None:
            raise RemoteProtocolError("peer sent events of a log we did not ask for")
        events = message.events
        if not events:
            raise RemoteProtocolError("peer sent an empty batch")
        if len(events) > BATCH_MAX_EVENTS:
            raise RemoteProtocolError(
                f"batch of {len(events)} events is over the limit of {BATCH_MAX_EVENTS}",
                code="too_large",
            )
        # A batch may pass the limit by one event. Summed by map and len: no Python
        # frame per event (this runs on every batch of a bulk sync).
        body = events[:-1]
        size = sum(map(len, map(_signed, body))) + sum(map(len, filter(None, map(_payload, body))))
        if size >= BATCH_MAX_BYTES:
            raise RemoteProtocolError(
                f"batch goes on past {BATCH_MAX_BYTES} bytes", code="too_large"
            )
        # A server stops at MAX_EVENTS_PER_RESPONSE; servers before that rule was kept let
        # the last batch cross it, so one batch more is tolerated, never another.
        if self._events + len(events) > MAX_EVENTS_PER_RESPONSE + BATCH_MAX_EVENTS:
            raise RemoteProtocolError(
                f"events answer goes on past {MAX_EVENTS_PER_RESPONSE} events (and a batch)",
                code="too_large",
            )
        seqs = _seqs(events)
        if seqs is not None:
            # A batch must advance (§6.2): it starts after the want's `after` and after
            # every seq this answer sent of the log, and spans at least as many seqs as
            # it has events. So an answer sends a log no more events than the seqs it
            # advanced over: in an answer we can take, at most the one event of the
            # overlap is one we hold. A gap inside is ingest's to refuse at its place,
            # keeping the valid prefix (§6.3).
            first, last = seqs
            if first <= self._sent.get(message.log, entry.after) or last - first < len(events) - 1:
                raise RemoteProtocolError(
                    f"batch of log {message.log.hex()[:16]} repeats or goes back over "
                    "seqs already sent, or not asked for"
                )
            if entry.limit and last > entry.after + entry.limit:
                raise RemoteProtocolError("batch goes past the limit asked for")
            self._sent[message.log] = last
            if message.log in self._hidden:
                self._received[message.log] = max(last, self._received.get(message.log, 0))
        # else: a header that does not decode: ingest refuses it, with its place (§6.3)
        self._events += len(events)
        return State.STREAMING

    def _done(self, message: Done) -> State:
        self.more = self.more or message.more
        return State.DONE

    def _truncated(self, _: EndOfStream) -> State:
        raise RemoteProtocolError("event stream ended without done", code="truncated")

    def _ended(self, _: EndOfStream) -> State:
        return State.DONE  # the stream ended after done, as it should

    def _stored(self, stored: Stored) -> State:
        """§6.2 step 4, and when the round is complete."""
        if self._wants:
            raise LocalProtocolError("stored before the round's last want was answered")
        heads = self._view(stored.heads)
        stopped = stored.frozen - self._frozen - self._stopped
        self._stopped |= stopped
        if self.more:
            if heads == self.local and not stopped:
                # An honest peer says `more` only after a full answer; one that says it
                # and moves no head would hold the round forever (DESIGN principle 13).
                # An answer all of whose events we refused (a blocked club, one at its
                # quota) stopped those logs instead: each can stop only once.
                raise RemoteProtocolError(
                    "peer said it holds more but sent nothing new", code="no_progress"
                )
            # Ask again at once, in the same round: no `known`, no wait.
            self.local, self.known, self.wait_s = heads, None, 0
            self.frontier, self.want, self.wanted, self.target = None, None, {}, {}
            self.cursor, self.pages, self.listed = None, 0, 0
            self.more = False
            return State.START
        self.local = heads
        self._caught_up = self.behind(heads) == 0
        return State.CLOSED


_signed, _payload = itemgetter(0), itemgetter(1)


def _seqs(events: list[tuple[bytes, bytes | None]]) -> tuple[int, int] | None:
    """The seqs of a batch's first and last events, or None if either header does not
    decode (two header reads a batch: cheap beside verifying it)."""
    try:
        return (
            canonical.decode_header(events[0][0]).seq,
            canonical.decode_header(events[-1][0]).seq,
        )
    except InvalidEventError:
        return None


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
    (S.AWAIT_FRONTIER, Frontier): _move(Session._frontier, S.AWAIT_FRONTIER, S.STREAMING, S.DONE),
    (S.AWAIT_FRONTIER, Error): _move(Session._refused),
    (S.STREAMING, ClubInfo): _move(Session._club, S.STREAMING),
    (S.STREAMING, LogInfo): _move(Session._log, S.STREAMING),
    (S.STREAMING, Batch): _move(Session._batch, S.STREAMING),
    (S.STREAMING, Done): _move(Session._done, S.DONE),
    (S.STREAMING, Error): _move(Session._refused),
    (S.STREAMING, EndOfStream): _move(Session._truncated),
    (S.DONE, EndOfStream): _move(Session._ended, S.DONE),
    (S.DONE, AskWant): _move(Session._ask_want, S.STREAMING, S.DONE),
    (S.DONE, Stored): _move(Session._stored, S.START, S.CLOSED),
}
