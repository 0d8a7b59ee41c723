"""Projections: the club's campaigns and its calendar of actions, folded from the logs.

A projection is a keyed fold: each event touches at most one item, found by
`key_of`, and `apply` turns the item before into the item after. Folding any
log's events in seq order gives the same items whether done at once (`rebuild`)
or a batch at a time; tests/core/test_projection.py checks it for any split.

Campaigns are keyed by (club, log, campaign slug): a campaign lives in one log, so
its order is seq order and never a timestamp (DESIGN principle 8).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec

from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.core.payloads import Action, Campaign

CALENDAR = "calendar"
CAMPAIGNS = "campaigns"


class CalendarItem(msgspec.Struct, frozen=True):
    """One action, as a calendar shows it. An erased action keeps its place, marked."""

    event: str
    club: str
    log: str
    seq: int
    erased: bool = False
    what: str = ""
    starts: dt.datetime | None = None
    ends: dt.datetime | None = None
    where: str = ""
    participants: int | None = None


class CampaignItem(msgspec.Struct, frozen=True):
    club: str
    log: str
    campaign: str
    title: str
    text: str
    status: str  # "open" or "closed"
    created_seq: int
    updated_seq: int
    updates: int


Item = CalendarItem | CampaignItem
Key = tuple[str, str]

_action = msgspec.json.Decoder(Action)
_campaign = msgspec.json.Decoder(Campaign)
_encoder = msgspec.json.Encoder()
_calendar = msgspec.json.Decoder(CalendarItem)
_campaigns = msgspec.json.Decoder(CampaignItem)


def _read_campaign(event: VerifiedEvent) -> Campaign | None:
    if event.payload is None:
        return None
    try:
        return _campaign.decode(event.payload)
    except msgspec.DecodeError:
        return None  # a payload that does not decode changes nothing


def key_of(event: VerifiedEvent) -> Key | None:
    kind = event.header.kind
    if kind == Kind.ACTION:
        return (CALENDAR, event.id.hex())
    if kind == Kind.CAMPAIGN:
        c = _read_campaign(event)
        if c is None:
            return None  # an erased step cannot be attributed to its campaign
        return (CAMPAIGNS, f"{event.header.club.hex()}/{event.header.log.hex()}/{c.campaign}")
    return None


def apply(item: Item | None, event: VerifiedEvent) -> Item | None:
    h = event.header
    if h.kind == Kind.ACTION:
        base = CalendarItem(event.id.hex(), h.club.hex(), h.log.hex(), h.seq)
        if event.payload is None:
            return msgspec.structs.replace(base, erased=True)
        try:
            a = _action.decode(event.payload)
        except msgspec.DecodeError:
            return base
        return msgspec.structs.replace(
            base,
            what=a.what,
            starts=a.starts,
            ends=a.ends,
            where=a.where,
            participants=a.participants,
        )
    c = _read_campaign(event)
    if c is None:
        return item
    current = item if isinstance(item, CampaignItem) else None
    if c.op == "created":
        if current is not None:
            return current  # a second "created" for a live slug is ignored
        return CampaignItem(
            club=h.club.hex(),
            log=h.log.hex(),
            campaign=c.campaign,
            title=c.title or c.campaign,
            text=c.text or "",
            status="open",
            created_seq=h.seq,
            updated_seq=h.seq,
            updates=0,
        )
    if current is None or current.status == "closed":
        return current  # updates before creation or after closing change nothing
    return msgspec.structs.replace(
        current,
        title=c.title if c.title is not None else current.title,
        text=c.text if c.text is not None else current.text,
        status="closed" if c.op == "closed" else "open",
        updated_seq=h.seq,
        updates=current.updates + 1,
    )


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
