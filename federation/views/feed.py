"""The feed, pure: public events turned into feed items, and pages of them.

The shell (`web/feed.py`) decides which logs are public (`core.selection.may_receive`
for an anonymous requester) and hands only their events here; this module never
sees anything else. What it makes is the response types of the feed's JSON and
OpenAPI (`FeedPage`, `FeedItem`, `Upcoming`, `CampaignEntry`, `ClubEntry`), a page of
index entries newest first with a stable cursor, and text made safe for every format.

Other clubs' text is untrusted (DESIGN principle 19). `clean` drops what no format
should carry: control characters (XML 1.0 and iCalendar forbid most of them, and a
terminal acts on them), bidi embeddings, overrides and isolates (they make text read
backwards, e.g. a file name that hides its extension), lone surrogates and the
non-characters XML forbids. Each format then escapes the rest as it must (jinja2's
autoescape, feedgenerator's XML writer, icalendar's escaping, msgspec's JSON).
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import msgspec

from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.core.evidence import kind_name, time_of
from federation.core.payloads import read_payload
from federation.views.campaigns import CampaignItem

# Items per page: the default, and the most a client may ask for (bounded work).
PAGE_ITEMS = 30
MAX_PAGE_ITEMS = 100
# A title is one line; longer text is cut with an ellipsis (the item links to the rest).
TITLE_CHARS = 120
# The most text one item carries: payloads hold at most 16,000 characters of text.
TEXT_CHARS = 16_000

_UNSAFE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff\ufffe\uffff]"
)
_SPACE = re.compile(r"\s+")


def clean(text: str, limit: int = TEXT_CHARS) -> str:
    """Other clubs' text without control, bidi-control or non-XML characters, at most
    `limit` characters; newlines and tabs stay (a note may have paragraphs)."""
    text = _UNSAFE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def line(text: str, limit: int = TITLE_CHARS) -> str:
    """`clean`, on one line: every run of white space becomes one space."""
    return clean(_SPACE.sub(" ", text).strip(), limit)


class ClubEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    url: str


class JointCampaign(msgspec.Struct, frozen=True, kw_only=True):
    """A joint campaign (protocol.md §3.7) as the feed shows it: its proposal id, and
    the clubs whose own public log shows it now, each on its own signed step."""

    proposal: str
    clubs: list[ClubEntry]


class FeedItem(msgspec.Struct, frozen=True, kw_only=True):
    """One public event as the feed shows it."""

    id: str
    club: str
    club_name: str
    log: str
    seq: int
    kind: str
    time: dt.datetime  # the club's claim (DESIGN principle 8): for display only
    title: str
    text: str = ""
    erased: bool = False
    starts: dt.datetime | None = None  # actions
    ends: dt.datetime | None = None
    where: str = ""
    campaign: str = ""  # campaign steps
    op: str = ""
    joint: JointCampaign | None = None  # a step showing a joint campaign
    cursor: str  # the page after this item starts here
    event_url: str  # the raw signed event, to verify offline


class FeedPage(msgspec.Struct, frozen=True):
    items: list[FeedItem]
    next: str | None  # the cursor of the next (older) page, or null at the end


class Upcoming(msgspec.Struct, frozen=True, kw_only=True):
    """An action that has not started yet, from the calendar view."""

    event: str
    club: str
    club_name: str
    what: str
    starts: dt.datetime
    ends: dt.datetime | None = None
    where: str = ""
    event_url: str


class CampaignEntry(msgspec.Struct, frozen=True, kw_only=True):
    club: str
    club_name: str
    campaign: str
    title: str
    text: str
    status: str
    joint: JointCampaign | None = None  # one entry for all the clubs that show it

    def by(self, club: str) -> bool:
        """Is this campaign shown by `club` (its own, or a joint one it shows)?"""
        return club == self.club or (
            self.joint is not None and any(c.id == club for c in self.joint.clubs)
        )


class Entry(NamedTuple):
    """One public event in the feed's index, ordered by (time, id): the cursor."""

    time_us: int
    id: bytes
    log: bytes
    seq: int
    kind: int
    club: bytes
    campaign: str  # a campaign step's slug, else ""
    joint: str = ""  # the proposal id of the joint campaign a campaign step shows, else ""


class Filter(NamedTuple):
    club: bytes | None = None
    kind: int | None = None
    campaign: str | None = None  # a slug, or a joint campaign's proposal id

    def matches(self, entry: Entry) -> bool:
        return (
            (self.club is None or entry.club == self.club)
            and (self.kind is None or entry.kind == self.kind)
            and (self.campaign is None or self.campaign in (entry.campaign, entry.joint))
        )


def cursor_of(entry: Entry) -> str:
    return f"{entry.time_us}.{entry.id.hex()}"


def parse_cursor(text: str) -> tuple[int, bytes] | None:
    """A cursor as `cursor_of` writes it; None if it is not one."""
    time, _, ident = text.partition(".")
    if not re.fullmatch(r"-?[0-9]{1,20}", time) or not re.fullmatch(r"[0-9a-f]{64}", ident):
        return None
    return int(time), bytes.fromhex(ident)


def parse_kind(text: str) -> int | None:
    try:
        return int(Kind[text.upper()])
    except KeyError:
        return None


def entry_of(event: VerifiedEvent) -> Entry:
    h = event.header
    slug = joint = ""
    if h.kind == Kind.CAMPAIGN and event.payload is not None:
        fields = read_payload(h.kind, event.payload)
        if fields is not None:
            slug, joint = str(fields["campaign"]), str(fields["joint"] or "")
    return Entry(h.time_us, event.id, h.log, h.seq, h.kind, h.club, slug, joint)


def page(
    entries: Sequence[Entry], before: tuple[int, bytes] | None, limit: int, where: Filter
) -> tuple[list[Entry], str | None]:
    """Up to `limit` entries matching `where`, newest first, older than the cursor
    `before` (None: from the newest). `entries` is sorted oldest first. Returns the
    page and the cursor of the next one (None when nothing older matches)."""
    end = len(entries) if before is None else bisect.bisect_left(entries, before)
    found: list[Entry] = []
    i = end - 1
    while i >= 0 and len(found) <= limit:
        if where.matches(entries[i]):
            found.append(entries[i])
        i -= 1
    more = len(found) > limit
    found = found[:limit]
    return found, (cursor_of(found[-1]) if more and found else None)


def club_name(club: bytes, names: dict[bytes, str]) -> str:
    name = names.get(club)
    return line(name, 100) if name else f"club {club.hex()[:12]}"


def item_of(
    event: VerifiedEvent, names: dict[bytes, str], joint: Mapping[str, JointCampaign] | None = None
) -> FeedItem:
    """The feed item of a public event, its text cleaned; `joint`: the joint campaigns
    shown now, by proposal id (`campaign_entries`)."""
    h = event.header
    entry = entry_of(event)
    base = FeedItem(
        id=event.id.hex(),
        club=h.club.hex(),
        club_name=club_name(h.club, names),
        log=h.log.hex(),
        seq=h.seq,
        kind=kind_name(h.kind),
        time=time_of(h.time_us),
        title="",
        cursor=cursor_of(entry),
        event_url=f"/events/{event.id.hex()}",
    )
    if event.payload is None:
        return msgspec.structs.replace(base, title="[erased by its club]", erased=True)
    fields = read_payload(h.kind, event.payload)
    if fields is None:
        return msgspec.structs.replace(base, title="[a payload this node cannot read]")
    text = clean(str(fields.get("text") or ""))
    if h.kind == Kind.ACTION:
        starts, ends = fields["starts"], fields.get("ends")
        return msgspec.structs.replace(
            base,
            title=line(str(fields["what"])),
            text=text,
            starts=starts if isinstance(starts, dt.datetime) else None,
            ends=ends if isinstance(ends, dt.datetime) else None,
            where=line(str(fields.get("where") or ""), 200),
        )
    if h.kind == Kind.CAMPAIGN:
        slug = str(fields["campaign"])
        title = line(str(fields.get("title") or ""))
        proposal = str(fields.get("joint") or "")
        return msgspec.structs.replace(
            base,
            title=f"{title or slug} ({fields['op']})",
            text=text,
            campaign=slug,
            op=str(fields["op"]),
            joint=(joint or {}).get(proposal, JointCampaign(proposal=proposal, clubs=[]))
            if proposal
            else None,
        )
    return msgspec.structs.replace(base, title=line(text) or base.kind, text=text)


def club_entry(club: bytes, names: dict[bytes, str]) -> ClubEntry:
    return ClubEntry(id=club.hex(), name=club_name(club, names), url=f"/clubs/{club.hex()}")


def campaign_entries(
    items: Sequence[CampaignItem], names: dict[bytes, str]
) -> tuple[list[CampaignEntry], dict[str, JointCampaign]]:
    """The campaigns of public logs as the feed lists them, and the joint campaigns
    shown, by proposal id (protocol.md §3.7). A club shows a joint campaign while its
    own public log holds a step of it that is not erased: a club is listed with a
    joint campaign on its own signed word only, never on another club's, and the
    steps of one joint campaign, shown by several clubs, make one entry with them all.
    Its title and text are those of the first of those clubs (by name, then id)."""
    own: list[CampaignEntry] = []
    shown: dict[str, list[tuple[ClubEntry, CampaignItem]]] = {}
    for c in items:
        club = club_entry(bytes.fromhex(c.club), names)
        if c.joint:
            shown.setdefault(c.joint, []).append((club, c))
            continue
        own.append(_campaign_entry(club, c))
    joint: dict[str, JointCampaign] = {}
    for proposal, found in sorted(shown.items()):
        found.sort(key=lambda cc: (cc[0].name.casefold(), cc[0].id, cc[1].log))
        clubs = list({club.id: club for club, _ in found}.values())
        joint[proposal] = JointCampaign(proposal=proposal, clubs=clubs)
        statuses = {c.status for _, c in found}
        status = "open" if "open" in statuses else min(statuses - {"closed"}, default="closed")
        first = _campaign_entry(*found[0])
        own.append(msgspec.structs.replace(first, status=status, joint=joint[proposal]))
    return own, joint


def _campaign_entry(club: ClubEntry, c: CampaignItem) -> CampaignEntry:
    return CampaignEntry(
        club=club.id,
        club_name=club.name,
        campaign=c.campaign,
        title=line(c.title) or c.campaign,
        text=line(c.text, 400),
        status=c.status,
    )


def upcoming(
    actions: Sequence[tuple[str, str, str, dt.datetime, dt.datetime | None, str]],
    names: dict[bytes, str],
    now: dt.datetime,
) -> list[Upcoming]:
    """Actions (event, club, what, starts, ends, where) not yet over, soonest first."""
    out = [
        Upcoming(
            event=event,
            club=club,
            club_name=club_name(bytes.fromhex(club), names),
            what=line(what),
            starts=starts,
            ends=ends,
            where=line(where, 200),
            event_url=f"/events/{event}",
        )
        for event, club, what, starts, ends, where in actions
        if (ends or starts) >= now
    ]
    return sorted(out, key=lambda u: (u.starts, u.event))
