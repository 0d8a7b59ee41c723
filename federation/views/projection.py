"""Projections: the views (calendar, campaigns) as one keyed fold over the logs.

A projection is a keyed fold: each event touches at most one item, found by
`key_of`, and `apply` turns the item before into the item after. Folding any
log's events in seq order gives the same items whether done at once (`rebuild`)
or a batch at a time; tests/views/test_projection.py checks it for any split.
What each view makes of its events is in its own module (`calendar`, `campaigns`).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.views import calendar, campaigns
from federation.views.calendar import CALENDAR, CalendarItem
from federation.views.campaigns import CAMPAIGNS, CampaignItem

__all__ = [
    "CALENDAR",
    "CAMPAIGNS",
    "CalendarItem",
    "CampaignItem",
    "Item",
    "Key",
    "apply",
    "decode_item",
    "encode_item",
    "fold",
    "key_of",
]

Item = CalendarItem | CampaignItem
Key = tuple[str, str]  # (view name, item key)

_encoder = msgspec.json.Encoder()
_calendar = msgspec.json.Decoder(CalendarItem)
_campaigns = msgspec.json.Decoder(CampaignItem)


def key_of(event: VerifiedEvent) -> Key | None:
    kind = event.header.kind
    if kind == Kind.ACTION:
        return (CALENDAR, calendar.key(event))
    if kind == Kind.CAMPAIGN:
        step = campaigns.read_step(event)
        if step is None:
            return None  # an erased step cannot be attributed to its campaign
        return (CAMPAIGNS, campaigns.key(event, step))
    return None


def apply(item: Item | None, event: VerifiedEvent) -> Item | None:
    """The item after `event`, which `key_of` gave this item's key."""
    if event.header.kind == Kind.ACTION:
        return calendar.item(event)
    step = campaigns.read_step(event)
    if step is None:
        return item
    return campaigns.apply(item if isinstance(item, CampaignItem) else None, event, step)


def fold(items: dict[Key, Item], events: Iterable[VerifiedEvent]) -> dict[Key, Item]:
    """Apply events (each log in seq order) to items; returns the changed items map."""
    for event in events:
        key = key_of(event)
        if key is None:
            continue
        new = apply(items.get(key), event)
        if new is None:
            items.pop(key, None)
        else:
            items[key] = new
    return items


def encode_item(item: Item) -> bytes:
    return _encoder.encode(item)


def decode_item(name: str, data: bytes) -> Item:
    if name == CALENDAR:
        return _calendar.decode(data)
    return _campaigns.decode(data)
