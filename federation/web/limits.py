"""What an unauthenticated client can hold of a node, bounded (DESIGN principle 18,
protocol.md §6.4), with capacity for authenticated peers kept apart.

aiohttp has no cap on connections, so each of the node's listening sockets (the peer
API's, and the public feed's: web/feed.py, where no connection is ever a peer's) is
served through a gate (`GatedSite`): every accepted TCP connection is counted before its
TLS handshake, if any, per address and in total, and timed while it has no request in
progress (a handshake that never completes, a request or its headers that never come,
an idle keep-alive). A connection starts anonymous; once a request on it proves an
active peer (`Gatekeeper.promote`), it moves to the peers' own budget, where no
anonymous connection can take its place. When the anonymous budget (or one address's
share of it) is full, a new connection is not refused: the oldest anonymous connection
goes, idle ones first. So a flood of connections that hold nothing costs the flooder
its oldest connections, and a peer's (or a reader's) new connection gets in and has
time to prove itself.

A connection counts against its TCP peer's address, always: the gate counts it at
accept, before a byte of HTTP is read, so no header (X-Forwarded-For included) can
move it to another address's share. Behind a reverse proxy every connection is the
proxy's; what the feed counts per request can be the client's instead
(`feed_guard.client_address`).

Requests that hold the node for long (long-polls, event streams) take `Slots`, kept
per kind of client (peers, anonymous) and per client within them.
"""

from __future__ import annotations

import asyncio
import ipaddress
from asyncio.sslproto import SSLProtocol
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

# Connections not (yet) proven to be an active peer's: far more than the anonymous
# poll and stream slots they may hold, and with MAX_PEER_CONNECTIONS well under the
# 1,024 file descriptors a service commonly gets.
MAX_ANONYMOUS_CONNECTIONS = 128
# One address's share of them (an IPv6 /64 counts as one address: a host holds a
# /64 at least): one attacker's address cannot fill the budget alone.
MAX_CONNECTIONS_PER_ADDRESS = 16
# Connections proven to be active peers': MAX_CONNECTIONS_PER_PEER (4) for 16 peers.
MAX_PEER_CONNECTIONS = 64
# From accept to the first request's headers, TLS handshake included: a loopback
# handshake takes milliseconds, a slow link a second or two.
FIRST_REQUEST_S = 10
# An idle kept-alive connection is closed after this: longer than the 15 s after
# which aiohttp's client drops its own idle connections, so a peer never reuses a
# connection the node is closing.
IDLE_CONNECTION_S = 30.0


def address_of(peername: Any) -> str:
    """The address a connection counts against: the host, an IPv6 host's /64."""
    host = peername[0] if isinstance(peername, tuple) and peername else str(peername)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class GateStatistics(msgspec.Struct, frozen=True):
    anonymous: int  # open connections not proven to be a peer's
    peers: int  # open connections proven to be an active peer's
    evicted: int  # anonymous connections closed to let a newer one in
    timed_out: int  # connections closed for a handshake, request or idle timeout


class Connection:
    """One accepted TCP connection, from before its TLS handshake."""

    __slots__ = ("address", "handler", "peer", "requests", "timer", "transport")

    def __init__(self, address: str, transport: asyncio.Transport, handler: object) -> None:
        self.address = address
        self.transport = transport
        self.handler = handler
        self.peer = False
        self.requests = 0  # requests in progress
        self.timer: asyncio.TimerHandle | None = None


class Gatekeeper:
    """Admits, times and evicts connections (module docstring)."""

    def __init__(
        self,
        *,
        anonymous: int = MAX_ANONYMOUS_CONNECTIONS,
        per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
        peers: int = MAX_PEER_CONNECTIONS,
        first_request_s: float = FIRST_REQUEST_S,
        idle_s: float = IDLE_CONNECTION_S,
    ) -> None:
        self._max_anonymous = anonymous
        self._max_per_address = per_address
        self._max_peers = peers
        self.first_request_s = first_request_s
        self.idle_s = idle_s
        # Insertion-ordered: the oldest connection first.
        self._anonymous: dict[Connection, None] = {}
        self._by_address: dict[str, dict[Connection, None]] = {}
        self._peers: set[Connection] = set()
        self._by_handler: dict[object, Connection] = {}
        self._evicted = 0
        self._timed_out = 0

    def statistics(self) -> GateStatistics:
        return GateStatistics(
            len(self._anonymous), len(self._peers), self._evicted, self._timed_out
        )

    def open(self, transport: asyncio.Transport, handler: object) -> Connection:
        """Count a new connection, making room for it if its budget is full."""
        conn = Connection(address_of(transport.get_extra_info("peername")), transport, handler)
        same = self._by_address.get(conn.address, {})
        if len(same) >= self._max_per_address:
            self._evict(same)
        if len(self._anonymous) >= self._max_anonymous:
            self._evict(self._anonymous)
        self._anonymous[conn] = None
        self._by_address.setdefault(conn.address, {})[conn] = None
        self._by_handler[handler] = conn
        self._arm(conn, self.first_request_s)
        return conn

    def closed(self, conn: Connection) -> None:
        """Forget a connection (idempotent: an evicted one is forgotten already)."""
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._by_handler.pop(conn.handler, None)
        self._peers.discard(conn)
        if self._anonymous.pop(conn, 0) is None:
            same = self._by_address[conn.address]
            del same[conn]
            if not same:
                del self._by_address[conn.address]

    def started(self, handler: object) -> None:
        """A request on this connection is being handled: no timer runs meanwhile
        (the handler bounds its own time)."""
        conn = self._by_handler.get(handler)
        if conn is not None:
            conn.requests += 1
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None

    def finished(self, handler: object) -> None:
        conn = self._by_handler.get(handler)
        if conn is not None:
            conn.requests -= 1
            if conn.requests == 0:
                self._arm(conn, self.idle_s)

    @web.middleware
    async def counting(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """The app's outermost middleware: while a request is handled (a live stream
        for as long as it is open), its connection is not idle."""
        self.started(request.protocol)
        try:
            return await handler(request)
        finally:
            self.finished(request.protocol)

    def promote(self, handler: object) -> None:
        """A request on this connection proved an active peer: the connection moves
        to the peers' budget, if it has room (else it stays anonymous)."""
        conn = self._by_handler.get(handler)
        if conn is None or conn.peer or len(self._peers) >= self._max_peers:
            return
        self.closed(conn)
        conn.peer = True
        self._peers.add(conn)
        self._by_handler[handler] = conn

    def _evict(self, among: dict[Connection, None]) -> None:
        """Close the oldest connection of `among` with no request in progress, or the
        oldest of all if every one is busy (an anonymous long-poll or stream)."""
        victim = next((c for c in among if c.requests == 0), None) or next(iter(among))
        self._evicted += 1
        self._drop(victim)

    def _arm(self, conn: Connection, after_s: float) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = asyncio.get_running_loop().call_later(after_s, self._expire, conn)

    def _expire(self, conn: Connection) -> None:
        conn.timer = None
        if conn.requests == 0:
            self._timed_out += 1
            self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        self.closed(conn)
        conn.transport.abort()  # frees the socket now; no TLS close_notify is owed


class Slots:
    """At most `total` held at once, and at most `per_client` by one client; taken
    without waiting: a request that finds none is refused (`busy`), never queued."""

    def __init__(self, total: int, per_client: int) -> None:
        self._total = total
        self._per_client = per_client
        self._held: dict[str, int] = {}
        self.held = 0

    def take(self, client: str) -> bool:
        mine = self._held.get(client, 0)
        if self.held >= self._total or mine >= self._per_client:
            return False
        self._held[client] = mine + 1
        self.held += 1
        return True

    def client_full(self, client: str) -> bool:
        """Whether `client` holds its share (so a refusal is its own doing, not the
        total's: the answer can say what to do)."""
        return self._held.get(client, 0) >= self._per_client

    def give_back(self, client: str) -> None:
        self.held -= 1
        if self._held[client] == 1:
            del self._held[client]
        else:
            self._held[client] -= 1


@dataclass(frozen=True)
class Pool:
    """One kind of slot, for active peers and for everyone else apart: a crowd of
    anonymous readers never takes what the peers need."""

    peers: Slots
    anonymous: Slots

    def of(self, peer: bool) -> Slots:
        return self.peers if peer else self.anonymous


class _Gate:
    """The protocol of one accepted connection: counts it, then hands every event to
    the inner protocol (aiohttp's request handler, or the TLS layer around it)."""

    def __init__(self, keeper: Gatekeeper, inner: Any, handler: object) -> None:
        self._keeper = keeper
        self._inner = inner
        self._handler = handler
        self._conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn = self._keeper.open(cast(asyncio.Transport, transport), self._handler)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._keeper.closed(self._conn)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result


class _PlainGate(_Gate, asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)


class _TLSGate(_Gate, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint: int) -> Any:
        return self._inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._inner.buffer_updated(nbytes)


class GatedSite(web.TCPSite):
    """aiohttp's TCPSite with every connection through a `Gatekeeper`. The TLS layer
    is made here, below the gate, so a connection is counted and timed from accept,
    not from the end of its handshake (asyncio's own server would hide it until then)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: Any,
        gate: Gatekeeper,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        context = self._ssl_context

        def accept() -> asyncio.BaseProtocol:
            handler: RequestHandler = server()
            if context is None:
                return _PlainGate(self.gate, handler, handler)
            tls = SSLProtocol(
                loop,
                handler,
                context,
                None,  # type: ignore[arg-type]  # nobody awaits the handshake: the gate times it
                server_side=True,
                ssl_handshake_timeout=FIRST_REQUEST_S,
            )
            return _TLSGate(self.gate, tls, handler)

        self._server = await loop.create_server(
            accept, self._host, self._port, backlog=self._backlog
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]
