"""Joint campaign proposals: each proposal's outcome, folded from signed events.

A pure function of the set of proposal events a node holds and of `now` (for expiry
only): no job has to run, and every node holding the same events computes the same
outcome whatever order they arrived in (DESIGN principle 11; protocol.md §3.7).

The steps of one proposal are replayed in one order every node can compute: by
(effective time, club, log, seq, event id), where a club's effective time in a log
is the greatest time it claimed so far there, so a club's own steps are never
reordered (seq order within a log, DESIGN principle 8). One transition table
(`_step`) decides each step; a step it refuses changes nothing and is listed with
its reason. A proposal step held without its payload, in a log with the proposal's
audience, makes the outcome "undecided here" (DESIGN principle 16): it might be a
withdrawal or a take-back, so no state is guessed until the payload is filled in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal

import msgspec

from federation.core.payloads import Proposal

State = Literal["open", "agreed", "rejected", "expired", "withdrawn", "undecided"]
ANSWERS = ("accepted", "declined", "retracted")
# The most clubs one proposal may invite: a named audience's limit less the proposer.
MAX_INVITED = 255


class Step(msgspec.Struct, frozen=True):
    """One proposal-kind event as the view needs it. `audience`: the club ids of its
    log's named audience (empty for any other audience); `payload` None: missing."""

    id: bytes
    club: bytes
    log: bytes
    seq: int
    time_us: int
    audience: tuple[bytes, ...]
    payload: bytes | None


class Answer(msgspec.Struct, frozen=True):
    club: str
    op: str
    version: str
    event: str
    time_us: int
    text: str  # the commitment of an acceptance, the reason of a decline


class Version(msgspec.Struct, frozen=True):
    id: str
    author: str
    time_us: int
    title: str
    aims: str
    asks: dict[str, str]
    actions: list[dict[str, object]]
    deadline_us: int


class Ignored(msgspec.Struct, frozen=True):
    event: str
    club: str
    seq: int
    reason: str


class Outcome(msgspec.Struct):
    proposal: str
    proposer: str
    invited: list[str]
    rule: str
    state: State
    version: Version  # the current version, or the agreed one
    versions: list[str]  # every version id, oldest first
    accepted: dict[str, Answer]  # club -> its acceptance of `version`
    declined: dict[str, Answer]
    missing: list[str]  # what the rule still needs, for people
    agreed_us: int | None = None
    evidence: list[str] = []  # every step of the proposal held (event ids): an agreement record
    ignored: list[Ignored] = []
    unknown: list[str] = []  # proposal events held here without their payload
    shown_by: list[str] = []  # participants who chose to show the joint campaign on their feed


_decoder = msgspec.json.Decoder(Proposal)


def decode(payload: bytes) -> Proposal | None:
    try:
        return _decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None


def _us(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def rule_needs(rule: str, invited: int) -> int:
    """How many invited clubs must accept: all of them, or K (protocol.md §3.7)."""
    return invited if rule == "all" else int(rule.partition(":")[2])


def check(p: Proposal, *, first: bool = False) -> str | None:
    """Why the payload is malformed for its op, or None: the one rule both for making
    (node/proposals.py) and for reading (protocol.md §3.7 "well-formed")."""
    if p.op == "proposed":
        if first != (p.proposal is None) or first != (p.amends is None):
            return "a first version names no proposal; an amendment names its proposal and amends"
        if not p.title or p.rule is None or p.deadline is None:
            return "a version needs a title, a rule and a deadline"
        times = [p.deadline] + [t for a in p.actions for t in (a.starts, a.ends) if t is not None]
        if any(t.tzinfo is None for t in times):
            return "times need a UTC offset"
        if not 0 < len(p.invited) <= MAX_INVITED or len(set(p.invited)) != len(p.invited):
            return f"a version invites 1-{MAX_INVITED} distinct clubs"
        if rule_needs(p.rule, len(p.invited)) > len(p.invited):
            return f"rule {p.rule} needs more clubs than are invited"
        if any(k != "*" and k not in p.invited for k in p.asks):
            return "asks are keyed by an invited club's id or *"
        return None
    if p.proposal is None:
        return f"a {p.op} step names its proposal"
    if p.op in ANSWERS and p.version is None:
        return f"a {p.op} answer names the exact version it answers"
    if p.op == "feed" and p.shown is None:
        return "a feed choice says shown true or false"
    return None


def fold(steps: Iterable[Step], now_us: int) -> tuple[list[Outcome], list[Ignored]]:
    """Every proposal's outcome, and the steps that belong to no proposal here."""
    decoded: list[tuple[Step, Proposal | None]] = []
    for s in {s.id: s for s in steps}.values():
        decoded.append((s, None if s.payload is None else decode(s.payload)))
    firsts: dict[str, tuple[Step, Proposal]] = {}
    stray: list[Ignored] = []
    for s, p in decoded:
        if s.payload is None or (p is not None and p.proposal is not None):
            continue
        why = "payload does not decode as a proposal step" if p is None else None
        if p is not None:
            why = check(p, first=True) if p.op == "proposed" else check(p)
        if p is not None and why is None:
            audience = tuple(sorted({s.club, *(bytes.fromhex(c) for c in p.invited)}))
            if s.club.hex() in p.invited:
                why = "the proposer does not invite itself"
            elif s.audience != audience:
                why = "not in a log whose audience is exactly the proposer and the invited"
        if why is None:
            assert p is not None
            firsts[s.id.hex()] = (s, p)
        else:
            stray.append(_ignored(s, f"malformed: {why}"))
    by_proposal: dict[str, list[tuple[Step, Proposal]]] = {k: [] for k in firsts}
    missing: dict[tuple[bytes, ...], list[str]] = {}
    for s, p in decoded:
        if s.payload is None:
            missing.setdefault(s.audience, []).append(s.id.hex())
        elif p is not None and p.proposal is not None:
            if p.proposal in by_proposal:
                by_proposal[p.proposal].append((s, p))
            else:
                stray.append(_ignored(s, "names an unknown proposal"))
    outcomes = [
        _replay(s, p, by_proposal[key], missing, now_us) for key, (s, p) in sorted(firsts.items())
    ]
    return outcomes, sorted(stray, key=lambda i: i.event)


def _ignored(s: Step, reason: str) -> Ignored:
    return Ignored(s.id.hex(), s.club.hex(), s.seq, reason)


def _version(s: Step, p: Proposal) -> Version:
    assert p.title is not None
    assert p.deadline is not None
    actions = [msgspec.to_builtins(a) for a in p.actions]
    return Version(
        s.id.hex(), s.club.hex(), s.time_us, p.title, p.aims, dict(p.asks), actions, _us(p.deadline)
    )


class _Replay:
    """The state of one proposal while its steps are replayed."""

    def __init__(self, first: Step, p: Proposal) -> None:
        assert p.rule is not None
        self.proposer = first.club.hex()
        self.invited = list(p.invited)
        self.rule = p.rule
        self.audience = first.audience
        self.current = _version(first, p)
        self.versions = [self.current.id]
        self.accepted = {self.proposer: self._implicit(self.current)}
        self.declined: dict[str, Answer] = {}
        self.final: Literal["agreed", "withdrawn"] | None = None
        self.agreed_us: int | None = None
        self.ignored: list[Ignored] = []
        self.shown: dict[str, bool] = {}

    @staticmethod
    def _implicit(v: Version) -> Answer:
        # The author of a version accepts it by writing it (protocol.md §3.7).
        return Answer(v.author, "accepted", v.id, v.id, v.time_us, "author of this version")

    def met(self) -> bool:
        counted = [c for c in self.invited if c in self.accepted]
        return self.proposer in self.accepted and len(counted) >= rule_needs(
            self.rule, len(self.invited)
        )

    def cannot_meet(self) -> bool:
        refused = [c for c in self.invited if c in self.declined]
        return self.proposer in self.declined or len(self.invited) - len(refused) < rule_needs(
            self.rule, len(self.invited)
        )


def _step(r: _Replay, s: Step, p: Proposal, t: int) -> str | None:
    """The transition table: apply one step at effective time `t`, or say why not."""
    club = s.club.hex()
    if s.audience != r.audience:
        return "not in a log whose audience is the proposal's"
    if club != r.proposer and club not in r.invited:
        return "from a club that was not invited"
    if (why := check(p)) is not None:
        return f"malformed: {why}"
    if p.op == "feed":
        if r.final != "agreed" or club not in r.accepted:
            return "a feed choice counts only from a participant of an agreed proposal"
        r.shown[club] = bool(p.shown)
        return None
    if r.final is not None:
        return f"after the proposal was {r.final}"
    if t > r.current.deadline_us:
        return "late: claimed after the deadline of the current version"
    if p.op == "withdrawn":
        if club != r.proposer:
            return "only the proposer withdraws a proposal"
        r.final = "withdrawn"
        return None
    named = p.amends if p.op == "proposed" else p.version
    if named != r.current.id:
        older = named in r.versions
        return f"{'amends' if p.op == 'proposed' else 'answers'} " + (
            "a superseded version (replayed from an older one)" if older else "an unknown version"
        )
    if p.op == "proposed":
        if list(p.invited) != r.invited or p.rule != r.rule:
            return "an amendment keeps the invited clubs and the rule"
        r.current = _version(s, p)
        r.versions.append(r.current.id)
        r.accepted, r.declined = {club: r._implicit(r.current)}, {}
    else:
        answer = Answer(club, p.op, r.current.id, s.id.hex(), s.time_us, p.commitment or p.reason)
        if club in r.declined:
            return "this club declined this version already; it needs an amendment"
        if p.op == "accepted":
            r.accepted[club] = answer
        elif p.op == "declined":
            if club == r.current.author:
                return "the author of a version does not decline it (amend or withdraw)"
            r.accepted.pop(club, None)
            r.declined[club] = answer
        elif r.accepted.pop(club, None) is None:
            return "retracts an acceptance this club has not given"
    if r.met():
        r.final, r.agreed_us = "agreed", t
    return None


def _replay(
    first: Step,
    p: Proposal,
    steps: list[tuple[Step, Proposal]],
    missing: dict[tuple[bytes, ...], list[str]],
    now_us: int,
) -> Outcome:
    r = _Replay(first, p)
    ordered: list[tuple[tuple[int, bytes, bytes, int, bytes], Step, Proposal]] = []
    last: dict[tuple[bytes, bytes], int] = {}
    for s, q in sorted(steps, key=lambda sq: (sq[0].club, sq[0].log, sq[0].seq)):
        # A club's effective time never goes back within a log (protocol.md §3.7).
        t = max(last.get((s.club, s.log), first.time_us), s.time_us)
        last[(s.club, s.log)] = t
        ordered.append(((t, s.club, s.log, s.seq, s.id), s, q))
    for (t, *_), s, q in sorted(ordered, key=lambda o: o[0]):
        why = _step(r, s, q, t)
        if why is not None:
            r.ignored.append(_ignored(s, why))
    unknown = sorted(missing.get(r.audience, []))
    state: State
    if unknown:
        state = "undecided"
    elif r.final is not None:
        state = r.final
    elif now_us > r.current.deadline_us:
        state = "expired"
    elif r.cannot_meet():
        state = "rejected"
    else:
        state = "open"
    return Outcome(
        proposal=first.id.hex(),
        proposer=r.proposer,
        invited=r.invited,
        rule=r.rule,
        state=state,
        version=r.current,
        versions=r.versions,
        accepted=r.accepted,
        declined=r.declined,
        missing=[] if r.final == "agreed" else _still_needed(r),
        agreed_us=r.agreed_us,
        evidence=[first.id.hex(), *sorted(s.id.hex() for s, _ in steps)],
        ignored=r.ignored,
        unknown=unknown,
        shown_by=sorted(c for c, shown in r.shown.items() if shown),
    )


def _still_needed(r: _Replay) -> list[str]:
    needed = [] if r.proposer in r.accepted else [r.proposer]
    waiting = [c for c in r.invited if c not in r.accepted and c not in r.declined]
    more = rule_needs(r.rule, len(r.invited)) - sum(c in r.accepted for c in r.invited)
    if more <= 0:
        return needed
    if more >= len(waiting):
        return needed + waiting
    return [*needed, f"{more} of: {', '.join(waiting)}"]


def participants(o: Outcome) -> list[str]:
    """The clubs of the joint campaign of an agreed proposal: the proposer and every
    club that accepted the agreed version (protocol.md §3.7)."""
    return sorted({o.proposer, *o.accepted})
