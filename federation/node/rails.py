"""Posting rails: what `post` refuses, asks about, or warns of, before it signs.

A signed event cannot be taken back from the clubs that received it, so a post that
reaches nobody, or reaches everyone by mistake, should not be signed silently:

- an audience `clubs:…` that names only our own club, ids that are not clubs (a log
  or an event this node holds), or clubs none of whom this node knows: refused, as
  it reaches nobody (issue 12);
- a named club with no route (not a peer, and no peer's roster lists it, the rule
  `proposal show` uses too): a warning, since a peer may add it later;
- a report into a public log: a member's account made public for good, so it needs
  `confirmed` (the CLI asks on a terminal, or takes `--yes`);
- a campaign step that would change nothing (`updated` for a campaign that does not
  exist, anything after `closed`, a second `created`, another club's campaign): refused
  with the reason the view itself gives (`views.campaigns.unchanged`, the rule its
  fold applies), so the refusal and the projection can never disagree.

`Node.post` calls `check` on every post a person asks for, on every path (the CLI,
or the running node's control socket), so the rails hold wherever the post is made.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from federation.core.canonical import Audience, Kind
from federation.core.log import default_log_name
from federation.core.payloads import Campaign
from federation.core.selection import fold_roster, roster_log_id
from federation.errors import UsageError
from federation.node import naming, projector
from federation.node.naming import NodeView
from federation.store.base import PAGE_EVENTS, LogRecord, Store
from federation.views import campaigns, projection
from federation.views.campaigns import CampaignItem


class ConfirmationNeeded(UsageError):
    """A post that needs the operator's explicit yes (`confirmed`): the CLI asks."""


async def routes(store: Store, clubs: Iterable[bytes]) -> dict[bytes, list[str]]:
    """How each of `clubs` can be reached from here: ["peer"] if it is a peer of ours,
    else the names of the peers whose rosters list it (they may relay to it), else
    [] (no route). The one rule of "NO ROUTE", for `post` and `proposal show`
    (protocol.md §3.7)."""
    peers = await store.peers()
    rosters: dict[bytes, set[bytes]] = {}
    for peer in peers:
        roster: set[bytes] = set()
        after = 0
        while page := await store.events(roster_log_id(peer.club), after, PAGE_EVENTS):
            after = page[-1].header.seq
            fold_roster(roster, page)
        rosters[peer.club] = roster
    ours = {p.club for p in peers}
    found: dict[bytes, list[str]] = {}
    for club in clubs:
        if club in ours:
            found[club] = ["peer"]
        else:
            found[club] = sorted(p.name for p in peers if club in rosters[p.club])
    return found


async def route_warnings(node: NodeView, audience: Audience) -> list[str]:
    """Warnings for an audience some of whose named clubs have no route from here."""
    if audience.kind != "clubs":
        return []
    others = [c for c in audience.clubs if c != node.club]
    names = await naming.club_names(node)
    return [
        f"{_club(names, c)} has no route from this node (not a peer, and no peer's "
        "roster lists it): it receives this post only once a route exists"
        for c, via in (await routes(node.store, others)).items()
        if not via
    ]


def _club(names: dict[bytes, str], club: bytes) -> str:
    name = names.get(club)
    return f"club {name!r} ({club.hex()[:12]})" if name else f"club {club.hex()[:12]}"


async def _check_audience(node: NodeView, audience: Audience) -> None:
    if audience.kind != "clubs":
        return
    others = [c for c in audience.clubs if c != node.club]
    if not others:
        raise UsageError(
            "the audience names only this club: no other club would receive it; use "
            "--audience private for the club alone, or name other clubs"
        )
    store = node.store
    logs = {r.id for r in await store.logs()}
    for c in others:
        if c in logs:
            raise UsageError(f"{c.hex()[:12]}… is a log id, not a club: name clubs in clubs:")
        if any(e.id == c for e in await store.events_by_id_prefix(c, limit=1)):
            raise UsageError(f"{c.hex()[:12]}… is an event id, not a club: name clubs in clubs:")
    known = {n.id for n in await naming.known_clubs(node, blocked=False)}
    if not known.intersection(others):
        listed = ", ".join(c.hex()[:12] for c in others)
        raise UsageError(
            f"none of the clubs named ({listed}) is known to this node, so the post would "
            "reach nobody; add the club as a peer (`federation peers add INVITE`) or name "
            "a known club (`federation peers list`)"
        )


async def _existing_log(node: NodeView, audience: Audience, name: str | None) -> LogRecord | None:
    name = name or default_log_name(audience)
    for record in await node.store.logs():
        if record.club == node.club and record.name == name:
            return record
    return None


async def campaign_now(store: Store, log: bytes, slug: str) -> CampaignItem | None:
    """Campaign `slug` of log `log` as the campaigns view holds it now: the saved
    projection, caught up in memory (node/projector.py), folded by the same
    `views.campaigns.apply` that `unchanged` decides for."""
    for item in await projector.items(store, projection.CAMPAIGNS):
        if isinstance(item, CampaignItem) and item.log == log.hex() and item.campaign == slug:
            return item
    return None


async def _check_campaign(
    node: NodeView, fields: dict[str, object], audience: Audience, log_name: str | None
) -> None:
    try:
        step = msgspec.convert(fields, Campaign, strict=False)
    except msgspec.ValidationError:
        return  # make_payload reports what is wrong with the fields
    record = await _existing_log(node, audience, log_name)
    item = None if record is None else await campaign_now(node.store, record.id, step.campaign)
    why = campaigns.unchanged(item, step)
    if why is None:
        return
    if item is None:
        names = await naming.club_names(node)
        theirs = sorted(
            {
                _club(names, bytes.fromhex(c.club))
                for c in await projector.campaigns(node.store)
                if c.campaign == step.campaign and c.club != node.club.hex()
            }
        )
        if theirs:
            why = (
                f"campaign {step.campaign!r} is {', '.join(theirs)}'s, not this club's: a "
                "club's steps change only its own campaigns"
            )
    raise UsageError(f"this step would change nothing: {why}")


async def check(
    node: NodeView,
    kind: Kind,
    fields: dict[str, object],
    audience: Audience,
    log_name: str | None,
    *,
    confirmed: bool = False,
) -> None:
    """Refuse (UsageError, saying why) a post that reaches nobody or changes nothing;
    ConfirmationNeeded for a report into a public log unless `confirmed`."""
    await _check_audience(node, audience)
    if kind == Kind.CAMPAIGN:
        await _check_campaign(node, fields, audience, log_name)
    if kind == Kind.REPORT and audience.kind == "public" and not confirmed:
        raise ConfirmationNeeded(
            "a report is a member's own account; into a public log it goes to anyone, on "
            "the feed too, and copies cannot be recalled: confirm on a terminal, or pass "
            "--yes"
        )
