"""The HTTP API between nodes (protocol.md §6.1). Thin handlers: each bounds and parses
its input, authenticates, calls one function of `node.serving` (where `sync.serve`'s
rules are applied), and encodes the answer. Capacity limits are kept here, with
the connection gate and the slots in `web.limits`.

    GET  /fed/v1/info                       the club's id, name and genesis (public)
    GET  /fed/v1/frontier?known=HEX&wait=S  the requester's frontier (long-poll)
    POST /fed/v1/events                     a Want in; a stream of frames out
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from aiohttp import web

from federation.errors import RemoteProtocolError
from federation.node import serving
from federation.node.runtime import Runtime
from federation.sync import auth, messages
from federation.sync.messages import (
    CONTENT_TYPE,
    EVENTS_PATH,
    FRONTIER_PATH,
    INFO_PATH,
    MAX_MESSAGE_BYTES,
    Want,
)
from federation.web.limits import Gatekeeper, Pool, Slots, address_of

__all__ = ["CONTENT_TYPE", "EVENTS_PATH", "FRONTIER_PATH", "GATE", "INFO_PATH", "make_app"]

# A long-poll is held at most this long: under common proxy and NAT idle timeouts.
MAX_WAIT_S = 30.0
# Capacity for active peers is kept apart from everyone else's (anonymous readers, and
# clubs that are not active peers): a crowd of readers never makes a peer `busy`
# (DESIGN principle 18). Past its slots a request is refused (`busy`), never queued.
# Event streams served at once: to active peers, and to everyone else.
MAX_PEER_STREAMS = 8
MAX_ANONYMOUS_STREAMS = 4
# One client's share of them: one peer (by its club) or one address (`address_of`).
MAX_STREAMS_PER_CLIENT = 2
# Long-polls held at once. Each peer holds one (two while one on a dropped connection
# ends); a poll past them is refused `busy`, never answered "unchanged" at once, which
# a client would take as its cue to ask again at once: it would spin.
MAX_PEER_POLLS = 64
MAX_ANONYMOUS_POLLS = 32
MAX_POLLS_PER_CLIENT = 2
# The Retry-After of a `busy` refusal: long enough that a refused crowd does not return
# at once, short against a long-poll.
BUSY_RETRY_AFTER_S = 5
# The body of a request not signed by an active peer: an anonymous reader's want of
# some 1,000 public logs. Chosen from the token before the body is read, so a crowd of
# large anonymous bodies costs nothing (24 at once: 1.5 MiB, not 240).
MAX_ANONYMOUS_BODY_BYTES = 64 * 1024
# Reading a request body: a want of MAX_MESSAGE_BYTES at 10 Mbit/s.
BODY_READ_S = 10.0
# A stream is written in pieces of this size, and each must drain within
# WRITE_STALL_S: a client that stops reading loses its stream and its slot, while a
# peer on a slow link (100 kbit/s and more) keeps it.
STREAM_WRITE_BYTES = 256 * 1024
WRITE_STALL_S = 20.0

RUNTIME = web.AppKey("runtime", Runtime)
GATE = web.AppKey("gate", Gatekeeper)
STREAMS = web.AppKey("streams", Pool)
POLLS = web.AppKey("polls", Pool)


class Client(NamedTuple):
    """Whose capacity a request takes: an active peer's (by club) or an anonymous
    reader's (by address)."""

    peer: bool
    key: str


def _error(exc: RemoteProtocolError) -> web.Response:
    body = messages.encode(messages.Error(exc.code, exc.message))
    headers = {"Retry-After": str(BUSY_RETRY_AFTER_S)} if exc.code == "busy" else None
    return web.Response(
        status=exc.http_status, body=body, content_type=CONTENT_TYPE, headers=headers
    )


def _busy(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"too many {what} at once; retry in {BUSY_RETRY_AFTER_S} s", code="busy", http_status=503
    )


@web.middleware
async def _refusals(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A RemoteProtocolError raised before a response started becomes a named error."""
    try:
        return await handler(request)
    except RemoteProtocolError as exc:
        return _error(exc)


def _client(request: web.Request, requester: bytes | None) -> Client:
    """An active peer's request takes peer capacity, and its connection joins the
    peers' budget; anyone else's (a stranger's token included) is an anonymous
    reader's, counted by address."""
    if requester is not None and requester in request.app[RUNTIME].active_peers():
        request.app[GATE].promote(request.protocol)
        return Client(True, f"club {requester.hex()}")
    return Client(False, f"address {address_of((request.remote,))}")


def _drop(request: web.Request) -> None:
    """Close the connection at once: no answer can reach this client."""
    if request.transport is not None:
        request.transport.abort()


def _authenticate(request: web.Request, body: bytes) -> bytes | None:
    rt = request.app[RUNTIME]
    return auth.check(
        request.headers.get("Authorization"),
        recipient=rt.club,
        method=request.method,
        target=request.raw_path,
        body=body,
        now_us=rt.clock(),
        authorized=rt.authorized,
        replay=rt.replay,
    )


async def info(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    # Which club runs at this address is for its peers only: clubs are watched.
    if _authenticate(request, b"") not in rt.active_peers():
        raise RemoteProtocolError(
            "this node tells its name to its peers only", code="unauthenticated", http_status=401
        )
    return web.json_response(
        {"club": rt.club.hex(), "name": rt.name, "genesis": rt.genesis_raw[rt.club].hex()}
    )


async def frontier(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    requester = _authenticate(request, b"")
    client = _client(request, requester)
    try:
        known = bytes.fromhex(request.query.get("known", ""))
        after = bytes.fromhex(request.query.get("after", ""))  # a page (§6.1)
        wait_s = float(request.query.get("wait", "0"))
        if not math.isfinite(wait_s):  # nan would never time out: the poll would spin
            raise ValueError(wait_s)
        wait_s = min(max(wait_s, 0.0), MAX_WAIT_S)
    except ValueError:
        raise RemoteProtocolError("known must be hex and wait a number", code="malformed") from None
    if wait_s == 0 or after:  # answered at once: holds no slot
        answer = await serving.frontier(rt, requester, known, 0.0, after=after)
    else:
        polls = request.app[POLLS].of(client.peer)
        if not polls.take(client.key):
            raise _busy("long-polls")
        try:
            answer = await serving.frontier(rt, requester, known, wait_s)
        finally:
            polls.give_back(client.key)
    return web.Response(body=messages.encode(answer), content_type=CONTENT_TYPE)


async def events(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    # The body limit is chosen before the body is read (§6.1 step 1): only a token an
    # active peer signed, its body's digest aside, earns more than an anonymous want.
    # A stranger's token, whatever club it names, is read as no token (§5.2).
    token = auth.signed(
        request.headers.get("Authorization"),
        recipient=rt.club,
        method=request.method,
        target=request.raw_path,
        authorized=rt.authorized,
    )
    signer = None if token is None else token.sender
    limit = MAX_MESSAGE_BYTES if signer in rt.active_peers() else MAX_ANONYMOUS_BODY_BYTES
    if request.content_length is None or request.content_length > limit:
        raise _too_large(limit)
    try:
        async with asyncio.timeout(BODY_READ_S):
            body = await request.read()
    except TimeoutError:
        _drop(request)  # a client that sends this slowly is not waiting for an answer
        return web.Response(status=408)
    requester = auth.accept(token, body=body, now_us=rt.clock(), replay=rt.replay)
    client = _client(request, requester)
    if not client.peer and len(body) > MAX_ANONYMOUS_BODY_BYTES:
        raise _too_large(MAX_ANONYMOUS_BODY_BYTES)  # as the anonymous request it now is
    want = messages.decode(body)
    if not isinstance(want, Want):
        raise RemoteProtocolError("expected a want", code="unexpected")
    answer = serving.events(rt, requester, want)  # refuses a bad want before busy (§6.1)
    streams = request.app[STREAMS].of(client.peer)
    if not streams.take(client.key):
        await answer.aclose()
        raise _busy("syncs")
    try:
        async with contextlib.aclosing(answer):
            response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
            await response.prepare(request)
            try:
                async for message in answer:
                    await _write(request, response, messages.frame(message))
                await _write(request, response, b"", eof=True)
            except ConnectionResetError:
                pass  # the client went away mid-stream; a peer resumes from its heads next round
            return response
    finally:
        streams.give_back(client.key)


def _too_large(limit: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"a want needs a Content-Length of at most {limit} bytes",
        code="too_large",
        http_status=413,
    )


async def _write(
    request: web.Request, response: web.StreamResponse, data: bytes, *, eof: bool = False
) -> None:
    """Write `data` in pieces of STREAM_WRITE_BYTES, each drained within WRITE_STALL_S;
    a client that stops reading has its connection closed, which ends the stream and
    frees its slot (DESIGN principle 18)."""
    view = memoryview(data)
    try:
        for start in range(0, len(view), STREAM_WRITE_BYTES):
            async with asyncio.timeout(WRITE_STALL_S):
                await response.write(view[start : start + STREAM_WRITE_BYTES])
        if eof:
            async with asyncio.timeout(WRITE_STALL_S):
                await response.write_eof()
    except TimeoutError:
        _drop(request)
        raise ConnectionResetError("the client stopped reading its stream") from None


def make_app(rt: Runtime) -> web.Application:
    gate = Gatekeeper()
    # While a request is handled its connection is not idle (web.limits).
    app = web.Application(client_max_size=MAX_MESSAGE_BYTES, middlewares=[gate.counting, _refusals])
    app[RUNTIME] = rt
    app[GATE] = gate
    app[STREAMS] = Pool(
        Slots(MAX_PEER_STREAMS, MAX_STREAMS_PER_CLIENT),
        Slots(MAX_ANONYMOUS_STREAMS, MAX_STREAMS_PER_CLIENT),
    )
    app[POLLS] = Pool(
        Slots(MAX_PEER_POLLS, MAX_POLLS_PER_CLIENT),
        Slots(MAX_ANONYMOUS_POLLS, MAX_POLLS_PER_CLIENT),
    )
    app.router.add_get(INFO_PATH, info)
    app.router.add_get(FRONTIER_PATH, frontier)
    app.router.add_post(EVENTS_PATH, events)
    return app
