"""What guards the feed's HTTP surface: headers on every response, a per-address
request rate, live streams bounded in all and per address, the caps and deadlines of
its connections (`FeedLimits`, applied by web/limits.py's gate), and the query
parameters, parsed and bounded.

Everything one client can hold is bounded per address as well as in all (an IPv6 /64
counts as one address, `limits.address_of`, the gate's rule): a cap in all alone lets
one address take the whole of it and shut everyone else out.

The feed is for anyone, unauthenticated, so everything a client can make it do is
bounded (DESIGN principle 18) and nothing on it identifies or follows a reader: no
cookies, no third-party requests (the Content-Security-Policy says so to the browser
too), no referrer sent on.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from federation.core.config import Network
from federation.core.evidence import kind_name
from federation.views.feed import MAX_PAGE_ITEMS, PAGE_ITEMS, Filter, parse_cursor, parse_kind
from federation.web.limits import FIRST_REQUEST_S, IDLE_CONNECTION_S, address_of

# Sent with every response, errors included (aiohttp's on_response_prepare).
SECURITY_HEADERS = {
    # No inline script or style, nothing from elsewhere, no framing, no plugins.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "interest-cohort=(), browsing-topics=()",
    "X-Frame-Options": "DENY",
}


# Header lines in one request. A browser sends 10 to 20, a proxy adds a few; aiohttp's
# default (128 lines of up to 8 KiB each) let one connection hold a megabyte while its
# headers trickle in, 96 MiB from one address's share of connections. At 32 a
# connection holds at most 32 lines of 8 KiB; past it the request is refused (400).
MAX_HEADER_LINES = 32


@dataclass(frozen=True)
class FeedLimits:
    # One address's requests: a reader refreshing, a feed reader polling and a few
    # scripts stay far below; a loop hammering the node is slowed to this.
    requests_per_s: float = 20.0
    burst: int = 200
    # Addresses remembered at once: the least recently seen is forgotten past this,
    # so a flood of addresses costs bounded memory (it then starts with a full bucket).
    addresses: int = 10_000
    # Live streams held open at once, by anyone: each holds a connection and a task.
    live_clients: int = 64
    # One address's share of them: a reader has one or two tabs open, so one address
    # cannot take all live_clients and refuse everyone else (16 addresses fill them).
    # Past it the address is refused (429) until it closes one. Behind a reverse proxy
    # every reader is the proxy's address unless the proxy is in trusted_proxies
    # (then at most this many read live at once, for the whole public).
    live_per_address: int = 4
    # A live stream that cannot take a message for this long is dropped (a stalled
    # reader must not hold its slot, nor buffer the node's memory).
    live_send_timeout_s: float = 10.0
    live_ping_s: float = 15.0
    # Rendered answers are reused for the same path and query for this long, and the
    # cache is emptied on that fixed schedule, never because the node changed: a miss
    # is as likely after a private post as after none, so its cost reveals nothing
    # (DESIGN principle 17). A new public item or an erasure shows within this long;
    # the live stream is never cached. 0 turns the cache off.
    response_cache_s: float = 2.0
    # Connections, counted and timed from accept by the same gate as the peer API's
    # (web/limits.py): past either cap a new connection is let in and the oldest goes,
    # idle ones first. In all: with the peer API's 192, well under the 1,024 file
    # descriptors a service commonly gets, and four times the live streams.
    connections: int = 256
    # One address's share. A reader's browser holds two or three (the page kept
    # alive, the live stream, now and then a stylesheet), and many readers can share
    # one address (a café, a university's NAT; the TLS proxy README.md puts in front
    # counts as one address for every reader): 96 serves some 30 at once, or all
    # live_clients' streams through a proxy with 32 left for pages. Past it, the
    # address's own oldest idle connection goes, which a browser reopens unnoticed.
    connections_per_address: int = 96
    # From accept to the first request's headers complete (a client sending them a
    # byte at a time is closed then), and then between one request and the next. A
    # live stream is a request in progress: never idle while it is open.
    first_request_s: float = FIRST_REQUEST_S
    idle_s: float = IDLE_CONNECTION_S
    # The reverse proxies in front of the feed (config.toml [feed] trusted_proxies):
    # a request from one of them counts as the client its X-Forwarded-For names, for
    # everything counted per request (`client_address`). Connections stay the TCP
    # peer's: the gate counts them from accept, before any header is read.
    trusted_proxies: tuple[Network, ...] = ()


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # as the proxy would write it, and as `address_of` counts it
    return ip


def client_address(peer: str, forwarded: Sequence[str], trusted: tuple[Network, ...]) -> str:
    """The client a request counts against (then grouped by `address_of`: an IPv6
    host's /64), from its TCP peer and its X-Forwarded-For header lines.

    The peer, unless it is a trusted proxy. Then the rightmost address in
    X-Forwarded-For that is not itself a trusted proxy: each proxy appends the
    address it was connected from, so the entries right of the client's own were
    written by proxies we trust, and anything left of it by the client, who may
    write what it likes there. This is nginx's `real_ip_recursive on` and
    aiohttp-remotes' XForwardedFiltered, with the peer checked first (an untrusted
    peer's header is ignored: anyone can send one). All of a header trusted: its
    leftmost, as nginx. Header lines are one list, in order (RFC 9110 §5.3); empty
    elements are skipped (§5.6.1). An element that is not a bare IP address where the
    walk reads it (a name, `unknown`, an address with a port) is not a client we can
    name, so the request counts as the proxy's own."""
    found = _ip(peer)
    if found is None or not any(found in net for net in trusted):
        return address_of(peer)
    client = peer
    for element in reversed(",".join(forwarded).split(",")):
        if not element.strip():
            continue
        ip = _ip(element)
        if ip is None:
            return address_of(peer)
        client = str(ip)
        if not any(ip in net for net in trusted):
            break
    return address_of(client)


class RateLimiter:
    """A token bucket per address (an IPv6 /64 counts as one: `address_of`, as the
    gate counts connections; a host holds a /64 at least, so each of its addresses
    must not get a full bucket of its own)."""

    def __init__(self, limits: FeedLimits) -> None:
        self.limits = limits
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """Addresses remembered: at most `FeedLimits.addresses`."""
        return len(self._buckets)

    def allow(self, address: str, now: float) -> bool:
        key = address_of(address)
        tokens, last = self._buckets.pop(key, (float(self.limits.burst), now))
        tokens = min(float(self.limits.burst), tokens + (now - last) * self.limits.requests_per_s)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.limits.addresses:
            self._buckets.popitem(last=False)
        return allowed


# The query parameters any handler reads (the filters and the paging), in one order:
# the cache key and the Atom self link are made of these alone.
QUERY_NAMES = ("club", "kind", "campaign", "before", "limit")


def read_query(request: web.Request) -> tuple[str | None, ...]:
    """The values of QUERY_NAMES as the parsers read them (the first of each)."""
    return tuple(request.query.get(name) for name in QUERY_NAMES)


def bad_request(what: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f"{what}\n", content_type="text/plain")


_CLUB = re.compile(r"[0-9a-f]{64}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


def parse_club(text: str) -> bytes:
    if not _CLUB.fullmatch(text):
        raise bad_request("club must be a club id: 64 lowercase hex digits")
    return bytes.fromhex(text)


def parse_filter(request: web.Request, club: bytes | None = None) -> Filter:
    q = request.query
    if club is None and "club" in q:
        club = parse_club(q["club"])
    kind = None
    if "kind" in q:
        kind = parse_kind(q["kind"])
        if kind is None:
            raise bad_request(
                "kind must be an event kind: note, action, report, campaign or erasure"
            )
    campaign = q.get("campaign")
    if campaign is not None and not _SLUG.fullmatch(campaign):
        raise bad_request("campaign must be a campaign slug (a-z, 0-9 and -)")
    return Filter(club, kind, campaign)


def parse_paging(request: web.Request) -> tuple[tuple[int, bytes] | None, int]:
    q = request.query
    before = None
    if "before" in q:
        before = parse_cursor(q["before"])
        if before is None:
            raise bad_request("before must be a cursor from a previous page")
    limit = PAGE_ITEMS
    if "limit" in q:
        text = q["limit"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_ITEMS:
            raise bad_request(f"limit must be a number from 1 to {MAX_PAGE_ITEMS}")
        limit = int(text)
    return before, limit


def query_of(
    where: Filter, *, before: str | None = None, limit: str | None = None, with_club: bool = True
) -> str:
    """The query string of a filter (and paging): the filters live in the URL."""
    parts = []
    if with_club and where.club is not None:
        parts.append(f"club={where.club.hex()}")
    if where.kind is not None:
        parts.append(f"kind={kind_name(where.kind)}")
    if where.campaign is not None:
        parts.append(f"campaign={where.campaign}")
    if before is not None:
        parts.append(f"before={before}")
    if limit is not None:
        parts.append(f"limit={limit}")
    return ("?" + "&".join(parts)) if parts else ""
