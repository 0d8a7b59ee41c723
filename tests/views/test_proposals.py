"""The joint proposal view (protocol.md §3.7) and the agreement record (§3.8), purely.

Clubs sign real events (tests.conftest.Club); the view sees them as `Step`s. The
property: whatever order a node receives the steps in, it computes the same outcome;
a node missing a payload says "undecided", never another state; and an agreed
outcome always exports a record that verifies offline.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.core import canonical
from federation.core.canonical import Audience, Kind
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.log import descriptor_bytes
from federation.core.payloads import make_payload
from federation.errors import InvalidEventError
from federation.views import agreement
from federation.views.proposals import Outcome, Step, fold
from tests.conftest import BASE_TIME_US, Club

pytestmark = pytest.mark.timeout(60)

S = 1_000_000  # a second in microseconds
DEADLINE_US = BASE_TIME_US + 1000 * S
DEADLINE = "2026-01-01T00:16:40Z"  # BASE_TIME_US + 1000 s
CLUBS = [Club.make(b"proposal club %d" % i) for i in range(4)]
P, A, B, X = CLUBS  # the proposer, two invited clubs, one club not invited


@dataclass
class World:
    """Signed proposal steps: one log per (club, audience), as Node.post makes them."""

    heads: dict[tuple[bytes, tuple[bytes, ...]], Head | None] = field(default_factory=dict)
    descriptors: dict[bytes, bytes] = field(default_factory=dict)
    audiences: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)
    events: list[VerifiedEvent] = field(default_factory=list)

    def post(
        self,
        club: Club,
        fields: dict[str, object] | bytes,
        *,
        at: int,
        audience: tuple[bytes, ...] | None = None,
    ) -> str:
        audience = audience or tuple(sorted(c.id for c in (P, A, B)))
        d = descriptor_bytes(club.id, "proposals", Audience("clubs", audience))
        log = canonical.log_id(d)
        self.descriptors[log], self.audiences[log] = d, audience
        payload = fields if isinstance(fields, bytes) else make_payload(Kind.PROPOSAL, fields)
        event = sign_event(
            club.key,
            club=club.id,
            log=log,
            head=self.heads.get((club.id, audience)),
            time_us=BASE_TIME_US + at * S,
            kind=Kind.PROPOSAL,
            payload=payload,
        )
        self.heads[(club.id, audience)] = Head(event.header.seq, event.id)
        self.events.append(event)
        return event.id.hex()

    def step(self, e: VerifiedEvent, *, drop_payload: bool = False) -> Step:
        h = e.header
        payload = None if drop_payload else e.payload
        return Step(e.id, h.club, h.log, h.seq, h.time_us, self.audiences[h.log], payload)

    def steps(self) -> list[Step]:
        return [self.step(e) for e in self.events]

    def outcome(self, now: int = 0, steps: list[Step] | None = None) -> Outcome:
        found, _ = fold(self.steps() if steps is None else steps, BASE_TIME_US + now * S)
        assert len(found) == 1
        return found[0]

    def record(self, o: Outcome) -> bytes:
        genesis = {c.id: c.genesis for c in CLUBS}
        return agreement.make_record(o, self.events, genesis, self.descriptors)


def first(rule: str = "all", title: str = "Rent strike bloc") -> dict[str, object]:
    return {
        "op": "proposed",
        "title": title,
        "rule": rule,
        "deadline": DEADLINE,
        "invited": sorted([A.id.hex(), B.id.hex()]),
        "asks": {"*": "a bloc of eight"},
    }


def ans(op: str, proposal: str, version: str, text: str = "") -> dict[str, object]:
    return {"op": op, "proposal": proposal, "version": version, "commitment": text}


def amendment(proposal: str, amends: str, title: str = "Rent strike bloc, v2") -> dict[str, object]:
    return {**first(title=title), "proposal": proposal, "amends": amends}


def reasons(o: Outcome) -> list[str]:
    return [i.reason for i in o.ignored]


# --- the rules, one by one ----------------------------------------------------------


def test_all_accept_agrees_with_their_commitments() -> None:
    w = World()
    pid = w.post(P, first(), at=1)
    assert w.outcome(2).state == "open"
    w.post(A, ans("accepted", pid, pid, "8 people"), at=3)
    assert w.outcome(4).missing == [B.id.hex()]
    w.post(B, ans("accepted", pid, pid, "a stall"), at=5)
    o = w.outcome(6)
    assert (o.state, o.version.id, o.agreed_us) == ("agreed", pid, BASE_TIME_US + 5 * S)
    assert o.accepted[A.id.hex()].text == "8 people"
    assert agreement.check_record(w.record(o)).version.id == pid


def test_amendment_needs_fresh_answers_and_older_answers_are_ignored() -> None:
    w = World()
    pid = w.post(P, first(), at=1)
    w.post(B, ans("accepted", pid, pid), at=2)
    v2 = w.post(A, amendment(pid, pid), at=3)  # an invited club amends: it accepts v2
    o = w.outcome(4)
    assert (o.state, o.version.id, sorted(o.accepted)) == ("open", v2, [A.id.hex()])
    w.post(B, ans("accepted", pid, pid), at=5)  # replayed from the older version
    assert "answers a superseded version (replayed from an older one)" in reasons(w.outcome(6))
    w.post(B, ans("accepted", pid, v2), at=7)
    assert w.outcome(8).state == "open"  # the proposer must accept a version it did not write
    w.post(P, ans("accepted", pid, v2), at=9)
    assert (w.outcome(10).state, w.outcome(10).version.id) == ("agreed", v2)


def test_unknown_version_not_invited_and_late_answers_change_nothing() -> None:
    w = World()
    pid = w.post(P, first(), at=1)
    w.post(A, ans("accepted", pid, "ab" * 32), at=2)
    w.post(X, ans("accepted", pid, pid), at=3)  # X is not invited (its own log, same audience)
    w.post(A, ans("accepted", pid, pid), at=1001)  # claimed after the deadline
    w.post(B, ans("accepted", pid, pid), at=4)
    o = w.outcome(5)
    assert o.state == "open"
    assert reasons(o) == [
        "answers an unknown version",
        "from a club that was not invited",
        "late: claimed after the deadline of the current version",
    ]
    assert w.outcome(1001).state == "expired"  # no job: `now` alone expires it


def test_retraction_counts_until_agreed_and_declines_reject() -> None:
    w = World()
    pid = w.post(P, first(), at=1)
    w.post(A, ans("accepted", pid, pid), at=2)
    w.post(A, ans("retracted", pid, pid), at=3)
    w.post(B, ans("accepted", pid, pid), at=4)
    assert w.outcome(5).state == "open"
    w.post(A, {"op": "declined", "proposal": pid, "version": pid, "reason": "no"}, at=6)
    assert w.outcome(7).state == "rejected"
    w.post(A, ans("accepted", pid, pid), at=8)
    assert "declined this version already" in reasons(w.outcome(9))[0]


def test_at_least_rule_and_takeback_after_agreement_is_ignored() -> None:
    w = World()
    pid = w.post(P, first("at_least:1"), at=1)
    w.post(A, ans("accepted", pid, pid), at=2)
    w.post(A, ans("retracted", pid, pid), at=3)
    w.post(P, {"op": "withdrawn", "proposal": pid}, at=4)
    o = w.outcome(5)
    assert o.state == "agreed"
    assert reasons(o) == ["after the proposal was agreed", "after the proposal was agreed"]


def test_withdrawn_only_by_the_proposer() -> None:
    w = World()
    pid = w.post(P, first(), at=1)
    w.post(A, {"op": "withdrawn", "proposal": pid}, at=2)
    assert w.outcome(3).state == "open"
    w.post(P, {"op": "withdrawn", "proposal": pid}, at=4)
    assert w.outcome(5).state == "withdrawn"


def test_malformed_proposals_are_not_proposals() -> None:
    w = World()
    w.post(P, b'{"op": "proposed", "title": 5}', at=1)
    w.post(P, {**first(), "invited": [A.id.hex()]}, at=2)  # audience is not exactly P, A
    w.post(P, {**first(), "rule": "at_least:3"}, at=3)
    outcomes, stray = fold(w.steps(), BASE_TIME_US)
    assert outcomes == []
    assert [s.reason.split(":")[0] for s in stray] == ["malformed"] * 3


def test_a_missing_payload_leaves_the_outcome_undecided() -> None:
    w = World()
    pid = w.post(P, first(), at=1)
    w.post(A, ans("accepted", pid, pid), at=2)
    w.post(B, ans("accepted", pid, pid), at=3)
    steps = w.steps()
    steps[1] = w.step(w.events[1], drop_payload=True)
    o = w.outcome(4, steps)
    assert (o.state, o.unknown) == ("undecided", [w.events[1].id.hex()])


def test_clock_skew_never_reorders_a_clubs_own_steps() -> None:
    w = World()
    pid = w.post(P, first(), at=10)
    w.post(A, ans("accepted", pid, pid), at=20)
    w.post(A, ans("retracted", pid, pid), at=5)  # a backdated take-back: effective time 20
    w.post(B, ans("accepted", pid, pid), at=25)
    o = w.outcome(30)  # A's take-back stays after its acceptance, whatever it claims
    assert (o.state, sorted(o.accepted)) == ("open", sorted([P.id.hex(), B.id.hex()]))


# --- the agreement record -----------------------------------------------------------


def _agreed() -> tuple[World, bytes]:
    w = World()
    pid = w.post(P, first(), at=1)
    w.post(A, ans("accepted", pid, pid, "8 people"), at=2)
    w.post(B, ans("accepted", pid, pid, "a stall"), at=3)
    return w, w.record(w.outcome(4))


def test_record_tampered_or_truncated_fails() -> None:
    _, data = _agreed()
    doc = msgspec.json.decode(data)
    doc["events"][1]["payload"] = doc["events"][1]["payload"][:-4] + "AAAA"
    with pytest.raises(InvalidEventError, match="does not verify"):
        agreement.check_record(msgspec.json.encode(doc))
    with pytest.raises(InvalidEventError, match="not an agreement record"):
        agreement.check_record(data[: len(data) // 2])
    doc = msgspec.json.decode(data)
    doc["clubs"][0] = doc["clubs"][1]  # a genesis swapped: a club's signature has no key
    with pytest.raises(InvalidEventError):
        agreement.check_record(msgspec.json.encode(doc))


def test_record_whose_answers_do_not_meet_the_rule_fails() -> None:
    w, data = _agreed()
    doc = msgspec.json.decode(data)
    b_answer = w.events[2].id
    doc["events"] = [
        e for e in doc["events"] if canonical.event_id(base64.b64decode(e["signed"])) != b_answer
    ]
    with pytest.raises(InvalidEventError, match="do not meet rule all"):
        agreement.check_record(msgspec.json.encode(doc))


# --- the property -------------------------------------------------------------------

OPS = ("accepted", "declined", "retracted", "amend", "withdrawn", "garbage")
moves = st.lists(
    st.tuples(
        st.sampled_from([P, A, B, X]),
        st.sampled_from(OPS),
        st.integers(0, 5),  # which version it names (modulo those made; 5: unknown)
        st.integers(-50, 700),  # claimed time step, seconds (a club's clock may go back)
    ),
    max_size=14,
)


@settings(max_examples=60, deadline=None)
@given(moves, st.sampled_from(["all", "at_least:1"]), st.integers(0, 2**32))
def test_every_node_computes_the_same_outcome(
    plan: list[tuple[Club, str, int, int]], rule: str, seed: int
) -> None:
    rng = random.Random(seed)
    print(f"seed {seed}")
    w = World()
    pid = w.post(P, first(rule), at=1)
    versions, clock = [pid], {c.id: 1 for c in CLUBS}
    for club, op, which, dt_s in plan:
        clock[club.id] = max(1, clock[club.id] + dt_s)
        named = versions[which % len(versions)] if which < 5 else "cd" * 32
        if op == "amend":
            fields = amendment(pid, named, f"v{len(versions) + 1}")
        elif op == "withdrawn":
            fields = {"op": "withdrawn", "proposal": pid}
        elif op == "garbage":
            fields = {"op": "accepted", "proposal": pid}  # names no version: malformed
        else:
            fields = ans(op, pid, named, "yes")
        eid = w.post(club, fields, at=clock[club.id])
        if op == "amend":
            versions.append(eid)
    steps = w.steps()
    now = rng.randint(0, 1200)
    reference = w.outcome(now, steps)
    for _node in range(4):  # four nodes, each receiving the steps in its own order
        shuffled = steps[:]
        rng.shuffle(shuffled)
        assert msgspec.to_builtins(w.outcome(now, shuffled)) == msgspec.to_builtins(reference)
    # A node missing some payloads is undecided: never a state the full set does not give.
    if len(steps) > 1:
        holes = [
            w.step(e, drop_payload=rng.random() < 0.3) if i else w.step(e)
            for i, e in enumerate(w.events)
        ]
        if any(s.payload is None for s in holes):
            assert w.outcome(now, holes).state == "undecided"
    if reference.state == "agreed":  # never agreed without a verifiable record
        checked = agreement.check_record(w.record(reference))
        assert (checked.version.id, checked.accepted) == (
            reference.version.id,
            reference.accepted,
        )
