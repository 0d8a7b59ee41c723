"""The feed under load: requests/s and p99 latency of `/feed.json` and `/` with
100,000 public events held, beside a bare aiohttp handler serving a static body of
the same size, in the same run (issue 10: target >= 0.5 of the bare rate, p99 < 50 ms).

The load generator runs in its own process (spawned, so it shares no event loop or
GIL with the servers): CONCURRENCY clients on keep-alive connections, for LOAD_S
seconds per target, bounded in count and time, on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import time
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.common import Measurement
from federation.core import canonical
from federation.core.canonical import Audience, Kind
from federation.core.events import Head, sign_event
from federation.core.log import descriptor_bytes
from federation.core.payloads import make_payload
from federation.node.node import Node, init_node
from federation.node.runtime import Runtime
from federation.web.feed import open_feed
from federation.web.feed_guard import FeedLimits

DEFAULT_FEED_EVENTS = 100_000
LOAD_S = 3.0
CONCURRENCY = 16
MAX_REQUESTS = 200_000  # per target: the loop stops at this count or LOAD_S
APPEND_BATCH = 5000


def _load(url: str, seconds: float, concurrency: int) -> list[float]:
    """Latencies (s) of the requests made to `url` in `seconds` (another process)."""

    async def run() -> list[float]:
        latencies: list[float] = []
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as http:

            async def client() -> None:
                while time.monotonic() < deadline and len(latencies) < MAX_REQUESTS:
                    start = time.perf_counter()
                    async with http.get(url) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"{url}: HTTP {response.status}")
                    latencies.append(time.perf_counter() - start)

            await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies

    return asyncio.run(run())


async def _fill(root: Path, events: int) -> Node:
    await init_node(root, name="Bench club", listen="127.0.0.1:0", passphrase=None, plain_http=True)
    node = await Node.open(root)
    key = node.unlock()
    descriptor = descriptor_bytes(node.club, "public", Audience("public"))
    log = canonical.log_id(descriptor)
    await node.store.put_log(log, descriptor)
    head: Head | None = None
    start_us = node.clock()
    batch = []
    for i in range(events):
        payload = make_payload(Kind.NOTE, {"text": f"Public note {i}: the picket at the depot."})
        event = sign_event(
            key,
            club=node.club,
            log=log,
            head=head,
            time_us=start_us + i,
            kind=Kind.NOTE,
            payload=payload,
        )
        head = Head(event.header.seq, event.id)
        batch.append(event)
        if len(batch) == APPEND_BATCH:
            await node.store.append(batch)
            batch = []
    if batch:
        await node.store.append(batch)
    return node


@contextlib.asynccontextmanager
async def _bare(bodies: dict[str, tuple[bytes, str]]) -> AsyncIterator[int]:
    async def handler(request: web.Request) -> web.Response:
        body, content_type = bodies[request.path]
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    for path in bodies:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    try:
        yield int(site._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


def _p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def feed(where: Path, events: int, runs: int, selected: Collection[str]) -> list[Measurement]:
    node = await _fill(where / "feed-node", events)
    loop = asyncio.get_running_loop()
    limits = FeedLimits(requests_per_s=1e9, burst=10**9)
    out: list[Measurement] = []
    async with node:
        rt = Runtime(node, node.unlock(), node.clock)
        await rt.refresh()
        async with open_feed(rt, "127.0.0.1", 0, limits) as server, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{server.port}"
            bodies: dict[str, tuple[bytes, str]] = {}
            for path, content_type in (("/feed.json", "application/json"), ("/", "text/html")):
                async with http.get(base + path) as response:
                    bodies[path] = (await response.read(), content_type)
            context = {"events": events, "concurrency": CONCURRENCY, "load_s": LOAD_S}
            spawn = multiprocessing.get_context("spawn")
            async with _bare(bodies) as bare_port:
                bare = f"http://127.0.0.1:{bare_port}"
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    for path, name in (("/feed.json", "feed_json"), ("/", "feed_page")):
                        if not ({name, "feed"} & set(selected)):
                            continue
                        rates: dict[str, list[float]] = {"feed": [], "bare": []}
                        p99: dict[str, list[float]] = {"feed": [], "bare": []}
                        for _ in range(runs):
                            for kind, url in (("feed", base + path), ("bare", bare + path)):
                                lat = await loop.run_in_executor(
                                    pool, _load, url, LOAD_S, CONCURRENCY
                                )
                                rates[kind].append(len(lat) / LOAD_S)
                                p99[kind].append(_p99_ms(lat))
                        size = len(bodies[path][0])
                        for kind in ("feed", "bare"):
                            label = name if kind == "feed" else f"{name}_bare"
                            rate = Measurement(
                                label, "requests/s", rates[kind], body_bytes=size, **context
                            )
                            out += [rate, Measurement(f"{label}_p99", "ms", p99[kind], **context)]
    return out


BENCHMARKS = ("feed_json", "feed_page")
