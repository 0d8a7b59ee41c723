"""Real club nodes in one test process: real SQLite files, real HTTP(S) on 127.0.0.1:0.

    async with Federation.open(tmp_path, ["a", "b", "c"]) as fed:
        await fed.federate("a", "b")           # each adds the other's invite
        await fed["a"].post(Kind.NOTE, {"text": "hi"}, "federation")
        await fed.wait_for(lambda: ...)         # bounded in time

Each member runs the real service (peer API + follow loops). Keys are stored
unencrypted (init with passphrase None) so tests do not pay scrypt per node.
`record` captures every response body a node's client receives, for privacy tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

from federation import peers
from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.core.log import parse_audience
from federation.node import Node, init_node
from federation.service import Service, open_service

WAIT_S = 10.0


class Member:
    def __init__(self, name: str, node: Node, service: Service, tls: bool) -> None:
        self.name = name
        self.node = node
        self.service = service
        self.tls = tls
        self.received: list[bytes] = []  # response bodies this node's client received
        self.log_lines: list[str] = []
        self.follow: asyncio.Task[None] | None = None

    @property
    def club(self) -> bytes:
        return self.node.club

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.service.port}"

    async def invite(self) -> str:
        return await peers.invite(self.node, self.url)

    async def post(
        self, kind: Kind, fields: dict[str, Any], audience: str, log: str | None = None
    ) -> VerifiedEvent:
        _, event = await self.node.post(kind, fields, parse_audience(audience), log)
        await self.service.rt.refresh()  # as the store watcher would, without the wait
        return event

    async def payloads(self) -> set[bytes]:
        """Every payload this node's store holds."""
        found: set[bytes] = set()
        for record in await self.node.store.logs():
            for event in await self.node.store.events(record.id, 0, 1_000_000):
                if event.payload is not None:
                    found.add(event.payload)
        return found

    async def heads(self) -> dict[bytes, int]:
        return {r.id: r.head.seq for r in await self.node.store.logs() if r.head is not None}

    async def stop_following(self) -> None:
        """Cancel this node's follow loops (its server keeps answering peers)."""
        if self.follow is not None:
            self.follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.follow
            self.follow = None


def _recorder(sink: list[bytes]) -> Callable[..., Any]:
    async def on_chunk(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        sink.append(bytes(params.chunk))

    return on_chunk


class Federation:
    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self._stack = contextlib.AsyncExitStack()

    def __getitem__(self, name: str) -> Member:
        return self.members[name]

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, root: Path, names: list[str], *, tls: bool = True, follow: bool = True
    ) -> AsyncIterator[Federation]:
        fed = cls()
        async with fed._stack:
            try:
                for name in names:
                    await fed.add(root, name, tls=tls, follow=follow)
                yield fed
            finally:  # also when the test failed: no follow loop may outlive its service
                for member in fed.members.values():
                    await member.stop_following()

    async def add(self, root: Path, name: str, *, tls: bool = True, follow: bool = True) -> Member:
        path = root / name
        await init_node(
            path, name=f"Club {name}", listen="127.0.0.1:0", passphrase=None, plain_http=not tls
        )
        node = await self._stack.enter_async_context(await Node.open(path))
        service = await self._stack.enter_async_context(open_service(node, port=0))
        member = Member(name, node, service, tls)
        # Record what this node receives from peers: the bytes on the wire, decrypted.
        trace = aiohttp.TraceConfig()
        trace.on_response_chunk_received.append(_recorder(member.received))
        recording = aiohttp.ClientSession(trace_configs=[trace])
        service.http = await self._stack.enter_async_context(recording)
        if follow:
            member.follow = asyncio.create_task(service.follow_peers(member.log_lines.append))
        self.members[name] = member
        return member

    async def federate(self, a: str, b: str) -> None:
        """Each club adds the other from its invite (federation is mutual and chosen)."""
        invite_a, invite_b = await self[a].invite(), await self[b].invite()
        await peers.add(self[a].node, invite_b)
        await peers.add(self[b].node, invite_a)
        await self[a].service.rt.refresh()
        await self[b].service.rt.refresh()

    async def wait_for(
        self, condition: Callable[[], Any], timeout_s: float = WAIT_S, what: str = ""
    ) -> None:
        """Poll an async or sync condition until true; fail the test after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for {what or condition}"
                )
            await asyncio.sleep(0.05)
