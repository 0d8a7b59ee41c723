"""`federation run`: serve peers and follow every active peer, until stopped.

Everything runs under one TaskGroup: the HTTP server, the control socket (the CLI's
writing commands, carried out here: node/control.py), the store watcher, and one
follow loop per active peer, started and stopped as peers are added, paused or
removed (through the control socket, or by another process: the watcher sees the
store change).

A service holds the node directory's run lock (node/lock.py) while it is open: one
node directory, one serving process. It stops from one place (`Service.serve`
returns when asked to stop): the follow loops are cancelled by the TaskGroup that
owns them, then `open_service` closes what it opened in the reverse order, each
step bounded (`SHUTDOWN_S`), so a stop never waits out a peer's long-poll or a slow
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from federation.core.config import FeedSection, parse_listen, parse_trusted_proxies
from federation.errors import ConfigError, KeyFileError
from federation.node import lock
from federation.node.control import ControlServer, open_control
from federation.node.follow import follow_peer
from federation.node.node import Node
from federation.node.runtime import Runtime
from federation.node.tasks import open_task_group
from federation.web.client import PeerClient, Tap
from federation.web.feed import FeedServer, open_feed
from federation.web.feed_guard import FeedLimits
from federation.web.limits import IDLE_CONNECTION_S, GatedSite
from federation.web.peer_api import GATE, make_app

# Keep-alive connections to peers: one long-poll and one stream each, at most.
MAX_CONNECTIONS_PER_PEER = 4
# At a stop, requests still being answered (a stream of events to a slow peer) get
# this long to finish before they are cancelled; long-polls answer at once (the
# runtime closes first). aiohttp's default is 60 s: a stop then seemed to hang.
SHUTDOWN_S = 1.0


def server_ssl(node: Node) -> ssl.SSLContext | None:
    if node.config.node.plain_http:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(node.paths.tls_cert, node.paths.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise KeyFileError(
            f"cannot load the node's TLS certificate ({node.paths.tls_cert}, "
            f"{node.paths.tls_key}): {exc}; restore both files from your backup",
            path=str(node.paths.tls_key),
        ) from None
    return context


class Service:
    def __init__(
        self, rt: Runtime, port: int, http: aiohttp.ClientSession, app: web.Application
    ) -> None:
        self.rt = rt
        self.port = port
        self.http = http
        self.app = app  # the peer API: its gate and slots say what clients hold (tests)
        self.tap: Tap | None = None  # see PeerClient
        self.feed: FeedServer | None = None  # the public feed, if [feed] listen is set
        self.control: ControlServer | None = None  # the control socket, once open

    def client(self, club: bytes) -> PeerClient:
        return PeerClient(
            self.http,
            self.rt.peers[club],
            me=self.rt.club,
            key=self.rt.key,
            clock=self.rt.clock,
            tap=self.tap,
        )

    def _loop_id(self, url: str, fingerprint: bytes) -> bytes:
        return url.encode() + fingerprint + self.rt.key.public

    async def serve(self, stopped: asyncio.Event) -> None:
        """Follow every active peer until `stopped` is set (the server is already up).
        A follow loop's failure ends it too (raised here, after the others stop)."""
        async with open_task_group() as group:
            following = group.create_task(self.follow_peers())
            await stopped.wait()
            following.cancel()

    async def follow_peers(self, log: Callable[[str], None] | None = None) -> None:
        """Run one follow loop per active peer, adjusting as the peer list changes.
        Each loop logs through `logging`; `log` also receives its lines (tests)."""
        async with asyncio.TaskGroup() as group:
            running: dict[bytes, tuple[asyncio.Task[None], bytes]] = {}
            # Once the runtime closes, wait_changed returns at once: looping on would spin.
            while not self.rt.closing:
                version = self.rt.version
                wanted = {c: p for c, p in self.rt.peers.items() if p.state == "active"}
                for club, (task, url) in list(running.items()):
                    peer = wanted.get(club)
                    # A new url or certificate, or our key rotated (protocol.md §2.2:
                    # requests are signed by the current key): restart the loop.
                    if peer is None or self._loop_id(peer.url, peer.fingerprint) != url:
                        task.cancel()
                        del running[club]
                for club, peer in wanted.items():
                    if club not in running:
                        task = group.create_task(follow_peer(self.rt, self.client(club), log))
                        running[club] = (task, self._loop_id(peer.url, peer.fingerprint))
                await self.rt.wait_changed(version, 3600)
            for task, _ in running.values():
                task.cancel()


def _open_feed(
    rt: Runtime, section: FeedSection, port: int | None
) -> contextlib.AbstractAsyncContextManager[FeedServer]:
    host, configured = parse_listen(section.listen, "feed.listen")
    limits = FeedLimits(trusted_proxies=parse_trusted_proxies(section.trusted_proxies))
    return open_feed(rt, host, configured if port is None else port, limits)


@contextlib.asynccontextmanager
async def open_service(
    node: Node, *, host: str | None = None, port: int | None = None, feed_port: int | None = None
) -> AsyncIterator[Service]:
    """Start serving (host/port override the config: tests bind port 0; so does
    feed_port, for the feed, which is served only when the config has [feed]).
    Refused (StoreError naming the pid) while another process serves the node."""
    with lock.hold(node.paths.root):
        async with _open_service(node, host, port, feed_port) as service:
            yield service


@contextlib.asynccontextmanager
async def _open_service(
    node: Node, host: str | None, port: int | None, feed_port: int | None
) -> AsyncIterator[Service]:
    key = node.unlock()
    rt = Runtime(node, key, node.clock)
    await rt.refresh()
    listen_host, listen_port = parse_listen(node.config.node.listen)
    app = make_app(rt)
    # A handler whose client went away is cancelled (a dropped long-poll frees its
    # slot at once); an idle kept-alive connection closes as the gate would close it.
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        keepalive_timeout=IDLE_CONNECTION_S,
        shutdown_timeout=SHUTDOWN_S,
    )
    await runner.setup()
    try:
        # Every connection is counted and timed from accept (web.limits, §6.4).
        site = GatedSite(
            runner,
            host or listen_host,
            listen_port if port is None else port,
            ssl_context=server_ssl(node),
            gate=app[GATE],
        )
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host or listen_host}:{listen_port if port is None else port}"
                f" ({exc.strerror or exc}); is another node running there? change node.listen",
                field="node.listen",
            ) from None
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        connector = aiohttp.TCPConnector(limit_per_host=MAX_CONNECTIONS_PER_PEER)
        async with aiohttp.ClientSession(connector=connector) as http, open_task_group() as group:
            watcher = group.create_task(rt.watch_store())
            try:
                service = Service(rt, int(bound), http, app)
                async with contextlib.AsyncExitStack() as feed:
                    # Commands that write come to us through it (node/control.py).
                    service.control = await feed.enter_async_context(open_control(rt))
                    if node.config.feed is not None:
                        service.feed = await feed.enter_async_context(
                            _open_feed(rt, node.config.feed, feed_port)
                        )
                    yield service
            finally:
                watcher.cancel()
    finally:
        await rt.close()
        await runner.cleanup()
