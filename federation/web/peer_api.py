"""The HTTP API between nodes (protocol.md §6.1). Thin handlers: each bounds and parses
its input, authenticates, calls one function of `node.serving` (where `sync.serve`'s
rules are applied), and encodes the answer. Capacity limits are kept here.

    GET  /fed/v1/info                       the club's id, name and genesis (public)
    GET  /fed/v1/frontier?known=HEX&wait=S  the requester's frontier (long-poll)
    POST /fed/v1/events                     a Want in; a stream of frames out
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable

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

__all__ = ["CONTENT_TYPE", "EVENTS_PATH", "FRONTIER_PATH", "INFO_PATH", "make_app"]

# A long-poll is held at most this long: under common proxy and NAT idle timeouts.
MAX_WAIT_S = 30.0
# Event streams served at once; more are told to come back (busy) rather than queue.
MAX_STREAMS = 8
# Long-polls held at once (each peer keeps one; anyone may open more): past this a
# frontier is answered at once, so no one can pin the node's memory with waiting polls.
MAX_WAITING_POLLS = 64

RUNTIME = web.AppKey("runtime", Runtime)
STREAMS = web.AppKey("streams", asyncio.Semaphore)
POLLS = web.AppKey("polls", asyncio.Semaphore)


def _error(exc: RemoteProtocolError) -> web.Response:
    body = messages.encode(messages.Error(exc.code, exc.message))
    return web.Response(status=exc.http_status, body=body, content_type=CONTENT_TYPE)


@web.middleware
async def _refusals(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A RemoteProtocolError raised before a response started becomes a named error."""
    try:
        return await handler(request)
    except RemoteProtocolError as exc:
        return _error(exc)


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
    try:
        known = bytes.fromhex(request.query.get("known", ""))
        wait_s = float(request.query.get("wait", "0"))
        if not math.isfinite(wait_s):  # nan would never time out: the poll would spin
            raise ValueError(wait_s)
        wait_s = min(max(wait_s, 0.0), MAX_WAIT_S)
    except ValueError:
        raise RemoteProtocolError("known must be hex and wait a number", code="malformed") from None
    polls = request.app[POLLS]
    if polls.locked() or wait_s == 0:
        # No wait asked, or too many held already: answer at once, holding no slot.
        answer = await serving.frontier(rt, requester, known, 0.0)
    else:
        async with polls:
            answer = await serving.frontier(rt, requester, known, wait_s)
    return web.Response(body=messages.encode(answer), content_type=CONTENT_TYPE)


async def events(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    if request.content_length is None or request.content_length > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(
            f"a want needs a Content-Length of at most {MAX_MESSAGE_BYTES} bytes",
            code="too_large",
            http_status=413,
        )
    body = await request.read()
    requester = _authenticate(request, body)
    want = messages.decode(body)
    if not isinstance(want, Want):
        raise RemoteProtocolError("expected a want", code="unexpected")
    answer = serving.events(rt, requester, want)  # refuses a bad want before busy (§6.1)
    streams = request.app[STREAMS]
    if streams.locked():
        raise RemoteProtocolError(
            "too many syncs at once; retry soon", code="busy", http_status=503
        )
    async with streams, contextlib.aclosing(answer):
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        await response.prepare(request)
        try:
            async for message in answer:
                await response.write(messages.frame(message))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the peer went away mid-stream; it resumes from its heads next round
        return response


def make_app(rt: Runtime) -> web.Application:
    app = web.Application(client_max_size=MAX_MESSAGE_BYTES, middlewares=[_refusals])
    app[RUNTIME] = rt
    app[STREAMS] = asyncio.Semaphore(MAX_STREAMS)
    app[POLLS] = asyncio.Semaphore(MAX_WAITING_POLLS)
    app.router.add_get(INFO_PATH, info)
    app.router.add_get(FRONTIER_PATH, frontier)
    app.router.add_post(EVENTS_PATH, events)
    return app
