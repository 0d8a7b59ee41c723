"""Only public logs reach the feed: markers posted to private, federation and named-set
(`clubs:`) logs, as notes, actions and campaigns, held by the feed's node (its own and
synced from a peer), never appear in any body of any route, live stream included; a
public marker does (the positive control). Bodies are also byte-identical before and
after the non-public posts: not a count, not a title, not a time leaks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from federation.core.canonical import Kind
from tests.feed.support import FeedClient, feed_federation
from tests.harness import Federation, Member

pytestmark = pytest.mark.timeout(60)

SECRET = "SECRETMARKER"
PUBLIC = "PUBLICMARKER"


async def post_markers(member: Member, audience: str, tag: str) -> list[str]:
    """A note, an action and a campaign carrying a marker, in one audience's log."""
    marks = [f"{tag}{member.name}{audience[:5]}{n}" for n in ("note", "act", "camp")]
    await member.post(Kind.NOTE, {"text": marks[0]}, audience)
    await member.post(
        Kind.ACTION,
        {"what": marks[1], "starts": "2031-01-01T10:00:00+00:00", "where": marks[1]},
        audience,
    )
    await member.post(
        Kind.CAMPAIGN,
        {"campaign": marks[2].lower()[:60], "op": "created", "title": marks[2], "text": marks[2]},
        audience,
    )
    return marks


def routes(fed: Federation) -> list[str]:
    a, b = fed["a"].club.hex(), fed["b"].club.hex()
    paths = ["/", "/feed.json", "/feed.atom", "/calendar.ics", "/openapi.json"]
    for club in (a, b):
        paths += [
            f"/clubs/{club}",
            f"/feed.json?club={club}",
            f"/feed.atom?club={club}",
            f"/calendar.ics?club={club}",
            f"/?club={club}",
        ]
    for kind in ("note", "action", "campaign"):
        paths += [f"/feed.json?kind={kind}", f"/?kind={kind}"]
    return paths


async def read_live(feed: FeedClient, seconds: float) -> bytes:
    body = b""
    async with feed.http.get(feed.base + "/live") as response:
        assert response.status == 200
        try:
            async with asyncio.timeout(seconds):
                async for chunk in response.content.iter_any():
                    body += chunk
        except TimeoutError:
            pass
    return body


async def test_non_public_events_never_appear(tmp_path: Path) -> None:
    async with feed_federation(tmp_path) as (fed, feed):
        a, b = fed["a"], fed["b"]
        await a.post(Kind.NOTE, {"text": "first public note"}, "public")
        await b.post(Kind.NOTE, {"text": "b public note"}, "public")
        await feed.wait_for("/feed.json", b"b public note")
        paths = routes(fed)
        before = {p: await feed.get(p) for p in paths if not p.startswith("/calendar")}

        live = asyncio.create_task(read_live(feed, 3.0))
        await asyncio.sleep(0.3)
        secrets: list[str] = []
        ids: list[str] = []
        for member, other in ((a, b), (b, a)):
            for audience in ("private", "federation", f"clubs:{other.club.hex()}"):
                secrets += await post_markers(member, audience, SECRET)
        for member in (a, b):
            ids += [
                e.id.hex()
                for r in await member.node.store.logs()
                if r.audience.kind != "public"
                for e in await member.node.store.events(r.id, 0, 100)
            ]

        # The feed's node holds b's federation and clubs:a markers: they did sync.
        async def held() -> bool:
            payloads = b"".join(await a.payloads())
            return (
                f"{SECRET}bfedernote".encode() in payloads
                and f"{SECRET}bclubsnote".encode() in payloads
            )

        await fed.wait_for(held, what="b's non-public markers at a")
        await asyncio.sleep(0.5)  # the feed's index has seen the change

        after = {p: await feed.get(p) for p in paths if not p.startswith("/calendar")}
        assert after == before  # not an item, a title, a count or a time

        await a.post(Kind.NOTE, {"text": f"{PUBLIC}a"}, "public")
        await b.post(Kind.NOTE, {"text": f"{PUBLIC}b"}, "public")
        await feed.wait_for("/feed.json", f"{PUBLIC}b".encode())
        bodies = {p: await feed.get(p) for p in paths}
        for ident in ids:
            status, body = await feed.fetch(f"/events/{ident}")
            assert status == 404
            bodies[f"/events/{ident}"] = body
        bodies["/live"] = await live

        everything = b"\n".join(bodies.values())
        assert f"{PUBLIC}a".encode() in bodies["/feed.json"]  # the search does find things
        assert f"{PUBLIC}b".encode() in bodies["/live"]
        assert f"{PUBLIC}a".encode() in bodies["/"]
        assert SECRET.encode() not in everything
        assert SECRET.lower().encode() not in everything  # campaign slugs
        for ident in ids:
            assert ident.encode() not in everything
