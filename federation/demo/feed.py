"""The demo's public feed: served by the featured club's node (the hub, which holds
what its partners relay), on the port after the clubs' own, and read back over HTTP
to show what the public sees: public events only, from every club the hub holds."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from federation.core.config import parse_listen
from federation.demo.console import say, section
from federation.demo.spec import _listen
from federation.errors import FederationError

# How long the demo waits for the feed to answer (it is served by a running node).
FEED_TIMEOUT_S = 5.0


def feed_address(listens: dict[str, str], featured: str) -> str:
    """host:port of the feed: the featured club's host, one port above every club's."""
    host, _ = parse_listen(listens[featured])
    return _listen(host, max(parse_listen(listen)[1] for listen in listens.values()) + 1)


def feed_url(address: str) -> str:
    host, port = parse_listen(address)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def read_feed(address: str) -> dict[str, Any]:
    url = feed_url(address) + "feed.json?limit=100"
    try:
        with urllib.request.urlopen(url, timeout=FEED_TIMEOUT_S) as response:
            page: dict[str, Any] = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise FederationError(f"the feed at {url} did not answer: {exc}") from None
    return page


def show_feed(address: str, hub_name: str, step: int) -> list[str]:
    """The demo's feed step: print the address and what the feed shows; returns the
    titles shown (tests/test_demo.py checks them)."""
    section(
        f"{step}. The public feed",
        f"{hub_name}'s node also serves the read-only public feed (`init --feed-listen`, "
        "`[feed] listen` in its config): a web page, JSON, Atom and a calendar, updated "
        "live, with only what clubs posted to public logs. Nothing can be written through "
        "it. Every item links to its signed event, which `federation verify-event` checks "
        "offline.",
    )
    page = read_feed(address)
    titles = [f"{item['club_name']}: {item['title']}" for item in page["items"]]
    print(f"$ curl {feed_url(address)}feed.json")
    for title in titles:
        say(f"  {title}")
    say(
        "",
        f"Open {feed_url(address)} in a browser; the Atom feed is at "
        f"{feed_url(address)}feed.atom, the calendar at {feed_url(address)}calendar.ics.",
    )
    return titles
