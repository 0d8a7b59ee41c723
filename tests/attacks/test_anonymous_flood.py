"""Anonymous clients cannot starve peers (DESIGN principle 18; protocol.md §6.1, §6.4).

Each flood is mounted against a real node over real TLS on 127.0.0.1, by raw sockets
in threads (so "never reads" means it: nothing drains the socket), from the source
addresses 127.0.0.2 and up, as a crowd would come from many hosts. During each flood
the honest peer b's sync round with a completes within ROUND_BOUND_S, b sends few
signed requests, a's store is unchanged, and the node's own counts show the flood was
really there (held, refused or closed) when b synced.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from federation.core.canonical import Kind
from federation.core.events import Head, sign_event
from federation.sync import messages
from federation.sync.messages import EVENTS_PATH, FRONTIER_PATH, MAX_MESSAGE_BYTES, Want, WantLog
from federation.web import limits, peer_api
from federation.web.peer_api import (
    GATE,
    MAX_ANONYMOUS_BODY_BYTES,
    MAX_ANONYMOUS_POLLS,
    MAX_ANONYMOUS_STREAMS,
    POLLS,
    STREAMS,
)
from tests.attacks.support import call, token
from tests.conftest import Club
from tests.harness import Federation, Member
from tests.sync.hostile_support import Held, held, sync
from tests.sync.test_hostile_client import log_of

pytestmark = pytest.mark.timeout(30)
# An honest peer's round with the flooded node completes within this (loopback).
ROUND_BOUND_S = 5.0
# The flood's source addresses: 40 hosts, none of them b's (127.0.0.1).
SOURCES = [f"127.0.0.{i}" for i in range(2, 42)]


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b"], tls=True, follow=False) as fed:
        await fed.federate("a", "b")
        await fed["a"].post(Kind.NOTE, {"text": "a's public note"}, "public")
        await fed["a"].post(Kind.NOTE, {"text": "a's federation note"}, "federation")
        yield fed


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        yield session


def _tls() -> ssl.SSLContext:
    """An anonymous client's TLS: it pins nothing (it has no invite)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _connect(port: int, source: str, *, tls: bool = True, rcvbuf: int = 0) -> socket.socket:
    raw = socket.socket()
    if rcvbuf:  # a small window: the node's writes stall as soon as we stop reading
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(5)
    raw.bind((source, 0))
    raw.connect(("127.0.0.1", port))
    return _tls().wrap_socket(raw, server_hostname="localhost") if tls else raw


def _request(method: str, target: str, body: bytes = b"", *, length: int | None = None) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if method == "POST":
        head += f"Content-Type: {messages.CONTENT_TYPE}\r\n"
        head += f"Content-Length: {len(body) if length is None else length}\r\n"
    return (head + "\r\n").encode() + body


@contextlib.contextmanager
def _sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.close()


async def _round(b: Member, a: Member) -> float:
    """b's sync round with a, which must bring a's new federation event; its seconds."""
    note = await a.post(
        Kind.NOTE, {"text": f"a, during the flood {time.monotonic()}"}, "federation"
    )
    start = time.monotonic()
    await sync(b, a.club)
    took = time.monotonic() - start
    assert note.payload in await b.payloads()
    assert took < ROUND_BOUND_S, f"b's round took {took:.2f} s during the flood"
    return took


async def _unchanged(a: Member, before: Held) -> None:
    """a's store holds what it held before the flood, and nothing new but a's own posts."""
    after = await held(a)
    assert set(before) <= set(after)
    for log, events in before.items():
        assert after[log][: len(events)] == events, (log.hex(), events, after[log])
    for log in set(after) - set(before):
        assert a.service.rt.logs[log].club == a.club


async def _grow_public_log(a: Member, n: int) -> None:
    """Append `n` public events of 60 KB to a's public log, signed by a, in one go."""
    rt = a.service.rt
    log = log_of(a, "public")
    head = rt.logs[log].head
    events = []
    for i in range(n):
        payload = b'{"text":"%d %s"}' % (i, b"x" * 60_000)
        event = sign_event(
            rt.key,
            club=a.club,
            log=log,
            head=head,
            time_us=rt.clock(),
            kind=Kind.NOTE,
            payload=payload,
        )
        events.append(event)
        head = Head(event.header.seq, event.id)
    await a.node.store.append(events)
    await a.refresh()


async def _wait_until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.05)


async def test_held_anonymous_polls_neither_make_a_peer_spin_nor_hold_it_off(
    fed: Federation, http: aiohttp.ClientSession
) -> None:
    """Today's measure: 70 held anonymous polls made a peer send 1,273-3,851 signed
    requests in 8 s, as the node answered its polls "unchanged" at once."""
    a, b = fed["a"], fed["b"]
    first = await call(http, a, "GET", f"{FRONTIER_PATH}?known=&wait=0")
    assert isinstance(first.message, messages.Frontier)
    target = f"{FRONTIER_PATH}?known={first.message.digest.hex()}&wait=30"
    before = await held(a)

    def poll(source: str) -> socket.socket:
        sock = _connect(a.port, source)
        sock.sendall(_request("GET", target))
        return sock

    with _sockets() as polls:
        # 80 polls from 20 addresses, 4 each; nobody reads their answers yet.
        for source in SOURCES[:20]:
            for _ in range(4):
                polls.append(await asyncio.to_thread(poll, source))
        anonymous = a.service.app[POLLS].anonymous
        await _wait_until(lambda: anonymous.held == MAX_ANONYMOUS_POLLS, 3, "polls held")

        # b follows a for a fixed window, as `federation run` does, while the flood holds.
        note = await a.post(Kind.NOTE, {"text": "a, during the flood"}, "federation")
        sent_before = len(b.responses)
        b.start_following()
        start = time.monotonic()

        async def arrived() -> bool:
            return note.payload in await b.payloads()

        await fed.wait_for(arrived, ROUND_BOUND_S, f"b's first round with a; {b.log_lines}")
        took = time.monotonic() - start
        await asyncio.sleep(3.0)
        sent = len(b.responses) - sent_before
        await b.stop_following()
        assert anonymous.held == MAX_ANONYMOUS_POLLS, "the flood held its slots throughout"

        # The polls past the slots were refused busy with a Retry-After, not held or spun.
        busy = 0
        for sock in polls:
            sock.setblocking(False)
            try:
                answer = sock.recv(4096)
            except (BlockingIOError, ssl.SSLWantReadError):
                continue  # held
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"Retry-After: 5" in answer
            busy += 1
        assert busy == 80 - MAX_ANONYMOUS_POLLS
    # A round (frontier, events), then one held long-poll: a handful of requests in 3 s+.
    assert sent <= 5, f"b sent {sent} signed requests"
    assert took < ROUND_BOUND_S
    await _unchanged(a, before)
    print(f"polls: b's first round {took:.2f} s, {sent} signed requests, {busy} polls busy")


async def test_streams_that_stop_reading_neither_hold_a_peer_off_nor_keep_their_slots(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's measure: 8 connections that stop reading a public stream held every
    stream slot for 75 s and more, so peers got `busy`."""
    monkeypatch.setattr(peer_api, "WRITE_STALL_S", 3.0)  # the bound, shortened to test it
    a, b = fed["a"], fed["b"]
    await _grow_public_log(a, 160)  # 10 MB: more than every buffer between us
    want = messages.encode(Want([WantLog(log_of(a, "public"), 0, 0, True)]))
    before = await held(a)
    streams = a.service.app[STREAMS].anonymous

    def stall(source: str) -> socket.socket:
        sock = _connect(a.port, source, rcvbuf=4096)
        sock.sendall(_request("POST", EVENTS_PATH, want))
        return sock  # and never read

    with _sockets() as stalled:
        for source in SOURCES[:12]:
            stalled.append(await asyncio.to_thread(stall, source))
        await _wait_until(
            lambda: streams.held == MAX_ANONYMOUS_STREAMS, 2, f"streams held ({streams.held})"
        )
        sent_before = len(b.responses)
        took = await _round(b, a)
        assert len(b.responses) - sent_before <= 3
        assert streams.held == MAX_ANONYMOUS_STREAMS, "the stalled streams were held throughout"
        # A write that does not drain within WRITE_STALL_S closes the connection.
        start = time.monotonic()
        await _wait_until(lambda: streams.held == 0, 3.0 + 2, "stalled streams dropped")
        freed = time.monotonic() - start
    await _unchanged(a, before)
    print(f"streams: b's round {took:.2f} s; stalled slots freed {freed:.2f} s after it")


async def test_idle_connections_neither_exhaust_the_node_nor_shut_out_a_peer(
    fed: Federation,
) -> None:
    """Today's measure: 246 idle TLS connections exhausted file descriptors and stopped
    peer syncs. 200 here complete their TLS handshake, 100 never start it."""
    a, b = fed["a"], fed["b"]
    before = await held(a)
    gate = a.service.app[GATE]

    def open_many(sources: list[str], each: int, tls: bool) -> list[socket.socket]:
        return [_connect(a.port, s, tls=tls) for s in sources for _ in range(each)]

    with _sockets() as idle:
        idle += await asyncio.to_thread(open_many, SOURCES[:20], 10, True)
        idle += await asyncio.to_thread(open_many, SOURCES[20:40], 5, False)
        await _wait_until(
            lambda: gate.statistics().evicted >= 300 - limits.MAX_ANONYMOUS_CONNECTIONS,
            3,
            "the flood filled the anonymous budget",
        )
        stats = gate.statistics()
        assert stats.anonymous <= limits.MAX_ANONYMOUS_CONNECTIONS
        sent_before = len(b.responses)
        took = await _round(b, a)
        assert len(b.responses) - sent_before <= 3
        assert gate.statistics().peers >= 1, "b's connection is in the peers' budget"
        # Positive control: the flood's newest connections are still open and held.
        assert gate.statistics().anonymous >= limits.MAX_ANONYMOUS_CONNECTIONS - 2
    await _unchanged(a, before)
    print(f"idle: b's round {took:.2f} s; gate {gate.statistics()}")


async def test_one_address_holds_at_most_its_share_of_connections(fed: Federation) -> None:
    """40 idle TLS connections from one address: it keeps its newest
    MAX_CONNECTIONS_PER_ADDRESS, and a peer from another address is not touched."""
    a, b = fed["a"], fed["b"]
    gate = a.service.app[GATE]
    with _sockets() as idle:
        for _ in range(40):
            idle.append(await asyncio.to_thread(_connect, a.port, SOURCES[0]))
        await _wait_until(lambda: gate.statistics().evicted >= 40 - 16, 2, "evictions")
        assert gate.statistics().anonymous == limits.MAX_CONNECTIONS_PER_ADDRESS
        await _round(b, a)
        # The oldest were closed by the node; the newest are still open.
        idle[0].settimeout(1)
        with contextlib.suppress(ConnectionResetError, ssl.SSLError):
            assert idle[0].recv(1) == b""


async def test_connections_that_never_send_a_request_are_closed(fed: Federation) -> None:
    """A TLS handshake never finished, or a request never sent after it: closed once
    FIRST_REQUEST_S has passed (shortened here; the gate counts from accept)."""
    a = fed["a"]
    gate = a.service.app[GATE]
    gate.first_request_s = 1.0
    with _sockets() as silent:
        for i in range(10):
            silent.append(await asyncio.to_thread(_connect, a.port, SOURCES[i], tls=False))
            silent.append(await asyncio.to_thread(_connect, a.port, SOURCES[i], tls=True))
        await _wait_until(lambda: gate.statistics().timed_out >= 20, 3, "silent ones closed")
        for sock in silent:
            sock.settimeout(1)
            with contextlib.suppress(ConnectionResetError, ssl.SSLError):
                assert sock.recv(1) == b"", "the node closed the connection"
    await _round(fed["b"], a)


async def test_large_anonymous_bodies_are_refused_before_they_are_read(
    fed: Federation, http: aiohttp.ClientSession
) -> None:
    """Today's measure: 24 concurrent 10 MiB anonymous bodies added 250 MB of memory.
    The body limit comes from the token, before the body: a stranger's token naming a
    partner earns no more than no token."""
    a, b = fed["a"], fed["b"]
    before = await held(a)
    stranger = Club.make(b"stranger")
    chunk = bytes(1024 * 1024)  # what the senders send, shared: our own memory stays flat
    answers: list[bytes] = []
    sent: list[int] = []
    stop = threading.Event()

    def flood(source: str, named: bool) -> None:
        sock = _connect(a.port, source)
        head = _request("POST", EVENTS_PATH, length=MAX_MESSAGE_BYTES)
        if named:  # a junk token in b's name: signed by a stranger's key
            authorization = token(b, a, "POST", EVENTS_PATH, key=stranger.key)
            head = head.replace(b"\r\n\r\n", f"\r\nAuthorization: {authorization}\r\n\r\n".encode())
        sock.sendall(head)
        # Refused from the headers alone: the answer comes before any of the body.
        answers.append(sock.recv(4096))
        total = 0
        with contextlib.suppress(OSError):  # then the body all the same, as a flood would
            while total < MAX_MESSAGE_BYTES and not stop.is_set():
                sock.sendall(chunk)
                total += len(chunk)
        sent.append(total)
        sock.close()

    baseline = _rss_bytes()
    peak = baseline

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _rss_bytes())
            await asyncio.sleep(0.02)

    threads = [
        threading.Thread(target=flood, args=(SOURCES[i], i % 2 == 1), daemon=True)
        for i in range(24)
    ]
    sampler = asyncio.create_task(sample())
    for thread in threads:
        thread.start()
    try:
        await asyncio.sleep(0.2)  # the bodies are on their way
        took = await _round(b, a)
        for thread in threads:
            await asyncio.to_thread(thread.join, 10)
    finally:
        stop.set()
        sampler.cancel()
        for thread in threads:
            await asyncio.to_thread(thread.join, 10)
    grown_mb = (peak - baseline) / 1e6
    assert len(answers) == 24
    assert all(answer.startswith(b"HTTP/1.1 413") for answer in answers), answers[:2]
    assert sum(sent) >= 24 * 1024 * 1024, "the flood really sent its bodies"
    assert grown_mb < 40, f"memory grew by {grown_mb:.0f} MB"
    # Control: b's own token earns a body past the anonymous limit; read, not refused.
    big = messages.encode(Want([WantLog(bytes([i % 256, i // 256]) * 16, 0) for i in range(3000)]))
    assert len(big) > MAX_ANONYMOUS_BODY_BYTES
    signed = await _post(http, a, big, token(b, a, "POST", EVENTS_PATH, big))
    anonymous = await _post(http, a, big, None)
    assert (signed, anonymous) == (404, 413)
    await _unchanged(a, before)
    print(f"bodies: b's round {took:.2f} s; memory grew {grown_mb:.1f} MB")


async def _post(http: aiohttp.ClientSession, a: Member, body: bytes, auth: str | None) -> int:
    headers = {} if auth is None else {"Authorization": auth}
    async with http.post(a.url + EVENTS_PATH, data=io.BytesIO(body), headers=headers) as reply:
        await reply.read()
        return reply.status


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
