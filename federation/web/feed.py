"""The read-only federation feed: an aiohttp app of GET (and HEAD) routes only.

Read-only by construction: no route takes another method, so aiohttp answers every
other one with 405 before any handler runs, and nothing here writes to the store.
Handlers are thin: parse and bound the query (`feed_guard`), read the in-memory
index of public events (`feed_index`), turn events into items (`views.feed`), encode
(jinja2 with autoescape, `views.feed_formats`, msgspec). Only public logs are ever
read, so no response, count or timing depends on any other (DESIGN principle 17).
Every connection is counted and timed from accept by the same gate as the peer API's
(web/limits.py; caps and deadlines in `FeedLimits`): the feed is for anyone, so what
anyone can hold of it is bounded (DESIGN principle 18), per address as well as in all
(live streams, connections, request rate, a request's header lines, the answers kept
in the cache), so one address cannot take what everyone else needs. Connections count
against their TCP peer (the gate counts them before any header is read); everything
counted per request against `client_of`: the peer, or behind a reverse proxy named in
`FeedLimits.trusted_proxies` the client it forwards for.

    /                 the page          /feed.json     items, newest first, paged
    /clubs/{club}     a club's page     /feed.atom     Atom 1.0
    /calendar.ics     upcoming actions  /live          server-sent events
    /events/{id}      a signed event, with what verifies it offline
    /openapi.json     the above, in OpenAPI 3.1
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import msgspec
from aiohttp import hdrs, web
from aiohttp_sse import sse_response

from federation.core.evidence import evidence_of
from federation.core.keys import key_log_id
from federation.errors import ConfigError
from federation.node.runtime import Runtime
from federation.node.tasks import open_task_group
from federation.views import feed_formats
from federation.views.feed import Entry, FeedItem, FeedPage, Filter, item_of, page
from federation.web import feed_guard
from federation.web.feed_guard import SECURITY_HEADERS, FeedLimits, RateLimiter
from federation.web.feed_index import FeedIndex
from federation.web.feed_openapi import openapi
from federation.web.limits import GatedSite, Gatekeeper, Slots

HERE = Path(__file__).parent
STATIC = {
    "feed.css": ((HERE / "static" / "feed.css").read_bytes(), "text/css"),
    "live.js": ((HERE / "static" / "live.js").read_bytes(), "text/javascript"),
    "icon.svg": ((HERE / "static" / "icon.svg").read_bytes(), "image/svg+xml"),
}

INDEX = web.AppKey("index", FeedIndex)
LIMITER = web.AppKey("limiter", RateLimiter)
LIVE = web.AppKey("live", Slots)
LIMITS = web.AppKey("limits", FeedLimits)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
OPENAPI = web.AppKey("openapi", bytes)
GATE = web.AppKey("gate", Gatekeeper)

_json = msgspec.json.Encoder()
DEFAULT_LIMITS = FeedLimits()

# Distinct answers kept per period, and their bytes: beyond either, answers are made
# but not kept, so a reader walking many cursors costs time, not memory. A page is at
# most MAX_PAGE_ITEMS items of up to 64 KiB (MAX_PAYLOAD_BYTES): 512 such answers
# would be gigabytes, so the bytes are bounded apart.
RESPONSE_CACHE_ENTRIES = 512
RESPONSE_CACHE_BYTES = 32 * 1024 * 1024
# What one address may add per period: one address walking cursors fills its share,
# and everyone else's answers are still kept (a reader's hits cost it nothing).
RESPONSE_CACHE_PER_ADDRESS = 64

Answer = tuple[bytes, str, str | None]  # body, content type, charset


class ResponseCache:
    """Whole answers by route, host and query, for one period of
    `FeedLimits.response_cache_s` (see there why the period is fixed)."""

    def __init__(self, period_s: float) -> None:
        self._period_s = period_s
        self._period = -1
        self._answers: dict[str, Answer] = {}
        self._bytes = 0
        self._added: dict[str, int] = {}  # address -> answers it added this period

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str, now: float) -> Answer | None:
        if self._period_s <= 0:
            return None
        period = int(now // self._period_s)
        if period != self._period:
            self._period, self._answers, self._bytes, self._added = period, {}, 0, {}
        return self._answers.get(key)

    def put(self, key: str, answer: Answer, address: str = "") -> None:
        size = len(key) + len(answer[0])
        added = self._added.get(address, 0)
        if (
            self._period_s > 0
            and key not in self._answers
            and len(self._answers) < RESPONSE_CACHE_ENTRIES
            and self._bytes + size <= RESPONSE_CACHE_BYTES
            and added < RESPONSE_CACHE_PER_ADDRESS
        ):
            self._answers[key] = answer
            self._bytes += size
            self._added[address] = added + 1


CACHE = web.AppKey("cache", ResponseCache)
Handler = Callable[[web.Request], Awaitable[web.Response]]


def cached(handler: Handler) -> Handler:
    """Serve a GET handler's answer from the ResponseCache when it holds one.

    The key is what the answer depends on, and nothing else: the route, the host and
    scheme (Atom and iCalendar links are absolute: without them one client's Host
    header would be served to every reader of the period) and the query parameters
    the handlers read, so parameters nobody reads cannot make a key per request."""

    async def serve(request: web.Request) -> web.Response:
        cache = request.app[CACHE]
        key = repr((handler.__name__, _base(request), request.path, feed_guard.read_query(request)))
        found = cache.get(key, time.monotonic())
        if found is None:
            response = await handler(request)
            assert isinstance(response.body, bytes)
            found = (response.body, response.content_type, response.charset)
            cache.put(key, found, client_of(request))
        body, content_type, charset = found
        return web.Response(body=body, content_type=content_type, charset=charset)

    return serve


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every {{ }} is escaped for HTML; other clubs' text included
        undefined=jinja2.StrictUndefined,
    )
    env.filters["iso"] = lambda t: t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    env.filters["utc"] = lambda t: f"{t.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
    return env


async def _items(index: FeedIndex, entries: list[Entry]) -> list[FeedItem]:
    items = []
    for entry in entries:
        event = await index.rt.store.event_at(entry.log, entry.seq)
        if event is not None and event.id == entry.id:
            items.append(item_of(event, index.names, index.joint))
    return items


async def _page(request: web.Request, where: Filter) -> tuple[list[FeedItem], str | None]:
    before, limit = feed_guard.parse_paging(request)
    index = request.app[INDEX]
    entries, next_cursor = page(index.entries, before, limit, where)
    return await _items(index, entries), next_cursor


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _html(request: web.Request, where: Filter, heading: str, intro: str) -> web.Response:
    index = request.app[INDEX]
    items, next_cursor = await _page(request, where)
    now = dt.datetime.now(dt.UTC)
    club_hex = where.club.hex() if where.club is not None else None
    q = feed_guard.query_of(where)
    body = (
        request.app[TEMPLATES]
        .get_template("index.html")
        .render(
            title=heading,
            heading=heading,
            intro=intro,
            node_name=index.rt.name,
            items=items,
            next_url=(
                request.path + feed_guard.query_of(where, before=next_cursor, with_club=False)
                if next_cursor
                else None
            ),
            upcoming=[u for u in index.upcoming(now) if club_hex in (None, u.club)][:20],
            campaigns=[c for c in index.campaigns if club_hex is None or c.by(club_hex)][:50],
            clubs=index.clubs,
            atom_url=f"/feed.atom{q}",
            ics_url="/calendar.ics" + (f"?club={club_hex}" if club_hex else ""),
            json_url=f"/feed.json{q}",
            live_url=f"/live{q}",
        )
    )
    return web.Response(text=body, content_type="text/html")


async def home(request: web.Request) -> web.Response:
    where = feed_guard.parse_filter(request)
    name = request.app[INDEX].rt.name
    return await _html(
        request, where, "Public feed", f"What the clubs known to {name} chose to publish."
    )


async def club_page(request: web.Request) -> web.Response:
    club = feed_guard.parse_club(request.match_info["club"])
    index = request.app[INDEX]
    entry = next((c for c in index.clubs if c.id == club.hex()), None)
    if entry is None:
        raise web.HTTPNotFound(text="no public events of this club here\n")
    where = feed_guard.parse_filter(request, club)
    return await _html(request, where, entry.name, "")


async def feed_json(request: web.Request) -> web.Response:
    items, next_cursor = await _page(request, feed_guard.parse_filter(request))
    return web.Response(
        body=_json.encode(FeedPage(items, next_cursor)), content_type="application/json"
    )


async def feed_atom(request: web.Request) -> web.Response:
    where = feed_guard.parse_filter(request)
    items, _ = await _page(request, where)
    base = _base(request)
    # The parameters read (checked by _page), as in the cache key: never another's.
    q = request.query
    query = feed_guard.query_of(where, before=q.get("before"), limit=q.get("limit"))
    body = feed_formats.atom(
        items,
        title=f"{request.app[INDEX].rt.name}: public feed",
        base=base,
        self_url=f"{base}{request.path}{query}",
    )
    return web.Response(body=body, content_type="application/atom+xml", charset="utf-8")


async def calendar_ics(request: web.Request) -> web.Response:
    where = feed_guard.parse_filter(request)
    index = request.app[INDEX]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    actions = [u for u in index.upcoming(now) if where.club is None or u.club == where.club.hex()]
    body = feed_formats.calendar(
        actions, name=f"{index.rt.name}: upcoming actions", base=_base(request), now=now
    )
    return web.Response(body=body, content_type="text/calendar", charset="utf-8")


async def event(request: web.Request) -> web.Response:
    try:
        ident = bytes.fromhex(request.match_info["id"])
    except ValueError:
        ident = b""
    index = request.app[INDEX]
    entry = index.by_id.get(ident) if len(ident) == 32 else None
    found = None if entry is None else await index.rt.store.event_at(entry.log, entry.seq)
    record = None if entry is None else index.rt.logs.get(entry.log)
    genesis = None if entry is None else index.rt.genesis_raw.get(entry.club)
    if entry is None or found is None or found.id != ident or record is None or genesis is None:
        raise web.HTTPNotFound(text="no such public event here\n")
    # A club that changed its key: its key events, and the log's first event id, let
    # a reader check the key offline too (protocol.md §2.2).
    store = index.rt.store
    keys = [(e.signed, e.payload or b"") for e in await store.events(key_log_id(entry.club))]
    first = await store.event_at(entry.log, 1) if keys else None
    evidence = evidence_of(
        found, genesis, record.descriptor, keys, None if first is None else first.id
    )
    body = _json.encode(evidence)
    return web.Response(body=body, content_type="application/json")


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def static(request: web.Request) -> web.Response:
    found = STATIC.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(
        body=body, content_type=content_type, headers={"Cache-Control": "max-age=300"}
    )


async def live(request: web.Request) -> web.StreamResponse:
    """New items as server-sent events, from where the client's Last-Event-ID was."""
    where = feed_guard.parse_filter(request)
    slots, limits, index = request.app[LIVE], request.app[LIMITS], request.app[INDEX]
    if request.method == "HEAD":  # aiohttp-sse streams for GET only; holds nothing
        return web.Response(content_type="text/event-stream")
    address = client_of(request)
    if not slots.take(address):
        if slots.client_full(address):
            raise web.HTTPTooManyRequests(
                text=f"this address has {limits.live_per_address} live streams open, the "
                "most one address may; close one and try again\n"
            )
        raise web.HTTPServiceUnavailable(
            text="too many live readers; try again later\n", headers={"Retry-After": "30"}
        )
    try:
        async with sse_response(
            request,
            headers=SECURITY_HEADERS,
            ping_interval=limits.live_ping_s,
            send_timeout=limits.live_send_timeout_s,
        ) as stream:
            at = len(index.arrived)
            last = stream.last_event_id
            if last is not None:
                with contextlib.suppress(ValueError):
                    at = index.arrival_of.get(bytes.fromhex(last), at - 1) + 1
            while stream.is_connected() and not index.closed:
                version = index.version
                fresh = [e for e in index.arrived[at:] if where.matches(e)]
                at = len(index.arrived)
                for item in await _items(index, fresh[-100:]):
                    await stream.send(_json.encode(item).decode(), id=item.id, event="item")
                await index.wait_changed(version, limits.live_ping_s)
            return stream
    finally:
        slots.give_back(address)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.popall("Set-Cookie", None)


CLIENT = web.RequestKey("client", str)


def client_of(request: web.Request) -> str:
    """The client this request counts against, for everything counted per request
    (the request rate, live streams, the cache's budget): its TCP peer, or behind a
    trusted proxy the client the proxy names (`feed_guard.client_address`). Worked
    out once per request."""
    client = request.get(CLIENT)
    if client is None:
        client = request[CLIENT] = feed_guard.client_address(
            request.remote or "",
            request.headers.getall(hdrs.X_FORWARDED_FOR, ()),
            request.app[LIMITS].trusted_proxies,
        )
    return client


@web.middleware
async def _rate(request: web.Request, handler: Any) -> web.StreamResponse:
    if not request.app[LIMITER].allow(client_of(request), time.monotonic()):
        raise web.HTTPTooManyRequests(
            text="too many requests; slow down\n", headers={"Retry-After": "5"}
        )
    response: web.StreamResponse = await handler(request)
    return response


def make_feed_app(index: FeedIndex, limits: FeedLimits = DEFAULT_LIMITS) -> web.Application:
    # Every connection counted and timed from accept, as the peer API's (web/limits.py,
    # DESIGN principle 18); a feed reader is never a peer, so no peers' budget.
    gate = Gatekeeper(
        anonymous=limits.connections,
        per_address=limits.connections_per_address,
        peers=0,
        first_request_s=limits.first_request_s,
        idle_s=limits.idle_s,
    )
    app = web.Application(middlewares=[gate.counting, _rate], client_max_size=1024)
    app[GATE] = gate
    app[INDEX] = index
    app[LIMITS] = limits
    app[LIMITER] = RateLimiter(limits)
    app[LIVE] = Slots(limits.live_clients, limits.live_per_address)
    app[TEMPLATES] = _templates()
    app[OPENAPI] = _json.encode(openapi(f"{index.rt.name}: public feed"))
    app[CACHE] = ResponseCache(limits.response_cache_s)
    app.on_response_prepare.append(_headers)
    # GET routes only (aiohttp adds HEAD to each): nothing can be written through the feed.
    for path, handler in (
        ("/", cached(home)),
        ("/clubs/{club}", cached(club_page)),
        ("/feed.json", cached(feed_json)),
        ("/feed.atom", cached(feed_atom)),
        ("/calendar.ics", cached(calendar_ics)),
        ("/live", live),
        ("/openapi.json", openapi_json),
        ("/events/{id}", event),
        ("/static/{name}", static),
    ):
        app.router.add_get(path, handler)
    return app


@dataclass
class FeedServer:
    index: FeedIndex
    port: int
    gate: Gatekeeper  # what the feed's clients hold (tests)
    app: web.Application  # its live slots, rate limiter and cache (tests)


@contextlib.asynccontextmanager
async def open_feed(
    rt: Runtime, host: str, port: int, limits: FeedLimits = DEFAULT_LIMITS
) -> AsyncIterator[FeedServer]:
    """Serve the feed of the running node `rt` on host:port (0: any free port)."""
    index = FeedIndex(rt)
    await index.update()
    app = make_feed_app(index, limits)
    # At a stop, a request still being answered gets a second (aiohttp waits 60 s by
    # default, and `run` seemed to hang); live streams end at once (index.close).
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=1.0,
        max_headers=feed_guard.MAX_HEADER_LINES,
    )
    await runner.setup()
    try:
        # Plain HTTP (config.FeedSection: a TLS proxy goes in front to publish it).
        site = GatedSite(runner, host, port, ssl_context=None, gate=app[GATE])
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve the feed on {host}:{port} ({exc.strerror or exc}); "
                "change feed.listen",
                field="feed.listen",
            ) from None
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        async with open_task_group() as group:
            follower = group.create_task(index.follow())
            try:
                yield FeedServer(index, int(bound), app[GATE], app)
            finally:
                follower.cancel()
                await index.close()  # live streams end now, not at their next ping
    finally:
        await runner.cleanup()
