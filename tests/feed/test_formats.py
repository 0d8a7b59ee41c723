"""What the feed shows after a sync, in each format, read back by independent parsers:
Atom by feedparser, iCalendar by `ics` (not the icalendar that wrote it), JSON against
the OpenAPI document (jsonschema), the OpenAPI document by openapi-spec-validator;
paging with stable cursors; a signed event verified offline by `verify-event`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import feedparser
import ics
import jsonschema
import pytest
from openapi_spec_validator import validate

from federation.cli.main import main
from federation.core.canonical import Kind
from federation.core.evidence import check_evidence, decode_evidence
from tests.feed.support import FeedClient, feed_federation, synced

pytestmark = pytest.mark.timeout(60)

FUTURE = "2031-05-01T18:00:00+00:00"


def schema_for(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}


async def check_json(feed: FeedClient, path: str, name: str) -> dict[str, Any]:
    doc = json.loads(await feed.get("/openapi.json"))
    body: dict[str, Any] = json.loads(await feed.get(path))
    jsonschema.validate(body, schema_for(doc, name))
    return body


async def test_each_format_after_a_sync(tmp_path: Path) -> None:
    async with feed_federation(tmp_path) as (fed, feed):
        b = fed["b"]
        await b.post(Kind.NOTE, {"text": "Solidarity from the depot"}, "public")
        action = await b.post(
            Kind.ACTION,
            {"what": "Picket at the depot", "starts": FUTURE, "where": "Gate 2"},
            "public",
        )
        await b.post(
            Kind.CAMPAIGN, {"campaign": "rent", "op": "created", "title": "Rent strike"}, "public"
        )
        await fed["a"].post(Kind.NOTE, {"text": "Our own public note"}, "public")
        await synced(fed, 3)
        for needle in (b"Solidarity", b"Picket at the depot", b"Rent strike", b"Our own"):
            await feed.wait_for("/feed.json", needle)

        page = await check_json(feed, "/feed.json", "FeedPage")
        titles = [i["title"] for i in page["items"]]
        b_titles = [i["title"] for i in page["items"] if i["club"] == b.club.hex()]
        # Newest first (by the clubs' claimed times: each node's clock only moves on).
        assert b_titles == [
            "Rent strike (created)",
            "Picket at the depot",
            "Solidarity from the depot",
        ]
        assert "Our own public note" in titles
        assert set(titles) >= {
            "Solidarity from the depot",
            "Picket at the depot",
            "Rent strike (created)",
        }
        assert {i["club_name"] for i in page["items"]} == {"Club a", "Club b"}

        html = (await feed.get("/")).decode()
        for text in ("Solidarity from the depot", "Picket at the depot", "Gate 2", "Rent strike"):
            assert text in html
        assert f'href="/events/{action.id.hex()}"' in html  # each item links to its signed event
        assert "UTC" in html  # times without script: UTC, labelled
        club_html = (await feed.get(f"/clubs/{b.club.hex()}")).decode()
        assert "Picket at the depot" in club_html
        assert "Our own public note" not in club_html

        atom = feedparser.parse(await feed.get("/feed.atom"))
        assert not atom.bozo, atom.bozo_exception
        assert {e.title for e in atom.entries} >= {
            "Club b: Picket at the depot",
            "Club a: Our own public note",
        }
        only_b = feedparser.parse(await feed.get(f"/feed.atom?club={b.club.hex()}"))
        assert only_b.entries
        assert all(e.title.startswith("Club b: ") for e in only_b.entries)

        calendar = ics.Calendar((await feed.get("/calendar.ics")).decode())
        (event,) = calendar.events
        assert event.name == "Club b: Picket at the depot"
        assert event.location == "Gate 2"
        assert event.begin.isoformat().startswith("2031-05-01T18:00")
        empty = ics.Calendar((await feed.get(f"/calendar.ics?club={fed['a'].club.hex()}")).decode())
        assert not empty.events

        kinds = await check_json(feed, "/feed.json?kind=action", "FeedPage")
        assert [i["title"] for i in kinds["items"]] == ["Picket at the depot"]
        steps = await check_json(feed, "/feed.json?campaign=rent", "FeedPage")
        assert [i["campaign"] for i in steps["items"]] == ["rent"]


async def test_openapi_document_is_valid(tmp_path: Path) -> None:
    async with feed_federation(tmp_path, ("a",)) as (_, feed):
        doc = json.loads(await feed.get("/openapi.json"))
        validate(doc)
        assert doc["openapi"] == "3.1.0"
        for path in (
            "/",
            "/clubs/{club}",
            "/feed.json",
            "/feed.atom",
            "/calendar.ics",
            "/live",
            "/events/{id}",
            "/openapi.json",
        ):
            assert set(doc["paths"][path]) == {"get"}, path  # read-only, as documented


async def test_pages_follow_stable_cursors(tmp_path: Path) -> None:
    async with feed_federation(tmp_path, ("a",)) as (fed, feed):
        for i in range(7):
            await fed["a"].post(Kind.NOTE, {"text": f"note {i}"}, "public")
        await feed.wait_for("/feed.json", b"note 6")
        seen: list[str] = []
        path = "/feed.json?limit=3"
        while True:
            page = await check_json(feed, path, "FeedPage")
            seen += [i["title"] for i in page["items"]]
            if page["next"] is None:
                break
            # A new item arriving between pages does not shift the older pages.
            await fed["a"].post(Kind.NOTE, {"text": f"later {len(seen)}"}, "public")
            path = f"/feed.json?limit=3&before={page['next']}"
        assert seen == [f"note {i}" for i in range(6, -1, -1)]
        for bad in ("limit=0", "limit=101", "before=xyz", "kind=banana", "club=zz"):
            status, _ = await feed.fetch(f"/feed.json?{bad}")
            assert status == 400, bad


async def test_a_downloaded_event_verifies_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with feed_federation(tmp_path) as (fed, feed):
        event = await fed["b"].post(Kind.NOTE, {"text": "verify me"}, "public")
        await synced(fed, 2)
        await feed.wait_for("/feed.json", b"verify me")
        body = await feed.get(f"/events/{event.id.hex()}")
        await check_json(feed, f"/events/{event.id.hex()}", "Evidence")
    assert check_evidence(decode_evidence(body)).id == event.id
    good = tmp_path / "event.json"
    good.write_bytes(body)
    assert await asyncio.to_thread(main, ["verify-event", str(good)]) == 0
    assert "verifies" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["verify-event", "--json", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    doc = json.loads(body)
    doc["payload"] = doc["payload"][:-4] + "AAA="  # a payload altered after signing
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert await asyncio.to_thread(main, ["verify-event", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "does not verify" in err
    assert await asyncio.to_thread(main, ["verify-event", "--json", str(bad)]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    other = dict(json.loads(body), genesis=doc["descriptor"])  # someone else's genesis
    bad.write_text(json.dumps(other))
    assert await asyncio.to_thread(main, ["verify-event", str(bad)]) == 1
    assert "genesis" in capsys.readouterr().err
