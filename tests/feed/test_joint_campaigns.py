"""Joint campaigns on the feed (protocol.md §3.7), over three real nodes.

a proposes a joint campaign to b and c; both accept, so it is agreed on all three.
a and b choose to show it on their public feeds, c chooses not to. The feed (served
by a) shows it once, with exactly a and b, filterable by `?campaign=`; nothing of
the participants' log (asks, commitments, planned actions, c and its choice) appears
in any body of any route, the live stream and every raw event included, while the
title does (the positive control). After b hides it (a signed erasure), the feed
shows it with a alone within its cache period.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest

from federation.cli.main import main
from federation.core.canonical import Kind
from federation.errors import UsageError
from federation.node import proposals
from federation.web.feed_guard import FeedLimits
from tests.feed.support import FeedClient, feed_federation
from tests.harness import Federation, Member

pytestmark = pytest.mark.timeout(60)

CACHE_S = 1.0
TITLE = "JOINTTITLE Rent strike solidarity week"
AIMS = "JOINTAIMS stop the evictions on Elm Street"
SECRETS = [
    "ASKALL a bloc of eight",
    "ASKFORB five hundred leaflets",
    "ASKFORC a stall at the market",
    "COMMITB eight people and a banner",
    "COMMITC the stall and a sound system",
    "PLANNEDACTION meeting at the depot",
    "SECRETPLACE back room of the depot",
]


async def _agreed(m: Member, pid: str) -> bool:
    found = [o for o in await proposals.outcomes(m.node) if o.proposal == pid]
    return bool(found) and found[0].state == "agreed"


async def _collect_live(feed: FeedClient, into: bytearray) -> None:
    async with feed.http.get(feed.base + "/live") as response:
        assert response.status == 200
        async for chunk in response.content.iter_any():
            into += chunk


async def _joint_items(feed: FeedClient, query: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = json.loads(await feed.get(f"/feed.json?{query}"))["items"]
    return items


def _shown_by(items: list[dict[str, object]]) -> set[tuple[str, ...]]:
    """The clubs each showing item lists (erased steps list none)."""
    return {
        tuple(str(c["id"]) for c in item["joint"]["clubs"])  # type: ignore[index]
        for item in items
        if item["joint"] is not None
    }


async def _bodies(fed: Federation, feed: FeedClient, pid: str) -> dict[str, bytes]:
    clubs = [fed[n].club.hex() for n in "abc"]
    paths = ["/", "/feed.json", "/feed.atom", "/calendar.ics", "/openapi.json"]
    paths += [f"/?campaign={pid}", f"/feed.json?campaign={pid}", f"/feed.atom?campaign={pid}"]
    paths += [f"/feed.json?campaign=joint-{pid[:12]}", "/feed.json?kind=campaign"]
    for club in clubs[:2]:  # c has no public event: its page is a 404, checked below
        paths += [f"/clubs/{club}", f"/feed.json?club={club}", f"/calendar.ics?club={club}"]
    bodies = {p: await feed.get(p) for p in paths}
    for item in json.loads(bodies["/feed.json"])["items"]:
        bodies[item["event_url"]] = await feed.get(item["event_url"])
    status, bodies[f"/clubs/{clubs[2]}"] = await feed.fetch(f"/clubs/{clubs[2]}")
    assert status == 404
    return bodies


async def test_joint_campaign_shown_by_the_clubs_that_chose(tmp_path: Path) -> None:
    limits = FeedLimits(response_cache_s=CACHE_S)
    async with feed_federation(tmp_path, ("a", "b", "c"), limits) as (fed, feed):
        await fed.federate("b", "c")
        a, b, c = (fed[n] for n in "abc")
        starts = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
        pid = (
            await proposals.propose(
                a.node,
                title=TITLE,
                aims=AIMS,
                invited=[b.club, c.club],
                deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
                asks={"*": SECRETS[0], b.club.hex(): SECRETS[1], c.club.hex(): SECRETS[2]},
                actions=[{"what": SECRETS[5], "where": SECRETS[6], "starts": starts}],
            )
        ).hex()
        await a.refresh()
        await fed.wait_for(lambda: _open_at(b, c, pid), what="the proposal at b and c")
        await proposals.answer(b.node, pid, "accepted", SECRETS[3])
        await b.refresh()
        await proposals.answer(c.node, pid, "accepted", SECRETS[4])
        await c.refresh()

        async def everywhere() -> bool:
            return all([await _agreed(m, pid) for m in (a, b, c)])

        await fed.wait_for(everywhere, what="agreed on all three")

        live = bytearray()
        reader = asyncio.create_task(_collect_live(feed, live))
        await a.post(Kind.NOTE, {"text": "CONTROL public note"}, "public")
        # a and b show it; c chooses not to (a signed choice, nothing public).
        shown_a = await proposals.choose_feed(a.node, pid, shown=True)
        assert len(shown_a.published) == 1
        assert not shown_a.erased
        await a.refresh()
        again = await proposals.choose_feed(a.node, pid, shown=True)
        assert again.published == []
        assert again.erased == []
        await a.refresh()
        await proposals.choose_feed(b.node, pid, shown=True)
        await b.refresh()
        hidden_c = await proposals.choose_feed(c.node, pid, shown=False)
        assert hidden_c.published == []
        assert hidden_c.erased == []
        await c.refresh()
        with pytest.raises(UsageError, match="does not show the joint campaign"):
            await proposals.post_update(c.node, pid, SECRETS[4], public=True)
        # A public update through the CLI, as a separate process would post it.
        update = ["--node", str(a.root), "proposal", "update", pid[:12], "--public"]
        update += ["--text", "JOINTUPDATE see you at the town hall"]
        assert await asyncio.to_thread(main, update) == 0
        await a.refresh()

        pair = (a.club.hex(), b.club.hex())  # listed by name: "Club a", then "Club b"

        async def shown_by_both() -> bool:
            return _shown_by(await _joint_items(feed, f"campaign={pid}")) == {pair}

        await fed.wait_for(shown_by_both, what="the joint campaign with a and b")
        await feed.wait_for(f"/feed.json?campaign={pid}", b"JOINTUPDATE")  # cached apart

        items = await _joint_items(feed, f"campaign={pid}")
        assert sorted((i["club"], i["op"]) for i in items) == sorted(
            [(a.club.hex(), "created"), (b.club.hex(), "created"), (a.club.hex(), "updated")]
        )
        assert items == await _joint_items(feed, f"campaign=joint-{pid[:12]}")
        assert await _joint_items(feed, "campaign=another-campaign") == []
        assert all(AIMS in str(i["text"]) for i in items if i["op"] == "created")

        # The page lists it once, with exactly a and b.
        page = (await feed.get("/")).decode()
        side = page[page.index('id="h-campaigns"') :]
        assert side.count(TITLE) == 1
        (with_clubs,) = re.findall(r"Joint campaign with (.*?) · ", side)
        assert re.findall(r'href="/clubs/([0-9a-f]{64})"', with_clubs) == list(pair)
        assert b.club.hex() in (await feed.get(f"/clubs/{b.club.hex()}")).decode()
        assert b"Joint campaign, shown by Club a, Club b" in await feed.get("/feed.atom")

        await asyncio.sleep(0.3)  # the live stream sends what the index took
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        bodies = await _bodies(fed, feed, pid)
        bodies["/live"] = bytes(live)
        assert TITLE.encode() in bodies["/"]
        assert TITLE.encode() in bodies["/live"]
        forbidden = [*SECRETS, "Club c", c.club.hex()]
        for path, body in bodies.items():
            for text in forbidden:
                assert text.encode() not in body, (path, text)

        # b hides it: its public steps are erased everywhere; a's feed shows a alone.
        hidden_b = await proposals.choose_feed(b.node, pid, shown=False)
        assert len(hidden_b.erased) == 1
        await b.refresh()
        erased = hidden_b.erased[0]

        async def a_holds_erasure() -> bool:
            held = await a.node.store.events_by_id_prefix(bytes.fromhex(erased))
            return len(held) == 1 and held[0].payload is None

        await fed.wait_for(a_holds_erasure, what="b's erasure at a")
        took = time.monotonic()

        async def shown_by_a() -> bool:
            return _shown_by(await _joint_items(feed, f"campaign={pid}")) == {(a.club.hex(),)}

        await fed.wait_for(shown_by_a, timeout_s=CACHE_S + 2.0, what="a alone")
        assert time.monotonic() - took <= CACHE_S + 2.0
        page = (await feed.get(f"/?campaign={pid}")).decode()
        (with_clubs,) = re.findall(r"Joint campaign with (.*?) · ", page)
        assert re.findall(r'href="/clubs/([0-9a-f]{64})"', with_clubs) == [a.club.hex()]

        # b shows it again: a new step, and the feed shows both again.
        again_b = await proposals.choose_feed(b.node, pid, shown=True)
        assert len(again_b.published) == 1
        await b.refresh()
        await fed.wait_for(shown_by_both, what="b showing it again")


async def _open_at(b: Member, c: Member, pid: str) -> bool:
    for m in (b, c):
        found = [o for o in await proposals.outcomes(m.node) if o.proposal == pid]
        if not found or found[0].state != "open":
            return False
    return True
