"""The seam between a node's sync rounds and the network (the httpx idea).

A round (`node.follow`) talks to one peer through a PeerTransport and nothing else.
`web.client.PeerClient` is the real one: authenticated HTTP(S) with pinned TLS.
`MemoryTransport` is another, in this process: it calls the serving node's own
serving functions (`node.serving`, as its peer API does) with the requester's club
id, and passes every message through the wire encoding and framing, so the bytes
are exercised without sockets. Many-node protocol tests run on it.

Errors, whichever the transport: a peer that cannot be reached raises
PeerUnavailableError; one that answers wrongly, RemoteProtocolError. A refusal may
also arrive as an Error message, which the session turns into RemoteProtocolError.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from federation.errors import RemoteProtocolError
from federation.node import serving
from federation.node.runtime import Runtime
from federation.store.base import PeerRecord
from federation.sync import messages
from federation.sync.messages import Error, FrameReader, Message, Want


class PeerTransport(Protocol):
    """One peer, as a round sees it (protocol.md §6.1)."""

    @property
    def peer(self) -> PeerRecord: ...

    async def frontier(
        self, known: bytes | None, wait_s: float, after: bytes | None = None
    ) -> Message:
        """The answer to a frontier request (`after`: the page after this log id,
        §6.1): a Frontier, or an Error, or anything a hostile peer sends (the session
        judges it)."""
        ...

    def events(self, want: Want) -> AsyncGenerator[Message, None]:
        """The events answer to `want`, message by message, until the stream ends.
        A generator, so that a round that stops reading can close it at once."""
        ...


class MemoryTransport:
    """A PeerTransport to a node running in this process, as club `me` (None: an
    anonymous reader)."""

    def __init__(self, peer: PeerRecord, server: Runtime, *, me: bytes | None) -> None:
        self._peer = peer
        self.server = server
        self.me = me

    @property
    def peer(self) -> PeerRecord:
        return self._peer

    async def frontier(
        self, known: bytes | None, wait_s: float, after: bytes | None = None
    ) -> Message:
        try:
            answer: Message = await serving.frontier(
                self.server, self.me, known or b"", max(wait_s, 0.0), after=after or b""
            )
        except RemoteProtocolError as exc:
            answer = Error(exc.code, exc.message)
        return messages.decode(messages.encode(answer))

    async def events(self, want: Want) -> AsyncGenerator[Message, None]:
        request = messages.decode(messages.encode(want))
        assert isinstance(request, Want)
        reader = FrameReader()
        try:
            answer = serving.events(self.server, self.me, request)
        except RemoteProtocolError as exc:
            for message in reader.feed(messages.frame(Error(exc.code, exc.message))):
                yield message
            return
        try:
            async for message in answer:
                for received in reader.feed(messages.frame(message)):
                    yield received
        finally:
            await answer.aclose()
