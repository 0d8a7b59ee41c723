"""Keeps the projections (campaigns, calendar) in step with the logs, and erases.

A follower in the eventsourcing sense: it reads events past its per-log read
positions, folds them with the pure `views.projection`, and saves the changed items
and the new positions in one transaction (`catch_up`, for writers: erase, rebuild,
a node's run). `rebuild` folds everything from nothing and must give identical
items (tests/node/test_projector.py checks it). Reads never write: `items` folds
what is past the saved positions in memory, so a reader that may not write (the
feed) sees the same caught-up view.
"""

from __future__ import annotations

from typing import Protocol

from federation.core.events import VerifiedEvent
from federation.store.base import PAGE_EVENTS, LogStore, ProjectionUpdate, ViewStore
from federation.views import projection
from federation.views.campaigns import shown
from federation.views.projection import Item, Key


class ViewSource(LogStore, ViewStore, Protocol):
    """What the projector needs of a store: the logs, and the views' saved state."""


async def _fold_log(
    store: ViewSource, log: bytes, after: int, items: dict[Key, Item], *, preload: bool
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


async def _preload(store: ViewSource, events: list[VerifiedEvent], items: dict[Key, Item]) -> None:
    """Load the stored items these events touch, so the fold continues from them."""
    wanted: dict[str, list[str]] = {}
    for event in events:
        key = projection.key_of(event)
        if key is not None and key not in items:
            wanted.setdefault(key[0], []).append(key[1])
    for name, keys in wanted.items():
        for k, data in (await store.projection_get(name, keys)).items():
            items[(name, k)] = projection.decode_item(name, data)


async def _fold_past_positions(
    store: ViewSource,
) -> tuple[dict[Key, Item], dict[bytes, int], int]:
    """The items that the events past the saved read positions change (folded on
    from the saved items they touch), each such log's new position, and how many
    events were read. Saves nothing.

    A log without a read position is folded from its start, from nothing: its items
    then replace all the saved ones of that log (`_replaced`). The store drops a
    log's position where its payloads change other than by an append (an erasure
    by the origin, a payload filled in: protocol.md §3.5, §6.3)."""
    positions = await store.projection_positions()
    items: dict[Key, Item] = {}
    moved: dict[bytes, int] = {}
    read = 0
    for record in await store.logs():
        at = positions.get(record.id, 0)
        if record.head is None or record.head.seq <= at:
            continue
        moved[record.id] = await _fold_log(store, record.id, at, items, preload=at > 0)
        read += moved[record.id] - at
    return items, moved, read


def _from_start(moved: dict[bytes, int], positions: dict[bytes, int]) -> set[bytes]:
    return {log for log in moved if positions.get(log, 0) == 0}


async def _replaced(
    store: ViewSource, logs: set[bytes], items: dict[Key, Item]
) -> dict[Key, bytes | None]:
    """Deletions for the saved items of `logs` that a fold from their start (`items`)
    no longer holds: what an erasure took out of a view leaves its saved rows."""
    if not logs:
        return {}
    stale: dict[Key, bytes | None] = {}
    for name in projection.VIEWS:
        for key, data in (await store.projection_items(name)).items():
            if (name, key) not in items and projection.log_of(
                projection.decode_item(name, data)
            ) in logs:
                stale[(name, key)] = None
    return stale


async def catch_up(store: ViewSource) -> int:
    """Bring the saved projections up to every log's head; returns how many events
    were read. For writers: a reader uses `items`, which saves nothing."""
    positions = await store.projection_positions()
    items, moved, read = await _fold_past_positions(store)
    if moved:
        encoded: dict[Key, bytes | None] = await _replaced(
            store, _from_start(moved, positions), items
        )
        encoded.update((key, projection.encode_item(item)) for key, item in items.items())
        await store.save_projection(ProjectionUpdate(encoded, moved))
    return read


async def rebuild(store: ViewSource) -> int:
    """Recompute every projection from nothing; returns how many items it holds."""
    items: dict[Key, Item] = {}
    positions: dict[bytes, int] = {}
    for record in await store.logs():
        positions[record.id] = await _fold_log(store, record.id, 0, items, preload=False)
    encoded: dict[Key, bytes | None] = {k: projection.encode_item(v) for k, v in items.items()}
    await store.save_projection(ProjectionUpdate(encoded, positions), replace=True)
    return len(items)


async def erase(store: ViewSource, event: VerifiedEvent) -> None:
    """Wipe an event's payload here and re-derive the projection items of its log."""
    await catch_up(store)
    # Refold the log as a rebuild would after the erase, then store both in one
    # transaction: erased text must not survive in a projection.
    log = event.header.log
    items: dict[Key, Item] = {}
    after = 0
    while page := await store.events(log, after, PAGE_EVENTS):
        projection.fold(items, [_without_payload(e, event.id) for e in page])
        after = page[-1].header.seq
    encoded = await _replaced(store, {log}, items)
    encoded.update((key, projection.encode_item(item)) for key, item in items.items())
    await store.erase(event.id, ProjectionUpdate(encoded, {log: after}))


def _without_payload(event: VerifiedEvent, erased: bytes) -> VerifiedEvent:
    if event.id != erased:
        return event
    return VerifiedEvent(event.id, event.header, event.signed, None)


async def items(store: ViewSource, name: str) -> list[Item]:
    """The items of view `name` (by key), caught up to every log's head in memory:
    nothing is saved, so a reader that may not write can call it."""
    positions = await store.projection_positions()
    changed, moved, _ = await _fold_past_positions(store)
    replaced = _from_start(moved, positions)
    saved = await store.projection_items(name)
    merged = {key: projection.decode_item(name, data) for key, data in saved.items()}
    merged = {k: v for k, v in merged.items() if projection.log_of(v) not in replaced}
    merged.update((key, item) for (view, key), item in changed.items() if view == name)
    return [merged[key] for key in sorted(merged)]


async def campaigns(store: ViewSource) -> list[projection.CampaignItem]:
    """The campaigns as they may be shown: unknown where a step's payload is
    missing here (views.campaigns.shown)."""
    gaps = {
        g.log: g for g in await items(store, projection.GAPS) if isinstance(g, projection.GapItem)
    }
    return [
        shown(c, gaps.get(c.log))
        for c in await items(store, projection.CAMPAIGNS)
        if isinstance(c, projection.CampaignItem)
    ]
