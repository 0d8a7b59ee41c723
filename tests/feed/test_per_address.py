"""What one address can hold of the feed is bounded per address as well as in all
(DESIGN principle 18): live streams, the request rate and the rate limiter's memory,
the answers kept in the response cache; and per connection, a request's header lines
and a body nobody reads. Each test shows one address at its share while another
address still gets its own, or the bound on one connection with a positive control.

Real HTTP to a real feed on 127.0.0.1; a second client comes from 127.0.0.2 and up
(all of 127/8 is loopback on Linux: the client socket is bound there, so the feed
sees a different source address, as it would from another host).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from federation.core.canonical import Kind
from federation.web.feed import (
    CACHE,
    LIMITER,
    LIVE,
    RESPONSE_CACHE_BYTES,
    RESPONSE_CACHE_PER_ADDRESS,
    ResponseCache,
    make_feed_app,
)
from federation.web.feed_guard import MAX_HEADER_LINES, FeedLimits, RateLimiter
from tests.feed.support import FeedClient, feed_federation
from tests.harness import serve_app

pytestmark = pytest.mark.timeout(60)
WAIT_S = 5.0


@contextlib.asynccontextmanager
async def client_from(feed: FeedClient, source: str) -> AsyncIterator[FeedClient]:
    """A client of the same feed whose connections come from `source` (127.0.0.x)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        yield FeedClient(feed.server, http)


async def open_live(feed: FeedClient) -> aiohttp.ClientResponse:
    """GET /live and keep the stream open (the caller closes it)."""
    return await feed.http.get(feed.base + "/live")


async def refused(feed: FeedClient) -> tuple[int, str]:
    status, body = await feed.fetch("/live")
    assert status != 200, "a stream was opened past the cap"
    return status, body.decode()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        await asyncio.sleep(0.02)


async def test_one_address_holds_its_share_of_live_streams_and_no_more(tmp_path: Path) -> None:
    limits = FeedLimits(live_clients=5, live_per_address=2, response_cache_s=0.0)
    async with (
        feed_federation(tmp_path, ("a",), limits) as (_, feed),
        client_from(feed, "127.0.0.2") as second,
        client_from(feed, "127.0.0.3") as third,
        client_from(feed, "127.0.0.4") as fourth,
    ):
        slots = feed.server.app[LIVE]
        held = [await open_live(feed) for _ in range(2)]
        assert [r.status for r in held] == [200, 200]
        status, text = await refused(feed)
        assert status == 429
        assert text.endswith("close one and try again\n"), text
        assert text.count("\n") == 1
        assert slots.held == 2
        # HEAD holds nothing, so it is answered at the cap too.
        assert (await feed.fetch("/live", "HEAD"))[0] == 200

        # Another address still gets its own, up to its own share.
        others = [await open_live(second) for _ in range(2)]
        assert [r.status for r in others] == [200, 200]
        assert (await refused(second))[0] == 429

        # A stream closed frees its slot: the address gets a stream again.
        held.pop().close()
        await wait_until(lambda: slots.held == 3, "the closed stream's slot given back")
        held.append(await open_live(feed))
        assert held[-1].status == 200

        # The total still holds: a fresh address takes the fifth, the next fresh one
        # is refused for the total (503, try later), not for its own share.
        others.append(await open_live(third))
        assert others[-1].status == 200
        status, text = await refused(fourth)
        assert status == 503
        assert text == "too many live readers; try again later\n"
        assert slots.held == 5
        for response in held + others:
            response.close()
        await wait_until(lambda: slots.held == 0, "every slot given back")


async def test_the_request_rate_is_per_address(tmp_path: Path) -> None:
    limits = FeedLimits(requests_per_s=1.0, burst=5, response_cache_s=0.0)
    async with (
        feed_federation(tmp_path, ("a",), limits) as (_, feed),
        client_from(feed, "127.0.0.2") as second,
    ):
        statuses = [(await feed.fetch("/openapi.json"))[0] for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        assert (await second.fetch("/openapi.json"))[0] == 200


def test_an_ipv6_slash_64_is_one_address_to_the_rate_limiter() -> None:
    """Every address of a /64 shares one bucket, however it is written (was: the
    compressed forms each had a bucket of their own, so a host could pick a fresh
    address of its /64 for every burst)."""
    limiter = RateLimiter(FeedLimits(requests_per_s=0.001, burst=2))
    assert limiter.allow("2001:db8::1", 0.0)
    assert limiter.allow("2001:db8::2", 0.0)
    assert not limiter.allow("2001:db8:0:0:ffff::3", 0.0)
    assert limiter.allow("2001:db8:0:1::1", 0.0)  # the next /64 is another address
    assert limiter.allow("::ffff:192.0.2.1", 0.0)
    assert limiter.allow("192.0.2.1", 0.0)
    assert not limiter.allow("192.0.2.1", 0.0)  # the mapped form is the same host
    assert len(limiter) == 3


async def test_the_rate_limiters_memory_is_bounded_under_many_addresses(tmp_path: Path) -> None:
    limits = FeedLimits(addresses=8, response_cache_s=0.0)
    async with feed_federation(tmp_path, ("a",), limits) as (_, feed):
        limiter = feed.server.app[LIMITER]
        for i in range(2, 22):
            async with client_from(feed, f"127.0.0.{i}") as client:
                assert (await client.fetch("/openapi.json"))[0] == 200
            assert len(limiter) == min(i - 1, 8)
        assert (await feed.fetch("/openapi.json"))[0] == 200
        assert len(limiter) == 8


async def test_parameters_nobody_reads_make_no_cache_entries(tmp_path: Path) -> None:
    """Was: every distinct query string kept an answer, so one client with `?x=1`,
    `?x=2`, ... filled the cache with copies of the same page."""
    limits = FeedLimits(burst=10_000, response_cache_s=600.0)
    async with feed_federation(tmp_path, ("a",), limits) as (_, feed):
        cache = feed.server.app[CACHE]
        first = await feed.get("/feed.json?limit=5")
        for i in range(20):
            assert await feed.get(f"/feed.json?limit=5&x={i}&limit=9") == first
        assert len(cache) == 1
        await feed.get("/feed.json?limit=6")  # positive control: a read parameter
        assert len(cache) == 2


async def test_one_clients_host_header_is_not_served_to_others(tmp_path: Path) -> None:
    """Atom and iCalendar links are absolute, made from the Host header: the cache
    keeps each host's answer apart (was: a client sending `Host: evil.example` had
    every reader of that period get links to evil.example)."""
    limits = FeedLimits(burst=10_000, response_cache_s=600.0)
    async with feed_federation(tmp_path, ("a",), limits) as (fed, feed):
        action = {"what": "a march", "starts": "2031-02-03T04:05:00+00:00", "where": "square"}
        await fed["a"].post(Kind.ACTION, action, "public")
        index = feed.server.index
        # The index, not a GET: the cache would keep the answer from before the post.
        await wait_until(lambda: bool(index.upcoming(dt.datetime.now(dt.UTC))), "the action")
        for path in ("/feed.atom?x=tracking-me", "/calendar.ics?x=2"):
            status, evil = await feed.fetch(path, headers={"Host": "evil.example"})
            assert status == 200
            assert b"evil.example" in evil  # positive control: that client's own answer
            honest = await feed.get(path)
            assert b"evil.example" not in honest
            assert feed.base.encode() in honest
            assert b"tracking-me" not in honest


async def test_one_address_fills_only_its_share_of_the_cache(tmp_path: Path) -> None:
    limits = FeedLimits(burst=10_000, response_cache_s=600.0)
    async with (
        feed_federation(tmp_path, ("a",), limits) as (_, feed),
        client_from(feed, "127.0.0.2") as walker,
    ):
        cache = feed.server.app[CACHE]
        for limit in range(1, RESPONSE_CACHE_PER_ADDRESS + 11):
            assert (await walker.fetch(f"/feed.json?limit={limit}"))[0] == 200
        assert len(cache) == RESPONSE_CACHE_PER_ADDRESS
        await feed.get("/feed.json")
        await feed.get("/")
        assert len(cache) == RESPONSE_CACHE_PER_ADDRESS + 2  # another reader's are kept


def test_the_caches_bytes_are_bounded() -> None:
    """Pages of up to 100 items of 64 KiB: 512 of them would be gigabytes."""
    cache = ResponseCache(600.0)
    assert cache.get("k", 0.0) is None
    body = b"x" * (1024 * 1024)
    for i in range(64):
        cache.put(f"key {i:02}", (body, "application/json", None), f"192.0.2.{i}")
    assert len(cache) == RESPONSE_CACHE_BYTES // (len(body) + len("key 00"))
    assert cache.get("key 00", 1.0) is not None
    assert cache.get("key 63", 1.0) is None


async def _status_with_headers(port: int, lines: int) -> bytes:
    """The status line of a GET with `lines` header lines in all (Host included)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        extra = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 100) for i in range(lines - 1))
        writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n")
        return await asyncio.wait_for(reader.readline(), WAIT_S)
    finally:
        writer.close()


async def test_a_request_has_at_most_max_header_lines(tmp_path: Path) -> None:
    """A connection holds at most MAX_HEADER_LINES lines while its headers come (was
    aiohttp's 128 of 8 KiB each, a megabyte a connection)."""
    limits = FeedLimits(response_cache_s=0.0)
    async with (
        feed_federation(tmp_path, ("a",), limits) as (_, feed),
        serve_app(make_feed_app(feed.server.index, limits)) as ungated,
    ):
        port = feed.server.port
        assert (await _status_with_headers(port, MAX_HEADER_LINES)).startswith(b"HTTP/1.1 200")
        over = await _status_with_headers(port, MAX_HEADER_LINES + 1)
        assert over.split(b" ")[1] == b"400", over
        # Positive control: aiohttp's defaults take the same request.
        at_default = await _status_with_headers(ungated, MAX_HEADER_LINES + 1)
        assert at_default.startswith(b"HTTP/1.1 200"), at_default


async def test_a_request_body_trickled_after_the_answer_is_closed_at_the_idle_deadline(
    tmp_path: Path,
) -> None:
    """No route reads a body (GET only), so aiohttp answers at once and then reads
    the rest to throw it away; a body that never ends holds the connection only until
    the gate's idle deadline (the handler has finished), not aiohttp's own 10 s."""
    idle_s = 0.5
    limits = FeedLimits(response_cache_s=0.0, idle_s=idle_s)
    async with feed_federation(tmp_path, ("a",), limits) as (_, feed):
        reader, writer = await asyncio.open_connection("127.0.0.1", feed.server.port)
        try:
            writer.write(
                b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: 1000000000\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
            assert head.startswith(b"HTTP/1.1 200"), head
            answered = time.monotonic()
            closed = False
            while not closed and time.monotonic() - answered < 5.0:
                with contextlib.suppress(ConnectionError):
                    writer.write(b"b" * 1000)
                    await writer.drain()
                try:
                    closed = await asyncio.wait_for(reader.read(65536), 0.1) == b""
                except TimeoutError:
                    pass
                except ConnectionResetError:  # the gate aborts: a reset, or end of file
                    closed = True
            took = time.monotonic() - answered
            assert closed, "the trickled body held the connection"
            assert took < idle_s + 2.0, f"closed after {took:.2f} s"  # aiohttp's own: 10 s
        finally:
            writer.close()
        assert feed.server.gate.statistics().timed_out == 1
