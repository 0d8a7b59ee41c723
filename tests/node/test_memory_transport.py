"""Many nodes syncing over MemoryTransport: real nodes and SQLite stores in tmp_path,
the real serving code and the wire encoding, no sockets (the PeerTransport seam).
The same behaviour over real HTTP and TLS is tests/sync/test_multinode.py's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from unittest import mock

import pytest

from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.core.log import parse_audience
from federation.node import peering, serving
from federation.node.follow import RoundResult, follow_peer, sync_round
from federation.node.node import Node, init_node
from federation.node.runtime import Runtime
from federation.node.transport import MemoryTransport, PeerTransport
from federation.sync import serve
from federation.sync.messages import Error, Frontier, Want, WantLog
from federation.web.client import PeerClient

pytestmark = pytest.mark.timeout(30)


class Club:
    """One club's node, running without a server: its runtime serves over memory."""

    def __init__(self, name: str, node: Node, rt: Runtime, port: int) -> None:
        self.name = name
        self.node = node
        self.rt = rt
        self.port = port  # in its invite only: nothing listens

    @property
    def club(self) -> bytes:
        return self.node.club

    async def post(self, text: str, audience: str) -> VerifiedEvent:
        _, event = await self.node.post(Kind.NOTE, {"text": text}, parse_audience(audience))
        await self.rt.refresh()
        return event

    async def payloads(self) -> set[bytes]:
        found: set[bytes] = set()
        for record in await self.node.store.logs():
            for event in await self.node.store.events(record.id, 0, 1_000_000):
                if event.payload is not None:
                    found.add(event.payload)
        return found

    def transport(self, server: Club) -> MemoryTransport:
        """This club's transport to `server`, a peer it added."""
        return MemoryTransport(self.rt.peers[server.club], server.rt, me=self.club)

    async def pull(self, server: Club) -> RoundResult:
        return await sync_round(self.rt, self.transport(server), known=None, wait_s=0.0)


@contextlib.asynccontextmanager
async def open_clubs(root: Path, *names: str) -> AsyncIterator[dict[str, Club]]:
    async with contextlib.AsyncExitStack() as stack:
        clubs: dict[str, Club] = {}
        for name in names:
            path = root / name
            await init_node(
                path, name=f"Club {name}", listen="127.0.0.1:0", passphrase=None, plain_http=True
            )
            node = await stack.enter_async_context(await Node.open(path))
            rt = Runtime(node, node.unlock(), node.clock)
            await rt.refresh()
            stack.push_async_callback(rt.close)
            clubs[name] = Club(name, node, rt, port=len(clubs) + 1)
        yield clubs


async def federate(a: Club, b: Club) -> None:
    """Each adds the other from its invite (the url is never dialled here)."""
    invite_a = await peering.invite(a.node, f"http://127.0.0.1:{a.port}")
    invite_b = await peering.invite(b.node, f"http://127.0.0.1:{b.port}")
    await peering.add(a.node, invite_b)
    await peering.add(b.node, invite_a)
    await a.rt.refresh()
    await b.rt.refresh()


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[dict[str, Club]]:
    """a - b - c: a and c do not federate."""
    async with open_clubs(tmp_path, "a", "b", "c") as clubs:
        await federate(clubs["a"], clubs["b"])
        await federate(clubs["b"], clubs["c"])
        yield clubs


async def test_three_nodes_audience_respected_and_a_relay(trio: dict[str, Club]) -> None:
    a, b, c = trio["a"], trio["b"], trio["c"]
    secret = await a.post("a private plan", "private")
    shared = await a.post("for a's federation", "federation")
    public = await a.post("for everyone", "public")
    result = await b.pull(a)
    assert result.complete
    assert result.added > 0
    held_b = await b.payloads()
    assert shared.payload in held_b
    assert public.payload in held_b
    assert secret.payload not in held_b

    # c takes a's events from b: the public one only, since c is not in a's roster.
    assert (await c.pull(b)).complete
    held_c = await c.payloads()
    assert public.payload in held_c
    assert shared.payload not in held_c
    assert secret.payload not in held_c

    # A second round with the digest kept is unchanged, and takes nothing.
    first = await c.pull(b)
    again = await sync_round(c.rt, c.transport(b), known=first.digest, wait_s=0.0)
    assert (again.complete, again.changed, again.added) == (True, False, 0)


async def test_an_anonymous_reader_gets_public_logs_only(trio: dict[str, Club]) -> None:
    a, b = trio["a"], trio["b"]
    await a.post("for a's federation", "federation")
    await a.post("for everyone", "public")
    anonymous = MemoryTransport(b.rt.peers[a.club], a.rt, me=None)
    answer = await anonymous.frontier(None, 0)
    assert isinstance(answer, Frontier)
    assert answer.logs is not None
    shown = {entry.log for entry in answer.logs}
    assert shown == {log for log, r in a.rt.logs.items() if r.audience == parse_audience("public")}


async def test_a_log_not_for_the_requester_is_refused_like_none(trio: dict[str, Club]) -> None:
    a, b, c = trio["a"], trio["b"], trio["c"]
    await a.post("for a's federation", "federation")
    federation_log = next(
        log
        for log, r in a.rt.logs.items()
        if r.club == a.club and r.audience == parse_audience("federation")
    )
    # c asks a (whom it never added) for a's federation log, as b's transport would.
    asking = MemoryTransport(b.rt.peers[a.club], a.rt, me=c.club)
    answers = [m async for m in asking.events(Want([WantLog(federation_log, 0)]))]
    assert answers == [Error("unknown_log", f"no log {federation_log.hex()[:16]} for you here")]


async def test_more_is_asked_again_until_complete(trio: dict[str, Club]) -> None:
    a, b = trio["a"], trio["b"]
    posted = [await a.post(f"note {i}", "federation") for i in range(12)]
    wants: list[Want] = []
    transport = b.transport(a)
    events = transport.events

    def counting(want: Want) -> object:
        wants.append(want)
        return events(want)

    with (
        mock.patch.object(serve, "MAX_EVENTS_PER_RESPONSE", 5),
        mock.patch.object(serve, "BATCH_MAX_EVENTS", 2),
        mock.patch.object(transport, "events", counting),
    ):
        result = await sync_round(b.rt, transport, known=None, wait_s=0.0)
    assert result.complete
    assert len(wants) >= 3
    held = await b.payloads()
    assert all(e.payload in held for e in posted)


async def test_the_long_poll_waits_by_the_injected_clock(trio: dict[str, Club]) -> None:
    a, b = trio["a"], trio["b"]
    first = await serving.frontier(a.rt, b.club, b"", 0)
    assert first.logs is not None
    # A clock that has passed the deadline at its next reading: unchanged at once.
    readings = iter([0, 10**12])
    unchanged = await serving.frontier(a.rt, b.club, first.digest, 30, clock=lambda: next(readings))
    assert unchanged == Frontier(first.digest, None)
    # A held poll answers as soon as something the requester may see changes.
    poll = asyncio.create_task(serving.frontier(a.rt, b.club, first.digest, 30))
    await asyncio.sleep(0.05)
    assert not poll.done()
    await a.post("news", "federation")
    changed = await asyncio.wait_for(poll, 5)
    assert changed.digest != first.digest
    assert changed.logs is not None


async def test_follow_loops_relay_a_new_event_promptly(trio: dict[str, Club]) -> None:
    a, b, c = trio["a"], trio["b"], trio["c"]
    lines: list[str] = []
    pairs: list[tuple[Club, Club]] = [(b, a), (a, b), (c, b), (b, c)]
    async with asyncio.TaskGroup() as group:
        loops = [
            group.create_task(follow_peer(x.rt, x.transport(y), lines.append)) for x, y in pairs
        ]
        public = await a.post("for everyone, through b", "public")
        await eventually(c, lambda: holds(c, public.payload))
        for loop in loops:
            loop.cancel()
    assert not [line for line in lines if "error" in line or "FORK" in line], lines


async def holds(club: Club, payload: bytes | None) -> bool:
    return payload in await club.payloads()


async def eventually(club: Club, condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `condition`, looking again each time the club's store changes."""
    async with asyncio.timeout(10):
        while True:
            version = club.rt.version
            if await condition():
                return
            await club.rt.wait_changed(version, 1.0)


def _both_are_peer_transports(memory: MemoryTransport, http: PeerClient) -> list[PeerTransport]:
    """Checked by mypy, not run: each implementation fits the seam."""
    return [memory, http]
