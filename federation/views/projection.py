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
from federation.core.payloads import erasure_target
from federation.views import calendar, campaigns
from federation.views.calendar import CALENDAR, CalendarItem
from federation.views.campaigns import CAMPAIGNS, GAPS, CampaignItem, GapItem

__all__ = [
    "CALENDAR",
    "CAMPAIGNS",
    "GAPS",
    "VIEWS",
    "CalendarItem",
    "CampaignItem",
    "GapItem",
    "Item",
    "Key",
    "apply",
    "decode_item",
    "encode_item",
    "fold",
    "key_of",
    "log_of",
]

Item = CalendarItem | CampaignItem | GapItem
Key = tuple[str, str]  # (view name, item key)
VIEWS = (CALENDAR, CAMPAIGNS, GAPS)

_encoder = msgspec.json.Encoder()
_calendar = msgspec.json.Decoder(CalendarItem)
_campaigns = msgspec.json.Decoder(CampaignItem)
_gaps = msgspec.json.Decoder(GapItem)


def key_of(event: VerifiedEvent) -> Key | None:
    kind = event.header.kind
    if kind == Kind.ACTION:
        return (CALENDAR, calendar.key(event))
    if kind == Kind.CAMPAIGN:
        if event.payload is None:  # missing here: a gap in its log (DESIGN principle 16)
            return (GAPS, campaigns.gap_key(event))
        step = campaigns.read_step(event)
        if step is None:
            return None  # a step that does not decode changes nothing
        return (CAMPAIGNS, campaigns.key(event, step))
    if kind == Kind.ERASURE and erasure_target(event.header.seq, event.payload) is not None:
        return (GAPS, campaigns.gap_key(event))
    return None


def apply(item: Item | None, event: VerifiedEvent) -> Item | None:
    """The item after `event`, which `key_of` gave this item's key."""
    kind = event.header.kind
    if kind == Kind.ACTION:
        return calendar.item(event)
    if kind == Kind.ERASURE:
        named = erasure_target(event.header.seq, event.payload)
        assert named is not None  # key_of gives erasures that name nothing no key
        return campaigns.without_gap(item if isinstance(item, GapItem) else None, named)
    if event.payload is None:
        return campaigns.with_gap(item if isinstance(item, GapItem) else None, event)
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
    if name == GAPS:
        return _gaps.decode(data)
    return _campaigns.decode(data)


def log_of(item: Item) -> bytes:
    """The log an item was folded from: when a log is folded again from its start,
    its items replace all it had before."""
    return bytes.fromhex(item.log)
