"""The projector against a real SQLite store: catching up in steps, and erasing, both
end with exactly the items a rebuild from nothing gives."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Sequence
from itertools import pairwise
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.node import projector
from federation.store.sqlite import SqliteStore
from federation.views.projection import CALENDAR, CAMPAIGNS, CalendarItem, CampaignItem, decode_item
from tests.views.test_projection import CLUB, Step, _action, _campaign, sign_steps, step_lists

Items = dict[str, dict[str, bytes]]


async def open_store(path: Path) -> SqliteStore:
    store = await SqliteStore.open(path, create=True)
    await store.put_club(CLUB.id, CLUB.genesis)
    for audience in ("federation", "public"):
        await store.put_log(CLUB.log(audience), CLUB.descriptors[audience])
    return store


async def items_of(store: SqliteStore) -> Items:
    return {name: await store.projection_items(name) for name in (CALENDAR, CAMPAIGNS)}


async def rebuilt(store: SqliteStore) -> Items:
    await projector.rebuild(store)
    return await items_of(store)


def with_payloads(steps: Sequence[Step]) -> list[VerifiedEvent]:
    """Every step signed, none erased: the store erases them later, as a node would."""
    return sign_steps([s._replace(erased=False) for s in steps])


@settings(max_examples=15, deadline=None)
@given(steps=step_lists, data=st.data())
async def test_catching_up_in_steps_equals_a_rebuild(
    tmp_path: Path, steps: list[Step], data: st.DataObject
) -> None:
    events = with_payloads(steps)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4), label="cuts"))
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        async with await open_store(Path(d) / "store.sqlite") as store:
            read = 0
            for lo, hi in pairwise([0, *cuts, len(events)]):
                await store.append(events[lo:hi])
                read += await projector.catch_up(store)
                # Nothing new: catching up again reads nothing and changes nothing.
                before = await items_of(store)
                assert await projector.catch_up(store) == 0
                assert await items_of(store) == before
            assert read == len(events)
            caught_up = await items_of(store)
            positions = await store.projection_positions()
            assert await rebuilt(store) == caught_up
            assert {k: v for k, v in (await store.projection_positions()).items() if v} == positions


@settings(max_examples=15, deadline=None)
@given(steps=step_lists, data=st.data())
async def test_erasing_at_any_time_equals_a_rebuild(
    tmp_path: Path, steps: list[Step], data: st.DataObject
) -> None:
    """Erase the steps marked erased, each right after the batch that brought it."""
    events = with_payloads(steps)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=3), label="cuts"))
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        async with await open_store(Path(d) / "store.sqlite") as store:
            for lo, hi in pairwise([0, *cuts, len(events)]):
                await store.append(events[lo:hi])
                if data.draw(st.booleans(), label="catch up first"):
                    await projector.catch_up(store)
                for step, event in zip(steps[lo:hi], events[lo:hi], strict=True):
                    if step.erased:
                        await projector.erase(store, event)
            await projector.catch_up(store)
            after_erase = await items_of(store)
            assert await rebuilt(store) == after_erase


@settings(max_examples=10, deadline=None)
@given(steps=step_lists, data=st.data())
async def test_reading_never_writes_and_sees_what_catching_up_saves(
    tmp_path: Path, steps: list[Step], data: st.DataObject
) -> None:
    """`items` folds what is past the saved positions in memory: another connection
    sees no commit (data_version), the saved rows stay as they were, and the items
    are those a writer's catch_up then saves."""
    events = with_payloads(steps)
    cut = data.draw(st.integers(0, len(events)), label="caught up to")
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        path = Path(d) / "store.sqlite"
        async with await open_store(path) as store, await SqliteStore.open(path) as watcher:
            await store.append(events[:cut])
            await projector.catch_up(store)
            await store.append(events[cut:])
            saved, positions = await items_of(store), await store.projection_positions()
            version = await watcher.data_version()
            read = {name: await projector.items(store, name) for name in (CALENDAR, CAMPAIGNS)}
            assert await watcher.data_version() == version
            assert await items_of(store) == saved
            assert await store.projection_positions() == positions
            await projector.catch_up(store)
            assert {
                name: [decode_item(name, v) for v in rows.values()]
                for name, rows in (await items_of(store)).items()
            } == read


# --- erasing one event, by example ------------------------------------------------------

SCENARIO = [
    Step(0, Kind.CAMPAIGN, _campaign("rent", "created", "Rent strike", "no rises"), False),
    Step(0, Kind.ACTION, _action("Picket", 0, 0, "the depot", 12), False),
    Step(0, Kind.CAMPAIGN, _campaign("rent", "updated", "Rent strike, week 2", None), False),
    Step(1, Kind.ACTION, _action("March", 24, 1, "town hall", None), False),
    Step(0, Kind.CAMPAIGN, _campaign("rent", "closed", None, "we won"), False),
    Step(0, Kind.CAMPAIGN, _campaign("library", "created", None, None), False),
]


@pytest.fixture
async def scenario(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, list[VerifiedEvent]]]:
    async with await open_store(tmp_path / "store.sqlite") as store:
        events = with_payloads(SCENARIO)
        await store.append(events)
        await projector.catch_up(store)
        yield store, events


async def erase_and_compare(store: SqliteStore, event: VerifiedEvent) -> Items:
    """Erase, check the items equal a rebuild's, and return them."""
    await projector.erase(store, event)
    erased = await items_of(store)
    assert await rebuilt(store) == erased
    held = await store.event_at(event.header.log, event.header.seq)
    assert held is not None
    assert held.payload is None
    assert held.signed == event.signed
    return erased


def campaign(items: Items, slug: str) -> CampaignItem | None:
    for key, value in items[CAMPAIGNS].items():
        if key.endswith("/" + slug):
            item = decode_item(CAMPAIGNS, value)
            assert isinstance(item, CampaignItem)
            return item
    return None


async def test_erasing_a_campaign_update(scenario: tuple[SqliteStore, list[VerifiedEvent]]) -> None:
    store, events = scenario
    items = await erase_and_compare(store, events[2])
    rent = campaign(items, "rent")
    assert rent is not None
    assert (rent.title, rent.text, rent.status, rent.updates) == (
        "Rent strike",
        "we won",
        "closed",
        1,
    )


async def test_erasing_a_campaign_close(scenario: tuple[SqliteStore, list[VerifiedEvent]]) -> None:
    store, events = scenario
    rent = campaign(await erase_and_compare(store, events[4]), "rent")
    assert rent is not None
    assert (rent.status, rent.updated_seq, rent.updates) == ("open", 3, 1)


async def test_erasing_a_campaign_creation(
    scenario: tuple[SqliteStore, list[VerifiedEvent]],
) -> None:
    store, events = scenario
    items = await erase_and_compare(store, events[0])
    assert campaign(items, "rent") is None  # its updates have nothing to apply to
    assert campaign(items, "library") is not None


async def test_erasing_an_action(scenario: tuple[SqliteStore, list[VerifiedEvent]]) -> None:
    store, events = scenario
    action = events[1]
    items = await erase_and_compare(store, action)
    item = decode_item(CALENDAR, items[CALENDAR][action.id.hex()])
    assert item == CalendarItem(
        action.id.hex(), CLUB.id.hex(), action.header.log.hex(), action.header.seq, erased=True
    )
    other = decode_item(CALENDAR, items[CALENDAR][events[3].id.hex()])
    assert isinstance(other, CalendarItem)
    assert other.what == "March"
    assert not other.erased


async def test_erasing_twice_and_erasing_a_note_change_nothing_more(tmp_path: Path) -> None:
    note = Step(0, Kind.NOTE, b'{"text":"minutes"}', False)
    async with await open_store(tmp_path / "store.sqlite") as store:
        events = with_payloads([*SCENARIO, note])
        await store.append(events)
        await projector.erase(store, events[-1])  # erase catches up first
        await projector.erase(store, events[1])
        once = await items_of(store)
        held = await store.event_at(events[1].header.log, events[1].header.seq)
        assert held is not None
        await projector.erase(store, held)  # already erased: its item stays erased
        assert await items_of(store) == once == await rebuilt(store)
        assert msgspec.structs.replace(events[1], payload=None) == held
