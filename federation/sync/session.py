"""The client side of one sync round, as a sans-IO state machine (protocol.md §6.2).

    START --frontier_known()--> AWAIT_FRONTIER --on_frontier()--> STREAMING --Done--> DONE
                                      |                                |
                                      +--(unchanged / nothing wanted)--+--> DONE

The shell sends what the session asks for and feeds it what arrives; the session
decides what to want and checks every message is legal in its state. Storing is
the shell's: after it verified and stored a batch it reports the new head with
`stored`. Any message out of place raises RemoteProtocolError.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from enum import Enum

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


def own_logs_behind(
    frontier: Iterable[LogHead], ours: Mapping[bytes, Head | None]
) -> dict[bytes, int]:
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


class Session:
    def __init__(
        self,
        local: Mapping[bytes, Head | None],
        known: bytes | None,
        frozen: Collection[bytes] = (),
    ) -> None:
        """`local`: the heads of the logs we hold; `known`: the digest of this peer's
        frontier after our last complete round with it (None: never, or not complete);
        `frozen`: our forked logs, which take nothing more (protocol.md §3.6)."""
        self.state = State.START
        self._local = local
        self._frozen = frozenset(frozen)
        self.known = known
        self.frontier: Frontier | None = None
        self.wanted: dict[bytes, WantLog] = {}
        self.target: dict[bytes, int] = {}  # log -> the seq the peer holds
        self.more = False

    def _expect(self, state: State) -> None:
        if self.state is not state:
            raise RemoteProtocolError(
                f"unexpected message in state {self.state.value}", code="unexpected"
            )

    def frontier_known(self) -> bytes | None:
        """Start the round; the digest to send as `known`."""
        if self.state is not State.START:
            raise LocalProtocolError("a session is used for one round only")
        self.state = State.AWAIT_FRONTIER
        return self.known

    def on_frontier(self, message: Message) -> Want | None:
        """The peer's frontier arrived. Returns what to ask for, or None when done."""
        if isinstance(message, Error):
            raise RemoteProtocolError(f"peer refused: {message.message}", code=message.code)
        if not isinstance(message, Frontier):
            raise RemoteProtocolError("expected a frontier", code="unexpected")
        self._expect(State.AWAIT_FRONTIER)
        self.frontier = message
        if message.logs is None:
            if self.known is None or message.digest != self.known:
                raise RemoteProtocolError("peer said unchanged for a frontier we never had")
            self.state = State.DONE
            return None
        if len(message.logs) > MAX_FRONTIER_LOGS:
            raise RemoteProtocolError("frontier lists too many logs", code="too_large")
        wants = []
        for entry in message.logs:
            if entry.log in self.target or entry.seq < 1 or len(entry.head) != 32:
                raise RemoteProtocolError("frontier lists a log twice or a bad head")
            self.target[entry.log] = entry.seq
            ours = self._local.get(entry.log)
            if entry.log in self._frozen:
                # Asking would fail every round, and with it every log after this one
                # in the stream: a fork freezes its log, not the sync (protocol.md §3.6).
                continue
            if ours is None:
                want = WantLog(entry.log, 0, 0, True)
            elif entry.seq > ours.seq:
                # Overlap by one: the peer's event at our head seq shows continuity,
                # or is the proof of a fork (protocol.md §6.3).
                want = WantLog(entry.log, ours.seq - 1, 0, False)
            elif entry.seq == ours.seq and entry.head != ours.id:
                want = WantLog(entry.log, ours.seq - 1, 1, False)  # fetch the fork's proof
            else:
                continue  # same head, or we are ahead: nothing to fetch
            wants.append(want)
            self.wanted[entry.log] = want
        if not wants:
            self.state = State.DONE
            return None
        self.state = State.STREAMING
        return Want(wants)

    def on_message(self, message: Message) -> Message:
        """A message of the event stream; returned when legal, for the shell to act on."""
        self._expect(State.STREAMING)
        if isinstance(message, Error):
            raise RemoteProtocolError(f"peer refused: {message.message}", code=message.code)
        if isinstance(message, Done):
            self.state = State.DONE
            self.more = message.more
            return message
        if isinstance(message, LogInfo):
            if message.id not in self.wanted:
                raise RemoteProtocolError("peer sent a log we did not ask for")
            return message
        if isinstance(message, ClubInfo):
            return message
        if isinstance(message, Batch):
            want = self.wanted.get(message.log)
            if want is None:
                raise RemoteProtocolError("peer sent events of a log we did not ask for")
            if not message.events:
                raise RemoteProtocolError("peer sent an empty batch")
            return message
        raise RemoteProtocolError(
            f"unexpected {type(message).__name__} in the event stream", code="unexpected"
        )

    @property
    def complete(self) -> bool:
        """Done, and the peer did not hold anything back."""
        return self.state is State.DONE and not self.more

    def behind(self, local: Mapping[bytes, Head | None]) -> int:
        """How many events the peer's frontier holds that `local` does not."""
        total = 0
        for log, seq in self.target.items():
            if log in self._frozen:
                continue  # we take no more of it: waiting for it would never end
            head = local.get(log)
            total += max(0, seq - (head.seq if head else 0))
        return total
