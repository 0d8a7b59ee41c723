"""The feed's syndication formats, pure: Atom (feedgenerator) and iCalendar (icalendar).

Items arrive cleaned (`views.feed.clean`); each library escapes what its format
needs (XML entities; iCalendar's backslash escapes and line folding). Links are
absolute, made from the address the reader used (`base`).
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence

import feedgenerator
import icalendar

from federation.views.feed import FeedItem, Upcoming

PRODUCT_ID = "-//federation//read-only feed//EN"


def _summary(item: FeedItem) -> str:
    """The entry's summary, as HTML: feedgenerator marks Atom summaries type="html", so
    a reader renders them; other clubs' text is therefore escaped for HTML here (and
    feedgenerator escapes the result again for XML)."""
    return "".join(
        f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>"
        for p in _summary_text(item).split("\n\n")
    )


def _summary_text(item: FeedItem) -> str:
    parts = []
    if item.starts is not None:
        parts.append(f"Starts {item.starts.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC")
    if item.where:
        parts.append(f"at {item.where}")
    head = " ".join(parts)
    joint = ""
    if item.joint is not None and item.joint.clubs:
        joint = "Joint campaign, shown by " + ", ".join(c.name for c in item.joint.clubs)
    return "\n\n".join(p for p in (head, joint, item.text) if p) or item.title


def atom(items: Sequence[FeedItem], *, title: str, base: str, self_url: str) -> bytes:
    """An Atom 1.0 document of the items, newest first."""
    feed = feedgenerator.Atom1Feed(
        title=title,
        link=f"{base}/",
        description="Public events of the clubs this node holds, newest first.",
        feed_url=self_url,
        language="en",
    )
    for item in items:
        feed.add_item(
            title=f"{item.club_name}: {item.title}",
            link=f"{base}/clubs/{item.club}#e-{item.id}",
            description=_summary(item),
            author_name=item.club_name,
            pubdate=item.time,
            updateddate=item.time,
            unique_id=f"urn:federation:event:{item.id}",
            categories=[item.kind],
        )
    text: str = feed.writeString("utf-8")
    return text.encode()


def calendar(actions: Sequence[Upcoming], *, name: str, base: str, now: dt.datetime) -> bytes:
    """An iCalendar (RFC 5545) document of the actions (upcoming ones, on the feed).
    `base` "" (no feed address): no links, each action names its signed event by id."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODUCT_ID)
    cal.add("version", "2.0")
    cal.add("x-wr-calname", name)
    for action in actions:
        event = icalendar.Event()
        event.add("uid", f"{action.event}@federation")
        event.add("dtstamp", now)
        event.add("dtstart", action.starts.astimezone(dt.UTC))
        if action.ends is not None and action.ends > action.starts:
            event.add("dtend", action.ends.astimezone(dt.UTC))
        event.add("summary", f"{action.club_name}: {action.what}")
        if action.where:
            event.add("location", action.where)
        if base:
            event.add("url", f"{base}{action.event_url}")
            signed = f"{base}{action.event_url}"
        else:  # written by `calendar --ics`, with no feed address: the event's id
            signed = action.event
        event.add("description", f"Posted by {action.club_name}. Signed event: {signed}")
        cal.add_component(event)
    data: bytes = cal.to_ical()
    return data
