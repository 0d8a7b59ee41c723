"""Nothing can be written through the feed: every method but GET and HEAD, on every
route, answers 405 and changes nothing; every response carries the strict headers
(CSP without inline script, no cookies); requests from one address are rate limited;
live streams are bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from federation.core.canonical import Kind
from federation.web.feed import ResponseCache
from federation.web.feed_guard import FeedLimits
from tests.feed.support import feed_federation

pytestmark = pytest.mark.timeout(60)

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "MKCOL")


async def test_every_write_method_answers_405(tmp_path: Path) -> None:
    limits = FeedLimits(burst=10_000, response_cache_s=0.0)
    async with feed_federation(tmp_path, ("a",), limits) as (fed, feed):
        a = fed["a"]
        event = await a.post(Kind.NOTE, {"text": "a public note"}, "public")
        await feed.wait_for("/feed.json", b"a public note")
        paths = [
            "/",
            f"/clubs/{a.club.hex()}",
            "/feed.json",
            "/feed.atom",
            "/calendar.ics",
            "/live",
            "/openapi.json",
            f"/events/{event.id.hex()}",
            "/static/feed.css",
        ]
        count, heads = await a.node.store.count_events(), await a.heads()
        for path in paths:
            status, _ = await feed.fetch(path, "HEAD")
            assert status == 200, path
            for method in WRITE_METHODS:
                status, body = await feed.fetch(path, method, data=b'{"text": "written"}')
                assert status == 405, (method, path, status)
                assert b"written" not in body
        assert await a.node.store.count_events() == count
        assert await a.heads() == heads
        assert b"written" not in await feed.get("/feed.json")


async def test_strict_headers_on_every_response(tmp_path: Path) -> None:
    async with feed_federation(tmp_path, ("a",)) as (_, feed):
        for path in (
            "/",
            "/feed.json",
            "/feed.atom",
            "/calendar.ics",
            "/openapi.json",
            "/static/live.js",
            "/nowhere",
            "/events/00",
        ):
            _, headers, _ = await feed.response(path)
            csp = headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp, path
            assert "unsafe-inline" not in csp
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert "Set-Cookie" not in headers
        html = (await feed.get("/")).decode()
        assert "<script>" not in html
        assert "style=" not in html
        assert "http://" not in html.replace(feed.base, "")
        assert "https://" not in html


async def test_one_address_is_rate_limited(tmp_path: Path) -> None:
    limits = FeedLimits(requests_per_s=1.0, burst=5, response_cache_s=0.0)
    async with feed_federation(tmp_path, ("a",), limits) as (_, feed):
        statuses = [(await feed.fetch("/openapi.json"))[0] for _ in range(8)]
        assert statuses[:5] == [200] * 5
        assert statuses[5:] == [429] * 3


async def test_live_streams_are_bounded(tmp_path: Path) -> None:
    limits = FeedLimits(live_clients=2, live_ping_s=0.2, response_cache_s=0.0)
    async with feed_federation(tmp_path, ("a",), limits) as (_, feed):
        held = [await feed.http.get(feed.base + "/live") for _ in range(2)]
        assert [r.status for r in held] == [200, 200]
        status, _ = await feed.fetch("/live")
        assert status == 503
        first = await asyncio.wait_for(held[0].content.readuntil(b"ping"), 5)
        assert first == b": ping"  # pings keep the stream alive through proxies
        for response in held:
            response.close()
        await asyncio.sleep(0.5)  # a closed stream frees its slot
        async with feed.http.get(feed.base + "/live") as response:
            assert response.status == 200


def test_the_cache_empties_on_the_clock_not_on_changes() -> None:
    """An answer is reused within its period and gone after it, whatever the node
    did meanwhile: the cache has no other way to be emptied, so a miss's cost says
    nothing about what changed on the node."""
    cache = ResponseCache(2.0)
    answer = (b"{}", "application/json", None)
    assert cache.get("feed_json /feed.json", 10.0) is None
    cache.put("feed_json /feed.json", answer)
    assert cache.get("feed_json /feed.json", 11.9) == answer
    assert cache.get("feed_json /feed.json", 12.0) is None  # the next period
    off = ResponseCache(0.0)
    off.put("k", answer)
    assert off.get("k", 1.0) is None


async def test_a_new_public_item_shows_within_one_period(tmp_path: Path) -> None:
    period_s = 0.5
    limits = FeedLimits(burst=10_000, response_cache_s=period_s)
    async with feed_federation(tmp_path, ("a",), limits) as (fed, feed):
        first = await feed.get("/feed.json")
        await fed["a"].post(Kind.NOTE, {"text": "public marker QX1"}, "public")
        await feed.wait_for("/feed.json", b"QX1", timeout_s=period_s * 4 + 2)
        assert b"QX1" not in first  # the control: the marker is new
