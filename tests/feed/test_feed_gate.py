"""The feed's connections are bounded as the peer API's are (DESIGN principle 18):
counted and timed from accept by the gate (web/limits.py), with small limits passed
through FeedLimits so each test takes a few seconds.

Each flood comes over real TCP to a real feed on 127.0.0.1, from the source addresses
127.0.0.2 and up (as a crowd would come from many hosts); the honest reader is
127.0.0.1. A connection the node closed reads as end of file (or a reset: the gate
aborts); one it holds reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from federation.core.canonical import Kind
from federation.web.feed import make_feed_app
from federation.web.feed_guard import FeedLimits
from federation.web.limits import GateStatistics
from tests.feed.support import feed_federation
from tests.feed.test_live_and_config import next_item
from tests.harness import serve_app

pytestmark = pytest.mark.timeout(30)
SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]
# What the tests' gates allow: small, so a flood is a few dozen connections.
CONNECTIONS = 8
PER_ADDRESS = 4
# The deadlines shortened: a slow client is closed within a second.
FIRST_REQUEST_S = 0.5
IDLE_S = 0.5
# A held connection reads nothing for this long: several times either deadline.
HELD_S = 1.5

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _limits(
    *, first_request_s: float = 5.0, idle_s: float = 5.0, live_ping_s: float = 15.0
) -> FeedLimits:
    return FeedLimits(
        connections=CONNECTIONS,
        connections_per_address=PER_ADDRESS,
        first_request_s=first_request_s,
        idle_s=idle_s,
        live_ping_s=live_ping_s,
        response_cache_s=0.0,
    )


@contextlib.asynccontextmanager
async def _open_connections() -> AsyncIterator[Callable[[int, str], Awaitable[Stream]]]:
    """Raw TCP connections from a given source address, all closed at the end."""
    opened: list[asyncio.StreamWriter] = []

    async def connect(port: int, source: str) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        opened.append(writer)
        return reader, writer

    try:
        yield connect
    finally:
        for writer in opened:
            writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the node closes this connection (which was sent nothing) within `seconds`."""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    assert data == b"", f"the node sent {data!r} unasked"
    return True


async def _wait_until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.02)


async def _slowloris(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    """Send a request's headers a line every 0.1 s, never ending them; the seconds
    until the node closed the connection (or HELD_S * 2 if it never did)."""
    start = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for i in range(int(HELD_S * 2 / 0.1)):
        with contextlib.suppress(ConnectionError):
            writer.write(b"X-Slow-%d: still coming\r\n" % i)
            await writer.drain()
        if await _closed_within(reader, 0.1):
            return time.monotonic() - start
    return HELD_S * 2


async def test_a_flood_of_idle_connections_does_not_shut_out_a_reader(tmp_path: Path) -> None:
    """One address keeps its newest PER_ADDRESS; many addresses fill the total and
    their oldest go; an honest reader still gets the page."""
    async with (
        feed_federation(tmp_path, ("a",), _limits()) as (_, feed),
        _open_connections() as connect,
    ):
        gate = feed.server.gate
        port = feed.server.port
        one = [await connect(port, SOURCES[0]) for _ in range(10)]
        await _wait_until(lambda: gate.statistics().evicted >= 10 - PER_ADDRESS, 2, "evictions")
        assert gate.statistics().anonymous == PER_ADDRESS
        assert await _closed_within(one[0][0], 1.0), "the address's oldest was closed"
        # Positive control: the test sees a held connection; the newest are held.
        assert not any([await _closed_within(r, 0.05) for r, _ in one[-PER_ADDRESS:]])

        many = [await connect(port, s) for s in SOURCES[1:5] for _ in range(PER_ADDRESS)]
        # The address's own 6, then 4 + 16 held past the total of 8.
        evicted = (10 - PER_ADDRESS) + (PER_ADDRESS + len(many) - CONNECTIONS)
        await _wait_until(lambda: gate.statistics().evicted == evicted, 2, "evictions")
        assert gate.statistics().anonymous == CONNECTIONS
        assert not await _closed_within(many[-1][0], 0.05), "the newest is held"

        # The honest reader, from an address of its own, gets the page and the JSON.
        assert b"Public feed" in await feed.get("/")
        assert (await feed.fetch("/feed.json"))[0] == 200
        assert gate.statistics().anonymous <= CONNECTIONS
        print(f"flood: gate {gate.statistics()}")


async def test_a_slowloris_is_closed_at_the_first_request_deadline(tmp_path: Path) -> None:
    """Headers a line at a time never complete a request: closed FIRST_REQUEST_S after
    accept; the same between requests on a kept-alive connection (IDLE_S)."""
    limits = _limits(first_request_s=FIRST_REQUEST_S, idle_s=IDLE_S)
    async with (
        feed_federation(tmp_path, ("a",), limits) as (_, feed),
        _open_connections() as connect,
    ):
        gate = feed.server.gate
        took = await _slowloris(*await connect(feed.server.port, SOURCES[0]))
        assert FIRST_REQUEST_S - 0.1 <= took < FIRST_REQUEST_S + 1.0, f"closed after {took:.2f} s"
        assert gate.statistics().timed_out == 1

        # One whole request answered, then the next one's headers trickle: closed
        # IDLE_S after the answer.
        reader, writer = await connect(feed.server.port, SOURCES[1])
        writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await asyncio.wait_for(reader.readexactly(length), 5)
        took = await _slowloris(reader, writer)
        assert IDLE_S - 0.1 <= took < IDLE_S + 1.0, f"closed after {took:.2f} s"
        assert gate.statistics().timed_out == 2
        # The node still answers a reader.
        assert b"Public feed" in await feed.get("/")


async def test_without_the_gate_the_same_clients_are_held(tmp_path: Path) -> None:
    """Positive control for the tests above: the same feed app on aiohttp's own
    TCPSite (no gate) holds the slowloris past the deadline many times over, and
    holds every connection of an idle flood twice the gate's total, none evicted: the
    tests can see a held connection, and the gate is what closes them."""
    limits = _limits(first_request_s=FIRST_REQUEST_S, idle_s=IDLE_S)
    async with (
        feed_federation(tmp_path, ("a",), limits) as (_, feed),
        _open_connections() as connect,
        serve_app(make_feed_app(feed.server.index, limits)) as port,
    ):
        flood = [await connect(port, s) for s in SOURCES[1:5] for _ in range(PER_ADDRESS)]
        assert len(flood) == 2 * CONNECTIONS
        took = await _slowloris(*await connect(port, SOURCES[0]))
        assert took == HELD_S * 2, f"closed after {took:.2f} s"
        assert not any([await _closed_within(r, 0.05) for r, _ in flood])
        assert feed.server.gate.statistics() == GateStatistics(0, 0, 0, 0)


async def test_a_live_stream_outlives_the_idle_timeout(tmp_path: Path) -> None:
    """A live stream is a request in progress: nothing is sent on it for three
    times IDLE_S (pings are 30 s apart here), then a new item still arrives. An idle
    connection opened beside it is closed meanwhile: the deadline was in force."""
    limits = _limits(first_request_s=FIRST_REQUEST_S, idle_s=IDLE_S, live_ping_s=30.0)
    async with (
        feed_federation(tmp_path, ("a",), limits) as (fed, feed),
        _open_connections() as connect,
    ):
        async with feed.http.get(feed.base + "/live") as stream:
            assert stream.status == 200
            idle, _ = await connect(feed.server.port, SOURCES[0])
            started = time.monotonic()
            assert await _closed_within(idle, HELD_S), "the idle connection was closed"
            await asyncio.sleep(max(0.0, started + 3 * IDLE_S - time.monotonic()))
            event = await fed["a"].post(Kind.NOTE, {"text": "after the idle timeout"}, "public")
            ident, data = await next_item(stream)
            assert (ident, data["title"]) == (event.id.hex(), "after the idle timeout")
            assert time.monotonic() - started >= 3 * IDLE_S
        assert feed.server.gate.statistics().timed_out == 1  # the idle one only
