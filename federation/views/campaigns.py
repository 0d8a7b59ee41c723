"""Campaigns: each of a club's campaigns, folded from its steps (kind campaign).

A campaign is keyed by (club, log, slug): it lives in one log, so its order is seq
order and never a timestamp (DESIGN principle 8). Steps are read leniently
(protocol.md §3.2 "Making and reading"): a step from a newer club with a field we
do not know counts like any other; one that does not decode changes nothing.

A step held without its payload is another matter (DESIGN principle 16): it may
have closed or changed any campaign of its log, so the view does not guess. Such
steps are kept per log as a `GapItem`, and every campaign of that log that the step
may have changed shows as unknown (`shown`) until the payload is filled in. A step
its origin erased (an erasure event, protocol.md §3.5) is as if it never was.
"""

from __future__ import annotations

import msgspec

from federation.core.events import VerifiedEvent
from federation.core.payloads import Campaign

CAMPAIGNS = "campaigns"


class CampaignItem(msgspec.Struct, frozen=True, omit_defaults=True):
    club: str
    log: str
    campaign: str
    title: str
    text: str
    status: str  # "open" or "closed"
    created_seq: int
    updated_seq: int
    updates: int
    joint: str = ""  # the joint campaign (proposal id) its created step shows, or ""


_campaign = msgspec.json.Decoder(Campaign)

GAPS = "campaign_gaps"
UNKNOWN = "unknown: a step's payload is missing here"


class GapItem(msgspec.Struct, frozen=True):
    """The steps of one log held here without their payload: (seq, event id hex)."""

    club: str
    log: str
    missing: tuple[tuple[int, str], ...]


def gap_key(event: VerifiedEvent) -> str:
    return event.header.log.hex()


def with_gap(item: GapItem | None, event: VerifiedEvent) -> GapItem:
    """A campaign step without its payload: one more gap in its log."""
    h = event.header
    missing = item.missing if item is not None else ()
    return GapItem(h.club.hex(), h.log.hex(), (*missing, (h.seq, event.id.hex())))


def without_gap(item: GapItem | None, erased: tuple[int, bytes]) -> GapItem | None:
    """An erasure by the origin names (seq, id): that gap is no gap (§3.5)."""
    if item is None:
        return None
    named = (erased[0], erased[1].hex())
    missing = tuple(m for m in item.missing if m != named)
    return msgspec.structs.replace(item, missing=missing) if missing else None


def shown(item: CampaignItem, gaps: GapItem | None) -> CampaignItem:
    """The campaign as it may be shown: unknown where a step of its log whose payload
    is missing here may have changed it, i.e. any such step, unless the campaign had
    closed before it (a closed campaign takes no more steps)."""
    if gaps is None:
        return item
    for seq, _ in gaps.missing:
        if not (item.status == "closed" and item.updated_seq < seq):
            return msgspec.structs.replace(item, status=UNKNOWN)
    return item


def read_step(event: VerifiedEvent) -> Campaign | None:
    """The step an event records, or None: erased, or a payload that does not decode."""
    if event.payload is None:
        return None
    try:
        return _campaign.decode(event.payload)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
        return None


def key(event: VerifiedEvent, step: Campaign) -> str:
    return f"{event.header.club.hex()}/{event.header.log.hex()}/{step.campaign}"


def unchanged(item: CampaignItem | None, step: Campaign) -> str | None:
    """Why `step` would change nothing of the campaign `item` (None: not made yet),
    or None if it changes it. The one rule of what changes a campaign: `apply` folds
    by it, and `post` refuses a step it would fold away (node/rails.py)."""
    if step.op == "created":
        if item is None:
            return None
        state = "closed" if item.status == "closed" else "open"
        return (
            f"campaign {step.campaign!r} exists already in this log ({state}, created "
            f"at seq {item.created_seq})"
        )
    if item is None:
        return f"there is no campaign {step.campaign!r} in this log: post op created first"
    if item.status == "closed":
        return (
            f"campaign {step.campaign!r} was closed at seq {item.updated_seq}: a closed "
            "campaign takes no more steps"
        )
    return None


def apply(item: CampaignItem | None, event: VerifiedEvent, step: Campaign) -> CampaignItem | None:
    """The campaign after one more of its steps, in seq order."""
    h = event.header
    if unchanged(item, step) is not None:
        # A second "created" for a slug, a step before creation or after closing.
        return item
    if item is None:  # "created", the only step that starts a campaign
        return CampaignItem(
            club=h.club.hex(),
            log=h.log.hex(),
            campaign=step.campaign,
            title=step.title or step.campaign,
            text=step.text or "",
            status="open",
            created_seq=h.seq,
            updated_seq=h.seq,
            updates=0,
            joint=step.joint or "",
        )
    return msgspec.structs.replace(
        item,
        title=step.title if step.title is not None else item.title,
        text=step.text if step.text is not None else item.text,
        status="closed" if step.op == "closed" else "open",
        updated_seq=h.seq,
        updates=item.updates + 1,
    )
