"""A hostile peer for tests: a club's identity behind an aiohttp server that speaks the
peer API (protocol.md §6.1) with whatever answers a test scripts.

    async with open_hostile(Club.make(b"mallory")) as peer:
        peer.frontier = frontier_answer([LogHead(log, 3, head)])
        peer.events = stream_answer(LogInfo(...), Batch(...), done=False)
        await peering.add(node, peer.invite())   # the honest node adds it like any club

Answers are raw bytes, so a test can send anything: forged events, broken frames,
messages out of place, a stream cut in the middle of a frame. The server never
checks who asks; it records every request so a test can see what the honest node
sent (and how often).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from federation.core.events import Head
from federation.core.invite import make_invite
from federation.sync import messages
from federation.sync.messages import Frontier, LogHead, Message, Want
from federation.sync.serve import frontier as frontier_of
from federation.web.peer_api import CONTENT_TYPE, EVENTS_PATH, FRONTIER_PATH, INFO_PATH
from tests.conftest import Club
from tests.harness import serve_app


@dataclass
class Answer:
    """One scripted HTTP answer. `chunks` are written one by one (the body, streamed);
    `cut` aborts the connection after them instead of ending the response cleanly."""

    status: int = 200
    chunks: list[bytes] = field(default_factory=list)
    cut: bool = False
    delay_s: float = 0.0  # a pause before each chunk: a peer that trickles
    headers: dict[str, str] = field(default_factory=dict)


def frontier_answer(heads: list[LogHead]) -> Answer:
    """An honest-looking frontier listing `heads` (sorted, with its digest)."""
    digest, listed = frontier_of((h.log, Head(h.seq, h.head)) for h in heads)
    return Answer(chunks=[messages.encode(Frontier(digest, listed))])


def message_answer(message: Message, status: int = 200) -> Answer:
    return Answer(status=status, chunks=[messages.encode(message)])


def stream_answer(*sent: Message | bytes, done: bool = True, cut: bool = False) -> Answer:
    """An event stream: each message framed (bytes are sent as they are), then Done."""
    chunks = [m if isinstance(m, bytes) else messages.frame(m) for m in sent]
    if done:
        chunks.append(messages.frame(messages.Done()))
    return Answer(chunks=chunks, cut=cut)


class HostilePeer:
    """A scripted peer server for one club. Set `frontier` and `events` before a round."""

    def __init__(self, club: Club, name: str) -> None:
        self.club = club
        self.name = name
        self.url = ""
        self.frontier = frontier_answer([])
        self.events = stream_answer()
        # Scripted answers for the next requests, in order, before `frontier`/`events`.
        self.frontiers: list[Answer] = []
        self.answers: list[Answer] = []
        self.requests: list[tuple[str, str]] = []  # (method, path and query)
        self.wants: list[Want] = []

    def invite(self) -> str:
        """The club's invite for plain http on loopback (no TLS fingerprint)."""
        return make_invite(self.club.key, self.club.genesis, self.name, self.url, b"")

    async def _info(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.raw_path))
        return web.json_response({"club": self.club.id.hex(), "name": self.name})

    async def _frontier(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.raw_path))
        return await _send(request, self.frontiers.pop(0) if self.frontiers else self.frontier)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.raw_path))
        want = messages.decode(await request.read())
        assert isinstance(want, Want), want
        self.wants.append(want)
        return await _send(request, self.answers.pop(0) if self.answers else self.events)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(INFO_PATH, self._info)
        app.router.add_get(FRONTIER_PATH, self._frontier)
        app.router.add_post(EVENTS_PATH, self._events)
        return app


async def _send(request: web.Request, answer: Answer) -> web.StreamResponse:
    headers = {"Content-Type": CONTENT_TYPE, **answer.headers}
    response = web.StreamResponse(status=answer.status, headers=headers)
    await response.prepare(request)
    for chunk in answer.chunks:
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        await response.write(chunk)
    if answer.cut:
        # Drop the connection inside the chunked body: the client sees the stream end
        # without its terminating chunk, as when a peer's process dies mid-answer.
        assert request.transport is not None
        request.transport.abort()
        return response
    await response.write_eof()
    return response


@contextlib.asynccontextmanager
async def open_hostile(club: Club, name: str = "Hostile club") -> AsyncIterator[HostilePeer]:
    """Serve a hostile peer on 127.0.0.1, on a free port, for the block's duration."""
    peer = HostilePeer(club, name)
    async with serve_app(peer.app()) as port:
        peer.url = f"http://127.0.0.1:{port}"
        yield peer
