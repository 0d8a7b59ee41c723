"""Projections (campaigns, calendar) are a keyed fold that any batching leaves unchanged.

Events are really signed (a fixed key from tests.conftest), across two logs of one
club, with random payloads: actions, campaign steps, notes, payloads that do not
decode, payloads of a newer club (a field this version does not know), and erased
payloads. Pure: no store, no event loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.core.canonical import Kind
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.payloads import make_payload
from federation.errors import UsageError
from federation.views import projection
from federation.views.projection import CALENDAR, CAMPAIGNS, CalendarItem, CampaignItem, Item, Key
from tests.conftest import BASE_TIME_US, Club

CLUB = Club.make(b"projection club")
LOGS = (CLUB.log("federation"), CLUB.log("public"))
SLUGS = ("rent", "library")  # few, so that steps often meet the same campaign
START = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)


class Step(NamedTuple):
    """One event to sign: into which log, what kind, its payload, and whether erased."""

    log: int
    kind: Kind
    payload: bytes
    erased: bool


def _action(what: str, hours: int, zone: int, where: str, participants: int | None) -> bytes:
    starts = (START + dt.timedelta(hours=hours)).astimezone(dt.timezone(dt.timedelta(hours=zone)))
    fields: dict[str, object] = {"what": what, "starts": starts, "where": where}
    if participants is not None:
        fields["participants"] = participants
    return make_payload(Kind.ACTION, fields)


def _campaign(slug: str, op: str, title: str | None, text: str | None) -> bytes:
    fields: dict[str, object] = {"campaign": slug, "op": op}
    if title is not None:
        fields["title"] = title
    if text is not None:
        fields["text"] = text
    return make_payload(Kind.CAMPAIGN, fields)


actions = st.builds(
    _action,
    st.sampled_from(["Picket", "Reading group", "March"]),
    st.integers(-48, 48),
    st.integers(-5, 5),
    st.sampled_from(["", "the depot", "town hall"]),
    st.none() | st.integers(0, 500),
)
campaign_steps = st.builds(
    _campaign,
    st.sampled_from(SLUGS),
    # "created" twice as often, so that most campaigns exist before they are updated.
    st.sampled_from(["created", "created", "updated", "closed"]),
    st.none() | st.sampled_from(["Rent strike", "Keep the library"]),
    st.none() | st.sampled_from(["", "week 2", "we won"]),
)


def newer(payload: bytes) -> bytes:
    """The payload as a newer club might write it: one field this version does not know."""
    return payload[:-1] + b',"since_v2":{"x":[1]}}'


kinds_and_payloads = st.one_of(
    st.tuples(st.just(Kind.CAMPAIGN), campaign_steps),
    st.tuples(st.just(Kind.CAMPAIGN), campaign_steps.map(newer)),
    st.tuples(st.just(Kind.ACTION), actions),
    st.tuples(st.just(Kind.ACTION), actions.map(newer)),
    st.tuples(st.just(Kind.NOTE), st.just(make_payload(Kind.NOTE, {"text": "minutes"}))),
    # Validly signed events whose payload is not what the kind expects change nothing.
    st.tuples(st.sampled_from([Kind.ACTION, Kind.CAMPAIGN]), st.just(b'{"campaign": 5}')),
)


@st.composite
def step(draw: st.DrawFn) -> Step:
    kind, payload = draw(kinds_and_payloads)
    log = draw(st.sampled_from([0, 0, 1]))  # mostly one log, so its campaigns grow long
    return Step(log, kind, payload, draw(st.sampled_from([False, False, False, True])))


step_lists = st.lists(step(), min_size=8, max_size=30)


def sign_steps(steps: Sequence[Step]) -> list[VerifiedEvent]:
    """The steps as signed events, each log chained in order; erased ones without payload."""
    heads: dict[bytes, Head | None] = dict.fromkeys(LOGS)
    events = []
    for i, s in enumerate(steps):
        log = LOGS[s.log]
        event = sign_event(
            CLUB.key,
            club=CLUB.id,
            log=log,
            head=heads[log],
            time_us=BASE_TIME_US + i,
            kind=s.kind,
            payload=s.payload,
        )
        heads[log] = Head(event.header.seq, event.id)
        events.append(msgspec.structs.replace(event, payload=None) if s.erased else event)
    return events


def stored(items: dict[Key, Item]) -> dict[Key, Item]:
    """Items as they come back from a store: encoded and decoded again."""
    return {k: projection.decode_item(k[0], projection.encode_item(v)) for k, v in items.items()}


# --- properties -------------------------------------------------------------------------


@given(steps=step_lists, data=st.data())
def test_folding_in_batches_equals_folding_at_once(steps: list[Step], data: st.DataObject) -> None:
    events = sign_steps(steps)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4), label="cuts"))
    at_once = projection.fold({}, events)
    items: dict[Key, Item] = {}
    for lo, hi in pairwise([0, *cuts, len(events)]):
        items = stored(projection.fold(items, events[lo:hi]))
    assert items == at_once


@given(steps=step_lists, split=st.integers(0, 30))
def test_any_split_point(steps: list[Step], split: int) -> None:
    events = sign_steps(steps)
    split = min(split, len(events))
    first = stored(projection.fold({}, events[:split]))
    assert projection.fold(first, events[split:]) == projection.fold({}, events)


@given(steps=step_lists)
def test_log_by_log_equals_interleaved(steps: list[Step]) -> None:
    """A rebuild folds one log after another; arrival interleaves them. Same items."""
    events = sign_steps(steps)
    by_log = sorted(events, key=lambda e: (LOGS.index(e.header.log), e.header.seq))
    assert projection.fold({}, by_log) == projection.fold({}, events)


@given(steps=step_lists)
def test_every_action_is_one_calendar_item_and_erased_ones_are_marked(steps: list[Step]) -> None:
    events = sign_steps(steps)
    items = projection.fold({}, events)
    actions = [e for e in events if e.header.kind == Kind.ACTION]
    calendar = {k[1]: v for k, v in items.items() if k[0] == CALENDAR}
    assert set(calendar) == {e.id.hex() for e in actions}
    for event in actions:
        item = calendar[event.id.hex()]
        assert isinstance(item, CalendarItem)
        assert (item.event, item.club, item.log, item.seq) == (
            event.id.hex(),
            CLUB.id.hex(),
            event.header.log.hex(),
            event.header.seq,
        )
        assert item.erased == (event.payload is None)
        if event.payload is None:
            assert item == CalendarItem(
                event.id.hex(), CLUB.id.hex(), event.header.log.hex(), event.header.seq, erased=True
            )
        elif event.payload != b'{"campaign": 5}':
            assert item.what
            assert item.starts is not None
    # A campaign step without its payload names no campaign: it is a gap in its log
    # (tests/views/test_campaign_gaps.py), never a campaign's item.
    for event in events:
        if event.header.kind == Kind.CAMPAIGN and event.payload is None:
            assert projection.key_of(event) == (projection.GAPS, event.header.log.hex())


@given(steps=step_lists)
def test_items_survive_the_store_encoding(steps: list[Step]) -> None:
    items = projection.fold({}, sign_steps(steps))
    assert stored(items) == items


# --- the campaign rules, by example -----------------------------------------------------


def fold_steps(*steps: Step) -> dict[str, CampaignItem]:
    items = projection.fold({}, sign_steps(steps))
    return {k[1].rsplit("/", 1)[1]: v for k, v in items.items() if isinstance(v, CampaignItem)}


def c(slug: str, op: str, title: str | None = None, text: str | None = None, log: int = 0) -> Step:
    return Step(log, Kind.CAMPAIGN, _campaign(slug, op, title, text), erased=False)


def test_a_campaign_lifecycle() -> None:
    items = fold_steps(
        c("rent", "updated", text="before creation: ignored"),
        c("rent", "created", "Rent strike", "no rises"),
        c("rent", "created", "Again", "a second created is ignored"),
        c("rent", "updated", text="week 2"),
        c("rent", "closed", text="we won"),
        c("rent", "updated", text="after closing: ignored"),
    )
    assert items == {
        "rent": CampaignItem(
            club=CLUB.id.hex(),
            log=LOGS[0].hex(),
            campaign="rent",
            title="Rent strike",
            text="we won",
            status="closed",
            created_seq=2,
            updated_seq=5,
            updates=2,
        )
    }


def test_a_campaign_lives_in_one_log() -> None:
    items = projection.fold(
        {},
        sign_steps(
            [c("rent", "created", "In federation"), c("rent", "created", "In public", log=1)]
        ),
    )
    titles = sorted(v.title for v in items.values() if isinstance(v, CampaignItem))
    assert titles == ["In federation", "In public"]
    assert {k[0] for k in items} == {CAMPAIGNS}


def test_erasing_the_created_step_leaves_updates_with_nothing_to_apply_to() -> None:
    created = c("rent", "created", "Rent strike")
    assert fold_steps(created._replace(erased=True), c("rent", "updated", text="x")) == {}


# --- payloads from a newer club (protocol.md §3.2: readers are lenient) ----------------


def test_a_campaign_created_by_a_newer_club_appears() -> None:
    """A field we do not know must not make a campaign vanish (it once did: the views
    decoded with the strict types that only making may use)."""
    created = c("rent", "created", "Rent strike", "no rises")
    updated = c("rent", "updated", text="week 2")
    items = fold_steps(
        created._replace(payload=newer(created.payload)),
        updated._replace(payload=newer(updated.payload)),
    )
    assert items == fold_steps(created, updated)
    assert items["rent"].title == "Rent strike"
    assert items["rent"].updates == 1


def test_an_action_of_a_newer_club_shows_in_full() -> None:
    payload = _action("Picket", 0, 0, "the depot", 12)
    events = sign_steps([Step(0, Kind.ACTION, newer(payload), erased=False)])
    [item] = projection.fold({}, events).values()
    assert isinstance(item, CalendarItem)
    assert (item.what, item.where, item.participants) == ("Picket", "the depot", 12)
    assert item.starts == START


def test_making_a_payload_still_refuses_unknown_fields() -> None:
    with pytest.raises(UsageError, match="unknown field `colour`"):
        make_payload(Kind.CAMPAIGN, {"campaign": "rent", "op": "created", "colour": "red"})
