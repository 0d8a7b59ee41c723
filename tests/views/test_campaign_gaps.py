"""A campaign step held without its payload is not read as "nothing happened"
(DESIGN principle 16): its campaigns show as unknown until the payload is filled in;
a step erased by its origin (an erasure event, protocol.md §3.5) is as if it never was.
Pure: signed events, no store."""

from __future__ import annotations

import msgspec

from federation.core.canonical import Kind
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.payloads import make_payload
from federation.views import campaigns, projection
from federation.views.projection import CAMPAIGNS, GAPS, CampaignItem, GapItem
from tests.conftest import BASE_TIME_US, Club

CLUB = Club.make(b"gaps club")
LOG = CLUB.log("federation")


def chain(*steps: tuple[Kind, dict[str, object]]) -> list[VerifiedEvent]:
    head: Head | None = None
    out = []
    for i, (kind, fields) in enumerate(steps):
        event = sign_event(
            CLUB.key,
            club=CLUB.id,
            log=LOG,
            head=head,
            time_us=BASE_TIME_US + i,
            kind=kind,
            payload=make_payload(kind, fields),
        )
        head = Head(event.header.seq, event.id)
        out.append(event)
    return out


def step(op: str, slug: str = "rent") -> tuple[Kind, dict[str, object]]:
    return Kind.CAMPAIGN, {"campaign": slug, "op": op, "title": "Rent strike"}


def strip(event: VerifiedEvent) -> VerifiedEvent:
    return msgspec.structs.replace(event, payload=None)


def shown(events: list[VerifiedEvent]) -> dict[str, str]:
    items = projection.fold({}, events)
    gap = items.get((GAPS, LOG.hex()))
    assert gap is None or isinstance(gap, GapItem)
    return {
        item.campaign: campaigns.shown(item, gap).status
        for (view, _), item in items.items()
        if view == CAMPAIGNS and isinstance(item, CampaignItem)
    }


def test_a_closed_step_without_its_payload_is_unknown_not_open() -> None:
    created, closed = chain(step("created"), step("closed"))
    assert shown([created, closed]) == {"rent": "closed"}
    assert shown([created, strip(closed)]) == {"rent": campaigns.UNKNOWN}


def test_a_gap_after_a_campaign_closed_leaves_it_closed() -> None:
    events = chain(step("created"), step("closed"), step("created", "library"))
    assert shown([*events[:2], strip(events[2])]) == {"rent": "closed"}


def test_an_erasure_by_the_origin_closes_the_gap() -> None:
    created, closed = chain(step("created"), step("closed"))
    erasure = chain(
        step("created"),
        step("closed"),
        (Kind.ERASURE, {"seq": 2, "event": closed.id.hex()}),
    )[2]
    assert shown([created, strip(closed), erasure]) == {"rent": "open"}


def test_an_erasure_naming_another_event_closes_no_gap() -> None:
    created, closed = chain(step("created"), step("closed"))
    wrong = chain(
        step("created"),
        step("closed"),
        (Kind.ERASURE, {"seq": 2, "event": created.id.hex()}),
    )[2]
    assert shown([created, strip(closed), wrong]) == {"rent": campaigns.UNKNOWN}


def test_gap_items_round_trip_through_the_store_encoding() -> None:
    created, closed = chain(step("created"), step("closed"))
    items = projection.fold({}, [created, strip(closed)])
    for (view, _), item in items.items():
        assert projection.decode_item(view, projection.encode_item(item)) == item
        assert projection.log_of(item) == LOG
