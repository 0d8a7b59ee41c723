"""Joint campaign proposals on a node: propose, answer, amend, withdraw, export.

The shell around `views.proposals` (the outcome) and `views.agreement` (the record):
every step is signed through `Node.post` into this club's log whose audience is
exactly the proposer and the invited clubs (protocol.md §3.7), after the view's own
`check` says the payload is well formed, so a node never makes a step it would
itself ignore as malformed.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from federation.core import canonical
from federation.core.canonical import Audience, Kind
from federation.core.events import VerifiedEvent
from federation.core.keys import key_log_id
from federation.core.naming import resolve_id
from federation.core.payloads import STRICT_PAYLOAD_TYPES, Proposal
from federation.errors import UsageError
from federation.node import naming, projector, rails
from federation.node.node import Node
from federation.store.base import PAGE_EVENTS, LogRecord
from federation.store.meta import delivered
from federation.views import agreement, campaigns
from federation.views.proposals import Outcome, Step, check, decode, fold, participants


async def _proposal_events(node: Node) -> list[tuple[Step, canonical.Header, bytes]]:
    found = []
    for record in await node.store.logs():
        if record.audience.kind != "clubs" or record.head is None:
            continue
        after = 0
        while page := await node.store.events(record.id, after, PAGE_EVENTS):
            after = page[-1].header.seq
            for e in page:
                h = e.header
                if h.kind == Kind.PROPOSAL:
                    step = Step(
                        e.id, h.club, h.log, h.seq, h.time_us, record.audience.clubs, e.payload
                    )
                    found.append((step, h, record.descriptor))
    return found


async def outcomes(node: Node) -> list[Outcome]:
    """Every proposal this node holds, with its outcome now."""
    steps = [s for s, _, _ in await _proposal_events(node)]
    return fold(steps, node.clock())[0]


async def find(node: Node, ref: str) -> Outcome:
    """A proposal by its id or a unique prefix of at least six hex digits (the one
    naming rule, core/naming.py)."""
    held = {bytes.fromhex(o.proposal): o for o in await outcomes(node)}
    try:
        chosen = resolve_id(
            ref, held, what="proposal", labels={k: o.version.title for k, o in held.items()}
        )
    except UsageError as exc:
        raise UsageError(f"{exc}; list them with `federation proposal list`") from None
    return held[chosen]


async def resolve_club(node: Node, ref: str) -> bytes:
    """A club by name or id prefix (the one naming rule, node/naming.py)."""
    return await naming.find_club(node, ref)


def _make(fields: dict[str, object], *, first: bool) -> dict[str, object]:
    try:
        value = msgspec.convert(fields, STRICT_PAYLOAD_TYPES[Kind.PROPOSAL], strict=False)
    except msgspec.ValidationError as exc:
        raise UsageError(f"invalid proposal: {exc}; fix that option and try again") from None
    assert isinstance(value, Proposal)
    why = check(value, first=first)
    if why is not None:
        raise UsageError(f"invalid proposal: {why}")
    return fields


async def _post(node: Node, audience: tuple[bytes, ...], fields: dict[str, object]) -> bytes:
    _, event = await node.post(Kind.PROPOSAL, fields, Audience("clubs", audience))
    return event.id


def _audience(o: Outcome) -> tuple[bytes, ...]:
    return tuple(sorted(bytes.fromhex(c) for c in {o.proposer, *o.invited}))


async def propose(
    node: Node,
    *,
    title: str,
    invited: list[bytes],
    deadline: dt.datetime,
    rule: str = "all",
    aims: str = "",
    asks: dict[str, str] | None = None,
    actions: list[dict[str, object]] | None = None,
) -> bytes:
    """Sign a first version; returns the proposal id (that event's id)."""
    if node.club in invited:
        raise UsageError("a club does not invite itself; name the other clubs")
    fields = _make(
        {
            "op": "proposed",
            "title": title,
            "aims": aims,
            "asks": asks or {},
            "actions": actions or [],
            "rule": rule,
            "deadline": deadline,
            "invited": sorted(c.hex() for c in invited),
        },
        first=True,
    )
    return await _post(node, tuple(sorted({node.club, *invited})), fields)


async def amend(node: Node, ref: str, changes: dict[str, object]) -> bytes:
    """Sign a new version of the current one with `changes`; returns its version id."""
    o = await find(node, ref)
    _open_for(node, o)
    v = o.version
    fields: dict[str, object] = {
        "op": "proposed",
        "proposal": o.proposal,
        "amends": v.id,
        "title": v.title,
        "aims": v.aims,
        "asks": v.asks,
        "actions": v.actions,
        "rule": o.rule,
        "deadline": dt.datetime.fromtimestamp(v.deadline_us / 1e6, dt.UTC),
        "invited": o.invited,
    }
    fields.update({k: val for k, val in changes.items() if val is not None})
    return await _post(node, _audience(o), _make(fields, first=False))


def _open_for(node: Node, o: Outcome) -> None:
    me = node.club.hex()
    if me != o.proposer and me not in o.invited:
        raise UsageError(f"this club is not invited to proposal {o.proposal[:12]}")
    if o.state in ("agreed", "withdrawn"):
        raise UsageError(f"proposal {o.proposal[:12]} is {o.state} already: nothing to change")


async def answer(node: Node, ref: str, op: str, text: str = "") -> bytes:
    """Accept, decline or retract the current version; returns the answer's event id."""
    o = await find(node, ref)
    _open_for(node, o)
    fields: dict[str, object] = {"op": op, "proposal": o.proposal, "version": o.version.id}
    if op == "accepted":
        fields["commitment"] = text
    elif op == "declined":
        fields["reason"] = text
    return await _post(node, _audience(o), _make(fields, first=False))


async def withdraw(node: Node, ref: str) -> bytes:
    o = await find(node, ref)
    _open_for(node, o)
    if node.club.hex() != o.proposer:
        raise UsageError("only the proposer withdraws a proposal; decline it instead")
    return await _post(node, _audience(o), {"op": "withdrawn", "proposal": o.proposal})


def campaign_name(o: Outcome) -> str:
    """The joint campaign's log name and campaign slug (protocol.md §3.7)."""
    return f"joint-{o.proposal[:12]}"


class FeedChoice(msgspec.Struct, frozen=True):
    """What `choose_feed` signed: the `feed` step in the joint campaign log, and the
    events of this club's public log (the step shown, or the erasures that hide)."""

    step: str
    published: list[str]
    erased: list[str]


def _participant(node: Node, o: Outcome, what: str) -> None:
    if o.state != "agreed" or node.club.hex() not in participants(o):
        raise UsageError(f"only a participant of an agreed proposal {what}")


async def _shown_steps(node: Node, proposal: str) -> list[tuple[LogRecord, VerifiedEvent]]:
    """This club's public campaign steps that show joint campaign `proposal` and are
    not erased (protocol.md §3.7), in log and seq order."""
    found = []
    for record in await node.store.logs():
        if record.club != node.club or record.audience.kind != "public" or record.head is None:
            continue
        after = 0
        while page := await node.store.events(record.id, after, PAGE_EVENTS):
            after = page[-1].header.seq
            for e in page:
                if e.header.kind == Kind.CAMPAIGN:
                    step = campaigns.read_step(e)
                    if step is not None and step.joint == proposal:
                        found.append((record, e))
    return found


async def choose_feed(node: Node, ref: str, *, shown: bool) -> FeedChoice:
    """Show or hide the joint campaign on this club's public feed (protocol.md §3.7).

    Show: a `created` campaign step in this club's public log, naming the joint
    campaign (`joint`) with the agreed title and aims, and nothing else of the
    proposal (no asks, commitments, invited clubs or other clubs' choices). Hide: a
    signed erasure of each of this club's public steps of it, honoured by every
    holder (§3.5). Both are idempotent, and the participants are told with a signed
    `feed` step in the joint campaign log (read by the view as `shown_by`)."""
    o = await find(node, ref)
    _participant(node, o, "chooses its feed")
    held = await _shown_steps(node, o.proposal)
    published: list[str] = []
    erased: list[str] = []
    if shown and not any(
        (s := campaigns.read_step(e)) is not None and s.op == "created" for _, e in held
    ):
        fields: dict[str, object] = {
            "campaign": campaign_name(o),
            "op": "created",
            "title": o.version.title,
            "text": o.version.aims or None,
            "joint": o.proposal,
        }
        _, event = await node.post(Kind.CAMPAIGN, fields, Audience("public"))
        published.append(event.id.hex())
    if not shown:
        for record, e in held:
            erasure = {"seq": e.header.seq, "event": e.id.hex()}
            await node.post(Kind.ERASURE, erasure, record.audience, record.name)
            erased.append(e.id.hex())
        if erased:
            await projector.catch_up(node.store)  # the log's views fold again, without them
    audience = tuple(sorted(bytes.fromhex(c) for c in participants(o)))
    choice = {"op": "feed", "proposal": o.proposal, "shown": shown}
    _, event = await node.post(Kind.PROPOSAL, choice, Audience("clubs", audience), campaign_name(o))
    return FeedChoice(event.id.hex(), published, erased)


async def post_update(
    node: Node, ref: str, text: str, title: str | None = None, *, public: bool = False
) -> bytes:
    """Post an update to the joint campaign: a campaign step in the participants' log,
    or (`public`) in this club's public log, if this club shows it there (§3.7)."""
    o = await find(node, ref)
    _participant(node, o, "posts to its campaign")
    fields: dict[str, object] = {
        "campaign": campaign_name(o),
        "op": "updated",
        "title": title,
        "text": text,
    }
    if public:
        shown = [
            r
            for r, e in await _shown_steps(node, o.proposal)
            if (s := campaigns.read_step(e)) is not None and s.op == "created"
        ]
        if not shown:
            raise UsageError(
                "this club does not show the joint campaign on its public feed; "
                f"run `federation proposal feed {o.proposal[:12]} show` first"
            )
        fields["joint"] = o.proposal
        _, event = await node.post(Kind.CAMPAIGN, fields, shown[-1].audience, shown[-1].name)
        return event.id
    audience = tuple(sorted(bytes.fromhex(c) for c in participants(o)))
    # The participants' log holds no `created` step (§3.7): the rails' campaign rule
    # is for a club's own campaigns, so this step is posted unchecked.
    _, event = await node.post(
        Kind.CAMPAIGN, fields, Audience("clubs", audience), campaign_name(o), checked=False
    )
    return event.id


async def delivery(node: Node, o: Outcome) -> dict[str, dict[str, object]]:
    """Per invited club, best knowledge of which versions reached it, and its route.

    "answered": it signed a step naming that version (evidence). "sent": this node
    sent it our log up to that version (store.meta delivery records: it took them).
    "unknown": neither, which is not proof it lacks them (another peer may relay).
    Route: "peer", "via" the peers whose rosters list it, or "none" (protocol.md §3.7)."""
    steps = {s.id.hex(): (s, h) for s, h, _ in await _proposal_events(node)}
    answered: dict[str, set[str]] = {}
    for s, _h in steps.values():
        if s.payload is not None:
            p = decode(s.payload)
            if p is not None:
                answered.setdefault(s.club.hex(), set()).add(str(p.version or p.amends))
    result: dict[str, dict[str, object]] = {}
    others = [c for c in (o.proposer, *o.invited) if c != node.club.hex()]
    reach = await rails.routes(node.store, [bytes.fromhex(c) for c in others])
    for club_hex in others:
        club = bytes.fromhex(club_hex)
        versions: dict[str, str] = {}
        for v in o.versions:
            step, header = steps[v]
            if v in answered.get(club_hex, set()) or step.club == club:
                versions[v] = "answered"
            elif (
                step.club == node.club and await delivered(node.store, club, header.log) >= step.seq
            ):
                versions[v] = "sent"
            else:
                versions[v] = "unknown"
        via = reach[club]  # the one rule of a route, shared with `post` (node/rails.py)
        route = "peer" if via == ["peer"] else ("via " + ", ".join(via) if via else "none")
        result[club_hex] = {"versions": versions, "route": route}
    return result


# Key events a record carries per club: a club rotates a few times in its life; a
# record is checked offline with every one of them, so they are all read.
KEY_EVENTS_CARRIED = 100_000


async def export(node: Node, ref: str) -> bytes:
    """The agreement record of an agreed proposal (protocol.md §3.8)."""
    o = await find(node, ref)
    if o.state != "agreed":
        raise UsageError(
            f"proposal {o.proposal[:12]} is {o.state}: only an agreed proposal has a record"
        )
    events = []
    descriptors: dict[bytes, bytes] = {}
    for s, _, descriptor in await _proposal_events(node):
        if s.id.hex() in o.evidence:
            held = await node.store.event_at(s.log, s.seq)
            assert held is not None
            events.append(held)
            descriptors[s.log] = descriptor
    # A club that changed its key: its key events, and event 1 of each of its logs
    # here, let the record be checked offline all the same (§2.2, §3.8 format 2).
    keys: dict[bytes, list[tuple[bytes, bytes]]] = {}
    firsts: dict[bytes, bytes] = {}
    for e in events:
        club = e.header.club
        if node.keys.rotated(club) and club not in keys:
            key_events = await node.store.events(key_log_id(club), 0, KEY_EVENTS_CARRIED)
            keys[club] = [(k.signed, k.payload or b"") for k in key_events]
        if club in keys and e.header.log not in firsts:
            first = await node.store.event_at(e.header.log, 1)
            if first is not None:
                firsts[e.header.log] = first.id
    return agreement.make_record(
        o, events, await node.store.clubs(), descriptors, keys=keys, firsts=firsts
    )
