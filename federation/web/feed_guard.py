"""What guards the feed's HTTP surface: headers on every response, a per-address
request rate, a bound on live streams, the caps and deadlines of its connections
(`FeedLimits`, applied by web/limits.py's gate), and the query parameters, parsed and
bounded.

The feed is for anyone, unauthenticated, so everything a client can make it do is
bounded (DESIGN principle 18) and nothing on it identifies or follows a reader: no
cookies, no third-party requests (the Content-Security-Policy says so to the browser
too), no referrer sent on.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from federation.core.evidence import kind_name
from federation.views.feed import MAX_PAGE_ITEMS, PAGE_ITEMS, Filter, parse_cursor, parse_kind
from federation.web.limits import FIRST_REQUEST_S, IDLE_CONNECTION_S

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


class RateLimiter:
    """A token bucket per address (an IPv6 /64 counts as one)."""

    def __init__(self, limits: FeedLimits) -> None:
        self.limits = limits
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, address: str, now: float) -> bool:
        key = address if ":" not in address else ":".join(address.split(":")[:4])
        tokens, last = self._buckets.pop(key, (float(self.limits.burst), now))
        tokens = min(float(self.limits.burst), tokens + (now - last) * self.limits.requests_per_s)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.limits.addresses:
            self._buckets.popitem(last=False)
        return allowed


class LiveSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0


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


def query_of(where: Filter, *, before: str | None = None, with_club: bool = True) -> str:
    """The query string of a filter (and a cursor): the filters live in the URL."""
    parts = []
    if with_club and where.club is not None:
        parts.append(f"club={where.club.hex()}")
    if where.kind is not None:
        parts.append(f"kind={kind_name(where.kind)}")
    if where.campaign is not None:
        parts.append(f"campaign={where.campaign}")
    if before is not None:
        parts.append(f"before={before}")
    return ("?" + "&".join(parts)) if parts else ""
