"""Other clubs' text is rendered harmless in every format: script tags and markup are
escaped in HTML, Atom and iCalendar; control characters and bidi overrides are gone
from all four; a 16,000-character line stays one long, wrapped text; each format
still parses (feedparser, `ics`, JSON)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import feedparser
import ics
import pytest

from federation.core.canonical import Kind
from tests.feed.support import feed_federation, synced

pytestmark = pytest.mark.timeout(60)

SCRIPT = '<script>alert("x")</script><img src=x onerror=alert(1)>'
MARKUP = "</title></entry><entry><title>forged</title>"
CONTROL = "bell\x07esc\x1b[2Jnul-free\x0bvt\x7fdel\x85nel"
BIDI = "exe.\u202egnp\u2066iso\u2069\u200f"
ICAL = "X\r\nBEGIN:VEVENT\r\nSUMMARY:forged\r\nEND:VEVENT"
LONG = "L" * 16_000
UNSAFE = ["\x07", "\x1b", "\x0b", "\x7f", "\x85", "\u202e", "\u2066", "\u2069", "\u200f"]


async def test_hostile_text_is_harmless_everywhere(tmp_path: Path) -> None:
    async with feed_federation(tmp_path) as (fed, feed):
        b = fed["b"]
        await b.post(Kind.NOTE, {"text": f"{SCRIPT} {MARKUP} {CONTROL} {BIDI}"}, "public")
        await b.post(Kind.NOTE, {"text": LONG}, "public")
        await b.post(
            Kind.ACTION,
            {"what": f"{SCRIPT}{BIDI}", "starts": "2031-02-03T04:05:00+00:00", "where": ICAL},
            "public",
        )
        await b.post(
            Kind.CAMPAIGN,
            {"campaign": "evil", "op": "created", "title": MARKUP, "text": CONTROL},
            "public",
        )
        await synced(fed, 2)
        await feed.wait_for("/feed.json", b"evil")
        await feed.wait_for("/feed.json", b"LLLL")
        await feed.wait_for("/calendar.ics", b"alert")

        page_html = (await feed.get("/")).decode()
        club_html = (await feed.get(f"/clubs/{b.club.hex()}")).decode()
        for page in (page_html, club_html):
            assert "<script>alert" not in page
            assert "<img" not in page
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
            assert "<entry>" not in page
            assert LONG in page  # kept whole, wrapped by CSS (overflow-wrap)
            for ch in UNSAFE:
                assert ch not in page, repr(ch)

        atom_bytes = await feed.get("/feed.atom")
        atom = feedparser.parse(atom_bytes)
        assert not atom.bozo, atom.bozo_exception
        assert "forged" not in [e.title for e in atom.entries]
        assert len(atom.entries) == 4
        assert b"<script>" not in atom_bytes
        assert b"<entry><title>forged" not in atom_bytes
        # The summary is HTML (type="html"): the text is escaped for it, shown as text.
        assert any(html.escape(SCRIPT) in e.summary for e in atom.entries)
        assert not any("<script" in e.summary or "<img" in e.summary for e in atom.entries)
        for ch in UNSAFE:
            assert ch.encode() not in atom_bytes, repr(ch)

        ics_bytes = await feed.get("/calendar.ics")
        calendar = ics.Calendar(ics_bytes.decode())
        assert len(calendar.events) == 1  # the forged VEVENT is text of the one event
        (event,) = calendar.events
        assert "BEGIN:VEVENT" in (event.location or "")
        assert b"\r\nSUMMARY:forged" not in ics_bytes
        for ch in UNSAFE:
            assert ch.encode() not in ics_bytes, repr(ch)

        raw = await feed.get("/feed.json")
        page_json = json.loads(raw)
        texts = [i["text"] + i["title"] for i in page_json["items"]]
        assert any(SCRIPT in t for t in texts)  # JSON carries the text; its reader escapes
        assert any(LONG in t for t in texts)
        for ch in UNSAFE:
            assert all(ch not in t for t in texts), repr(ch)
