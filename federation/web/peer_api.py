"""The HTTP API between nodes (protocol.md §6.1). Thin handlers: each bounds and parses
its input, authenticates, asks `sync.serve` what to do, and encodes the answer.

    GET  /fed/v1/info                       the club's id, name and genesis (public)
    GET  /fed/v1/frontier?known=HEX&wait=S  the requester's frontier (long-poll)
    POST /fed/v1/events                     a Want in; a stream of frames out
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from federation.errors import RemoteProtocolError
from federation.node.runtime import Runtime
from federation.store.base import LogRecord
from federation.sync import auth, messages, serve
from federation.sync.messages import (
    BATCH_MAX_BYTES,
    BATCH_MAX_EVENTS,
    MAX_EVENTS_PER_RESPONSE,
    MAX_MESSAGE_BYTES,
    Batch,
    ClubInfo,
    Done,
    Frontier,
    LogHead,
    LogInfo,
    Want,
    WantLog,
)

INFO_PATH = "/fed/v1/info"
FRONTIER_PATH = "/fed/v1/frontier"
EVENTS_PATH = "/fed/v1/events"
CONTENT_TYPE = "application/vnd.federation+msgpack"
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
        return _frontier_answer(await _poll(rt, requester, known, time.monotonic()))
    async with polls:
        return _frontier_answer(await _poll(rt, requester, known, time.monotonic() + wait_s))


async def _poll(
    rt: Runtime, requester: bytes | None, known: bytes, deadline: float
) -> tuple[bytes, list[LogHead], bytes]:
    """The requester's frontier once it differs from `known`, or at the deadline."""
    while True:
        version = rt.version
        digest, heads = serve.frontier(rt.heads(rt.visible(requester)).items())
        remaining = deadline - time.monotonic()
        if digest != known or remaining <= 0 or rt.closing:
            break
        await rt.wait_changed(version, remaining)
    return digest, heads, known


def _frontier_answer(polled: tuple[bytes, list[LogHead], bytes]) -> web.Response:
    digest, heads, known = polled
    body = messages.encode(Frontier(digest, None if digest == known else heads))
    return web.Response(body=body, content_type=CONTENT_TYPE)


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
    visible = rt.visible(requester)
    plan = serve.plan(want, rt.heads(visible))
    streams = request.app[STREAMS]
    if streams.locked():
        raise RemoteProtocolError(
            "too many syncs at once; retry soon", code="busy", http_status=503
        )
    async with streams:
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        await response.prepare(request)
        try:
            await _stream(rt, response, plan, visible)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the peer went away mid-stream; it resumes from its heads next round
        return response


async def _stream(
    rt: Runtime,
    response: web.StreamResponse,
    plan: list[WantLog],
    visible: dict[bytes, LogRecord],
) -> None:
    """Write the planned logs as frames: club and log records first where asked for,
    batches of events, then Done (more=True once the response limit is reached)."""
    sent_clubs: set[bytes] = set()
    total = 0
    for entry in plan:
        record = visible[entry.log]
        if entry.descriptor:
            if record.club not in sent_clubs:
                sent_clubs.add(record.club)
                genesis = rt.genesis_raw[record.club]
                await response.write(messages.frame(ClubInfo(record.club, genesis)))
            await response.write(messages.frame(LogInfo(record.id, record.descriptor)))
        after = entry.after
        left = entry.limit or (1 << 62)
        while left > 0 and total < MAX_EVENTS_PER_RESPONSE:
            page = await rt.store.raw_events(entry.log, after, min(BATCH_MAX_EVENTS, left))
            if not page:
                break
            batch: list[tuple[bytes, bytes | None]] = []
            size = 0
            for raw in page:
                batch.append((raw.signed, raw.payload))
                size += len(raw.signed) + len(raw.payload or b"")
                if size >= BATCH_MAX_BYTES:
                    break
            await response.write(messages.frame(Batch(entry.log, batch)))
            after = page[len(batch) - 1].seq
            left -= len(batch)
            total += len(batch)
        if total >= MAX_EVENTS_PER_RESPONSE:
            await response.write(messages.frame(Done(more=True)))
            break
    else:
        await response.write(messages.frame(Done()))


def make_app(rt: Runtime) -> web.Application:
    app = web.Application(client_max_size=MAX_MESSAGE_BYTES, middlewares=[_refusals])
    app[RUNTIME] = rt
    app[STREAMS] = asyncio.Semaphore(MAX_STREAMS)
    app[POLLS] = asyncio.Semaphore(MAX_WAITING_POLLS)
    app.router.add_get(INFO_PATH, info)
    app.router.add_get(FRONTIER_PATH, frontier)
    app.router.add_post(EVENTS_PATH, events)
    return app
