"""Real nodes with the feed served on 127.0.0.1:0, and a client for its routes.

    async with feed_federation(tmp_path) as (fed, feed):
        await fed["b"].post(Kind.NOTE, {"text": "hi"}, "public")
        await feed.wait_for_text("hi")
        body = await feed.get("/feed.json")

Club a serves the feed; a and b federate (plain HTTP on loopback, as `tls=False`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from federation.web.feed import FeedServer, open_feed
from federation.web.feed_guard import FeedLimits
from tests.harness import Federation

# Every GET route of the feed, with a query or path that reaches its handler.
WAIT_S = 10.0


class FeedClient:
    def __init__(self, server: FeedServer, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http
        self.base = f"http://127.0.0.1:{server.port}"

    async def fetch(self, path: str, method: str = "GET", **kw: Any) -> tuple[int, bytes]:
        async with self.http.request(method, self.base + path, **kw) as response:
            return response.status, await response.read()

    async def get(self, path: str) -> bytes:
        status, body = await self.fetch(path)
        assert status == 200, (path, status, body[:300])
        return body

    async def response(self, path: str) -> tuple[int, dict[str, str], bytes]:
        async with self.http.get(self.base + path) as response:
            return response.status, dict(response.headers), await response.read()

    async def wait_for(self, path: str, needle: bytes, timeout_s: float = WAIT_S) -> bytes:
        """GET `path` until its body holds `needle` (the index follows the node)."""
        deadline = time.monotonic() + timeout_s
        while True:
            body = await self.get(path)
            if needle in body:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never appeared in {path}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def feed_federation(
    root: Path, names: tuple[str, ...] = ("a", "b"), limits: FeedLimits | None = None
) -> AsyncIterator[tuple[Federation, FeedClient]]:
    async with Federation.open(root, list(names), tls=False) as fed:
        for other in names[1:]:
            await fed.federate(names[0], other)
        rt = fed[names[0]].service.rt
        async with (
            open_feed(rt, "127.0.0.1", 0, limits or FeedLimits(response_cache_s=0.0)) as server,
            aiohttp.ClientSession() as http,
        ):
            yield fed, FeedClient(server, http)


async def synced(fed: Federation, log_count: int) -> None:
    """Wait until club a holds at least `log_count` logs with events (a sync round)."""

    async def enough() -> bool:
        return len(await fed["a"].heads()) >= log_count

    await fed.wait_for(enough, what=f"{log_count} logs at a")
