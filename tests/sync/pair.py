"""A session pair pumped in memory (h11's idea): a client Session and the serving
side's pure rules (`sync.serve`), joined by the wire encoding and framing, with no
event loop, socket or store. Events are stand-ins: `signed` names its log and seq,
and its id is its sha256; the client "stores" a batch by the overlap and chain
rules in their simplest form. Verification is ingest's, tested elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from federation.core.events import Head
from federation.errors import RemoteProtocolError
from federation.sync import messages, serve
from federation.sync.messages import Batch, Done, FrameReader, Frontier, Message, Want
from federation.sync.session import Session, State

GENESIS = b"genesis of club C"
CLUB = b"C" * 32


@dataclass(frozen=True)
class Event:
    """Stands in for the store's RawEvent."""

    seq: int
    signed: bytes
    payload: bytes | None


def chain(log: bytes, n: int, *, fork: bytes = b"", start: int = 1) -> list[Event]:
    """Events `start`..`n` of `log`; a `fork` tag makes other events at the same seqs."""
    return [
        Event(seq, b"signed " + log[:4] + seq.to_bytes(8, "big") + fork, b"p%d" % seq)
        for seq in range(start, n + 1)
    ]


@dataclass(frozen=True)
class ServedLogInfo:
    id: bytes
    club: bytes
    descriptor: bytes


def event_id(signed: bytes) -> bytes:
    return hashlib.sha256(signed).digest()


def wire(message: Message) -> Message:
    """Through the encoder and decoder, as a peer would see it."""
    return messages.decode(messages.encode(message))


@dataclass
class Server:
    """The serving side: logs as lists of events, seq = index + 1."""

    logs: dict[bytes, list[Event]] = field(default_factory=dict)
    wants: list[Want] = field(default_factory=list)
    pages: int = 0

    def heads(self) -> dict[bytes, Head]:
        return {log: Head(len(e), event_id(e[-1].signed)) for log, e in self.logs.items() if e}

    def frontier(self, known: bytes | None, after: bytes | None = None) -> Message:
        digest, heads = serve.frontier(self.heads().items())
        return wire(serve.answer(digest, heads, known or b"", after or b""))

    def answer(self, want: Want) -> serve.Answer:
        plan = serve.plan(want, self.heads())
        info = {log: ServedLogInfo(log, CLUB, b"descriptor " + log) for log in self.logs}
        return serve.stream(plan, info, {CLUB: GENESIS})

    def messages(self, want: Want) -> Iterator[Message]:
        """The events answer's messages, driving serve's plan with pages of our lists."""
        answer = self.answer(want)
        reply: serve.Page | None = None
        while True:
            try:
                item = answer.send(reply)
            except StopIteration:
                return
            if isinstance(item, serve.PageRequest):
                self.pages += 1
                reply = self.logs[item.log][item.after : item.after + item.limit]
            else:
                reply = None
                yield item

    def events(self, want: Message) -> Iterator[Message]:
        """The events answer, framed and read back as the client's transport would."""
        assert isinstance(want, Want)
        self.wants.append(want)
        reader = FrameReader()
        for message in self.messages(want):
            yield from reader.feed(messages.frame(message))
        assert reader.at_boundary()


@dataclass
class Client:
    """What the client holds: signed headers by log, and forked logs."""

    logs: dict[bytes, list[bytes]] = field(default_factory=dict)
    frozen: set[bytes] = field(default_factory=set)

    def heads(self) -> dict[bytes, Head | None]:
        return {log: Head(len(e), event_id(e[-1])) if e else None for log, e in self.logs.items()}

    def take(self, message: Message) -> None:
        if not isinstance(message, Batch):
            return
        held = self.logs.setdefault(message.log, [])
        for signed, _ in message.events:
            seq = int.from_bytes(signed[11:19], "big")
            if seq <= len(held):
                if held[seq - 1] != signed:
                    self.frozen.add(message.log)
                    raise RemoteProtocolError("fork", code="fork")
            elif seq == len(held) + 1:
                held.append(signed)
            else:
                raise RemoteProtocolError("gap", code="gap")


Events = Callable[[Message], Iterator[Message]]


def run_round(
    client: Client,
    server: Server,
    known: bytes | None = None,
    *,
    events: Events | None = None,
    frontier: Callable[[bytes | None], Message] | None = None,
    hidden: frozenset[bytes] = frozenset(),
) -> Session:
    """One round, as `node.follow.sync_round` runs it: the shell's I/O, nothing more."""
    session = Session(client.heads(), known, client.frozen, hidden=hidden)
    while session.state is not State.CLOSED:
        asked = session.frontier_known()
        want = session.on_frontier((frontier or server.frontier)(asked))
        while session.state is State.AWAIT_FRONTIER:  # the next page (§6.1)
            want = session.on_frontier(server.frontier(None, session.cursor))
        while want is not None:
            for message in (events or server.events)(wire(want)):
                client.take(session.on_message(message))
                if isinstance(message, Done):
                    break
            session.end_of_stream()
            want = session.next_want()
        session.stored(client.heads())
    return session


def frontier_of(server: Server) -> Frontier:
    answer = server.frontier(None)
    assert isinstance(answer, Frontier)
    return answer
