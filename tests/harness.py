"""Real club nodes in one test process: real SQLite files, real HTTP(S) on 127.0.0.1:0.

    async with Federation.open(tmp_path, ["a", "b", "c"]) as fed:
        await fed.federate("a", "b")           # each adds the other's invite
        await fed["a"].post(Kind.NOTE, {"text": "hi"}, "federation")
        await fed.wait_for(lambda: ...)         # bounded in time

Each member runs the real service (peer API + follow loops). Keys are stored
unencrypted (init with passphrase None) so tests do not pay scrypt per node.
Every response body a node's client receives is captured (`received`, chunk by
chunk, and `responses`, whole and by path), for privacy tests. A member can be
stopped and started again on its directory and port (`stop`, `start`, `restart`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.core.log import parse_audience
from federation.node import peering
from federation.node.node import Node, init_node
from federation.service import Service, open_service
from federation.web.client import Tap

WAIT_S = 10.0


def free_port() -> int:
    """A port nothing listens on right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[int]:
    """Serve `app` over plain HTTP on 127.0.0.1, on a free port (yielded), for the
    block's duration: a test's own server (a hostile peer, a relay, an ungated feed)."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        yield int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


class Response:
    """One response this node's client received: its request and its whole body."""

    def __init__(self, method: str, url: URL) -> None:
        self.method = method
        self.url = url
        self.path = url.path
        self.port = url.port  # which member answered
        self.body = bytearray()


class Member:
    def __init__(self, name: str, node: Node, service: Service, tls: bool) -> None:
        self.name = name
        self.node = node
        self.service = service
        self.tls = tls
        self.received: list[bytes] = []  # response bodies this node's client received
        self.responses: list[Response] = []  # the same, one whole body per response
        self.log_lines: list[str] = []
        self.follow: asyncio.Task[None] | None = None
        self.stack = contextlib.AsyncExitStack()  # closes the node: see Federation.stop

    @property
    def root(self) -> Path:
        return self.node.paths.root

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def club(self) -> bytes:
        return self.node.club

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.service.port}"

    async def invite(self) -> str:
        return await peering.invite(self.node, self.url)

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

    async def refresh(self) -> None:
        """Reload the running node's caches after writing to its store in the test."""
        await self.service.rt.refresh()

    async def add_peer(self, other: Member) -> None:
        """This club adds the other from its invite (one way only)."""
        await peering.add(self.node, await other.invite())
        await self.refresh()

    def check_follow(self) -> None:
        """Fail at once if the follow loops died (they must survive anything a peer does)."""
        if self.follow is not None and self.follow.done() and not self.follow.cancelled():
            error = self.follow.exception()
            if error is not None:
                raise AssertionError(f"{self.name}: follow loops crashed: {error!r}") from error

    def start_following(self) -> None:
        """Run this node's follow loops (as `federation run` does)."""
        assert self.follow is None, f"{self.name} is following already"
        self.follow = asyncio.create_task(self.service.follow_peers(self.log_lines.append))

    async def stop_following(self) -> None:
        """Cancel this node's follow loops (its server keeps answering peers)."""
        if self.follow is not None:
            self.follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.follow
            self.follow = None


def _recorder(member: Member) -> Tap:
    """Record what this node receives from peers: the bytes on the wire, decrypted.

    Through PeerClient's tap, not an aiohttp trace: aiohttp's chunk traces do not fire
    for streamed reads, and a recorder that records nothing makes privacy tests pass
    without checking anything."""

    def tap(url: str, chunk: bytes) -> None:
        if not chunk:  # a response starts
            member.responses.append(Response("GET" if "frontier" in url else "POST", URL(url)))
            return
        member.received.append(bytes(chunk))
        # The latest response from this URL: peers answer concurrently, so not just [-1].
        target = URL(url)
        response = next(r for r in reversed(member.responses) if r.url == target)
        response.body += chunk

    return tap


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
        return await self.start(path, name, follow=follow)

    async def start(self, path: Path, name: str, *, port: int = 0, follow: bool = True) -> Member:
        """Open the node in `path` and run it as member `name` (port 0: any free port)."""
        stack = contextlib.AsyncExitStack()
        self._stack.push_async_callback(stack.aclose)  # a no-op once stopped
        async with contextlib.AsyncExitStack() as on_error:
            on_error.push_async_callback(stack.aclose)
            node = await stack.enter_async_context(await Node.open(path))
            service = await stack.enter_async_context(open_service(node, port=port))
            member = Member(name, node, service, not node.config.node.plain_http)
            member.stack = stack
            service.tap = _recorder(member)
            on_error.pop_all()
        if follow:
            member.start_following()
        self.members[name] = member
        return member

    async def stop(self, name: str) -> Member:
        """Stop a member as a shut-down node stops: follow loops, server, store."""
        member = self[name]
        await member.stop_following()
        await member.stack.aclose()
        return member

    async def restart(self, name: str, *, follow: bool = True) -> Member:
        """Stop a member (if running) and start a new one on its directory and port."""
        old = self[name]
        if old.follow is not None or not old.service.rt.closing:
            await self.stop(name)
        return await self.start(old.root, name, port=old.port, follow=follow)

    async def federate(self, a: str, b: str) -> None:
        """Each club adds the other from its invite (federation is mutual and chosen)."""
        invite_a, invite_b = await self[a].invite(), await self[b].invite()
        await peering.add(self[a].node, invite_b)
        await peering.add(self[b].node, invite_a)
        await self[a].service.rt.refresh()
        await self[b].service.rt.refresh()

    async def wait_for(
        self, condition: Callable[[], Any], timeout_s: float = WAIT_S, what: str = ""
    ) -> None:
        """Poll an async or sync condition until true; fail the test after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            for member in self.members.values():
                member.check_follow()
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
