"""Campaigns: each of a club's campaigns, folded from its steps (kind campaign).

A campaign is keyed by (club, log, slug): it lives in one log, so its order is seq
order and never a timestamp (DESIGN principle 8). Steps are read leniently
(protocol.md §3.2 "Making and reading"): a step from a newer club with a field we
do not know counts like any other; one that does not decode changes nothing.
"""

from __future__ import annotations

import msgspec

from federation.core.events import VerifiedEvent
from federation.core.payloads import Campaign

CAMPAIGNS = "campaigns"


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


_campaign = msgspec.json.Decoder(Campaign)


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


def apply(item: CampaignItem | None, event: VerifiedEvent, step: Campaign) -> CampaignItem | None:
    """The campaign after one more of its steps, in seq order."""
    h = event.header
    if step.op == "created":
        if item is not None:
            return item  # a second "created" for a live slug is ignored
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
        )
    if item is None or item.status == "closed":
        return item  # updates before creation or after closing change nothing
    return msgspec.structs.replace(
        item,
        title=step.title if step.title is not None else item.title,
        text=step.text if step.text is not None else item.text,
        status="closed" if step.op == "closed" else "open",
        updated_seq=h.seq,
        updates=item.updates + 1,
    )
