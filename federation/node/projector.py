"""Keeps the projections (campaigns, calendar) in step with the logs, and erases.

A follower in the eventsourcing sense: it reads events past its per-log read
positions, folds them with the pure `core.projection`, and saves the changed items
and the new positions in one transaction. `rebuild` folds everything from nothing
and must give identical items (tests/test_projector.py checks it).
"""

from __future__ import annotations

from federation.core.events import VerifiedEvent
from federation.store.base import ProjectionUpdate, Store
from federation.views import projection
from federation.views.projection import Item, Key

PAGE_EVENTS = 5000


async def _fold_log(
    store: Store, log: bytes, after: int, items: dict[Key, Item], *, preload: bool
) -> int:
    """Fold a log's events after seq `after` into items; returns the last seq seen."""
    last = after
    while True:
        page = await store.events(log, last, PAGE_EVENTS)
        if not page:
            return last
        if preload:
            await _preload(store, page, items)
        projection.fold(items, page)
        last = page[-1].header.seq
        if len(page) < PAGE_EVENTS:
            return last


async def _preload(store: Store, events: list[VerifiedEvent], items: dict[Key, Item]) -> None:
    """Load the stored items these events touch, so the fold continues from them."""
    wanted: dict[str, list[str]] = {}
    for event in events:
        key = projection.key_of(event)
        if key is not None and key not in items:
            wanted.setdefault(key[0], []).append(key[1])
    for name, keys in wanted.items():
        for k, data in (await store.projection_get(name, keys)).items():
            items[(name, k)] = projection.decode_item(name, data)


async def catch_up(store: Store) -> int:
    """Bring the projections up to every log's head; returns how many events were read."""
    positions = await store.projection_positions()
    items: dict[Key, Item] = {}
    moved: dict[bytes, int] = {}
    read = 0
    for record in await store.logs():
        at = positions.get(record.id, 0)
        if record.head is None or record.head.seq <= at:
            continue
        moved[record.id] = await _fold_log(store, record.id, at, items, preload=True)
        read += moved[record.id] - at
    if moved:
        encoded = {key: projection.encode_item(item) for key, item in items.items()}
        await store.save_projection(ProjectionUpdate(encoded, moved))
    return read


async def rebuild(store: Store) -> int:
    """Recompute every projection from nothing; returns how many items it holds."""
    items: dict[Key, Item] = {}
    positions: dict[bytes, int] = {}
    for record in await store.logs():
        positions[record.id] = await _fold_log(store, record.id, 0, items, preload=False)
    encoded: dict[Key, bytes | None] = {k: projection.encode_item(v) for k, v in items.items()}
    await store.save_projection(ProjectionUpdate(encoded, positions), replace=True)
    return len(items)


async def erase(store: Store, event: VerifiedEvent) -> None:
    """Drop an event's payload and re-derive the projection item it had shaped."""
    await catch_up(store)
    key = projection.key_of(event)  # computed before erasing: a campaign step names its key
    update = None
    if key is not None:
        # Refold the item from its log as a rebuild would after the erase, then store
        # both in one transaction: erased text must not survive in a projection.
        items: dict[Key, Item] = {}
        after = 0
        while page := await store.events(event.header.log, after, PAGE_EVENTS):
            projection.fold(items, [_without_payload(e, event.id) for e in page])
            after = page[-1].header.seq
        value = items.get(key)
        update = ProjectionUpdate(
            {key: None if value is None else projection.encode_item(value)}, {}
        )
    await store.erase(event.id, update)


def _without_payload(event: VerifiedEvent, erased: bytes) -> VerifiedEvent:
    if event.id != erased:
        return event
    return VerifiedEvent(event.id, event.header, event.signed, None)


async def items(store: Store, name: str) -> list[Item]:
    await catch_up(store)
    return [projection.decode_item(name, v) for v in (await store.projection_items(name)).values()]
