"""The documents that carry a club's key events, fuzzed (protocol.md §2.2, §3.8, §5.1).

An agreement record of format 2, an evidence document with `keys` and an invite with
`keys` each let a reader check, with nothing but the document, an event or a
signature made by a key the club rotated to. Here they are built from real signed
events (pure core functions, no node) for clubs that rotated twice (a), revoked a
seized key (b), never changed their key (p) and one more club (z) whose key events
are spliced in; then mutated: bytes, structure (fields dropped, duplicated or of
another type, arrays grown), and the key events themselves (reordered, duplicated,
dropped, a gap, another club's, the seizer's own rotation with a cut into the
future, a wrong first event id).

Each input is refused with one line of ours (InvalidEventError for a record or an
evidence document, UsageError for an invite: FederationErrors), or accepted; and
when it is accepted, a table written by hand below (`ALLOWED`), not the code under
test, says whether what it now attributes to a club may be: the key events it
carries must be the first n of a chain the club's keys really signed, and each event
it verifies must be one that chain's first n allow. Dropping later key events is
allowed (protocol.md §3.8, §2.2: a document cannot show a revocation it leaves
out); attributing anything more never is.

What it found is kept as regressions at the end: a record giving a club twice hid
its revocation; an invite carrying the seizer's own rotation moved a peer that held
the revocation (and froze the club's keys log there); a key event served as
evidence never verified once its club had rotated; a record of thousands of crafted
key events kept its checker busy for minutes (now bounded, and each window worked
out once: the last tests); and ingest recorded a rotation relayed after the
revocation held at its seq as a fork, freezing the club's keys log.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.core import canonical
from federation.core.canonical import Audience, Genesis, Kind, sha256
from federation.core.crypto import SigningKey
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.evidence import (
    MAX_CARRIED_KEY_EVENTS,
    carried_history,
    check_evidence,
    decode_evidence,
    evidence_of,
)
from federation.core.invite import PREFIX, make_invite, read_invite
from federation.core.keys import (
    CUT_ENTRY_BYTES,
    CutMark,
    KeyHistory,
    check_key_event,
    first_outside,
    key_log_descriptor,
    key_log_id,
    leads_to_key_in_force,
    padding_entries,
    seal_cut,
    with_event,
)
from federation.core.log import descriptor_bytes
from federation.core.payloads import make_payload
from federation.errors import FederationError, InvalidEventError, UsageError
from federation.node import peering
from federation.node.ingest import open_ingest
from federation.node.node import Node, init_node
from federation.views import agreement
from federation.views.proposals import Step, fold
from tests.conftest import BASE_TIME_US
from tests.test_fuzz import check_message, fuzz, json_values, mutated

pytestmark = pytest.mark.timeout(120)

S = 1_000_000  # a second in microseconds
DEADLINE = "2026-01-01T01:00:00Z"


# --- the clubs and their keys -----------------------------------------------------------


@dataclass(frozen=True)
class ClubKeys:
    """A club made from a seed, with its recovery key: genesis, id, signing keys."""

    name: str
    keys: tuple[SigningKey, ...]  # the genesis key, then each key it rotates to
    recovery: SigningKey
    genesis: bytes

    @classmethod
    def make(cls, name: str, n_keys: int) -> ClubKeys:
        keys = tuple(
            SigningKey(sha256(b"fuzz keys %s %d" % (name.encode(), i))) for i in range(n_keys)
        )
        recovery = SigningKey(sha256(b"fuzz recovery " + name.encode()))
        genesis = canonical.encode_genesis(
            Genesis(keys[0].public, sha256(recovery.public), BASE_TIME_US)
        )
        return cls(name, keys, recovery, genesis)

    @property
    def id(self) -> bytes:
        return canonical.club_id(self.genesis)

    @property
    def decoded(self) -> Genesis:
        return canonical.decode_genesis(self.genesis)


P = ClubKeys.make("p", 1)  # the proposer: never changes its key
A = ClubKeys.make("a", 3)  # rotates k0 -> k1 -> k2
B = ClubKeys.make("b", 2)  # revokes its seized k0 -> k1
Z = ClubKeys.make("z", 2)  # another club that rotated: its key event is spliced in
SEIZER_KEY = SigningKey(sha256(b"fuzz keys the seizer's own"))
AUDIENCE = tuple(sorted(m.id for m in (P, A, B)))


def proposals_log(m: ClubKeys) -> bytes:
    return descriptor_bytes(m.id, "proposals", Audience("clubs", AUDIENCE))


DESCRIPTORS = {canonical.log_id(proposals_log(m)): proposals_log(m) for m in (P, A, B, Z)}
DESCRIPTORS |= {key_log_id(m.id): key_log_descriptor(m.id) for m in (P, A, B, Z)}


def log_of(m: ClubKeys) -> bytes:
    return canonical.log_id(proposals_log(m))


def step(
    m: ClubKeys, key: SigningKey, after: VerifiedEvent | None, fields: dict[str, object], at: int
) -> VerifiedEvent:
    return sign_event(
        key,
        club=m.id,
        log=log_of(m),
        head=None if after is None else Head(after.header.seq, after.id),
        time_us=BASE_TIME_US + at * S,
        kind=Kind.PROPOSAL,
        payload=make_payload(Kind.PROPOSAL, fields),
    )


def key_event(
    m: ClubKeys,
    signer: SigningKey,
    after: VerifiedEvent | None,
    revoked: SigningKey,
    new: SigningKey,
    marks: Sequence[CutMark],
    action: str = "rotate",
) -> VerifiedEvent:
    n = 1 if after is None else after.header.seq + 1
    padding = bytes((i * 7 + n) % 256 for i in range(padding_entries(len(marks)) * CUT_ENTRY_BYTES))
    cut = seal_cut(n, marks, padding)
    payload = make_payload(
        Kind.KEY,
        {
            "action": action,
            "key": new.public.hex(),
            "revoked": revoked.public.hex(),
            "cut": [e.hex() for e in cut],
        },
    )
    return sign_event(
        signer,
        club=m.id,
        log=key_log_id(m.id),
        head=None if after is None else Head(after.header.seq, after.id),
        time_us=BASE_TIME_US + 100 * S + n * S,
        kind=Kind.KEY,
        payload=payload,
    )


PROPOSAL = step(
    P,
    P.keys[0],
    None,
    {
        "op": "proposed",
        "title": "Rent strike bloc",
        "rule": "all",
        "deadline": DEADLINE,
        "invited": sorted([A.id.hex(), B.id.hex()]),
    },
    1,
)
PID = PROPOSAL.id.hex()


def accept(
    m: ClubKeys, key: SigningKey, after: VerifiedEvent | None, text: str, at: int
) -> VerifiedEvent:
    return step(
        m, key, after, {"op": "accepted", "proposal": PID, "version": PID, "commitment": text}, at
    )


# a: accepts with k0 (seq 1), rotates to k1 (cut at 1), accepts again with k1 (seq 2),
# rotates to k2 (cut at 2).
A1 = accept(A, A.keys[0], None, "eight people", 2)
A_ROT1 = key_event(A, A.keys[0], None, A.keys[0], A.keys[1], [CutMark(log_of(A), A1.id, 1, A1.id)])
A2 = accept(A, A.keys[1], A1, "eight people and a banner", 3)
A_ROT2 = key_event(
    A, A.keys[1], A_ROT1, A.keys[1], A.keys[2], [CutMark(log_of(A), A1.id, 2, A2.id)]
)
# ... and what its replaced keys signed after their cuts (a copy of its node, restored).
A2_BY_K0 = accept(A, A.keys[0], A1, "the old key, after its cut", 3)
A3_BY_K1 = accept(A, A.keys[1], A2, "k1, after its cut", 4)
A1_FORK = accept(A, A.keys[0], None, "k0, another event at the cut's own seq", 2)

# b: accepts with k0 (seq 1); k0 is seized; b revokes it (recovery key, cut at 1) and
# accepts again with k1. The seizer signed with k0 after the cut, and made its own
# rotation k0 -> its key, with a cut into the future (seq 99) so k0 keeps signing.
B1 = accept(B, B.keys[0], None, "a stall", 2)
B_REVOKE = key_event(
    B, B.recovery, None, B.keys[0], B.keys[1], [CutMark(log_of(B), B1.id, 1, B1.id)], "revoke"
)
B2 = accept(B, B.keys[1], B1, "a stall and leaflets", 3)
B2_BY_SEIZER = accept(B, B.keys[0], B1, "the seizer's words", 3)
B_SEIZER_ROT = key_event(
    B, B.keys[0], None, B.keys[0], SEIZER_KEY, [CutMark(log_of(B), B1.id, 99, sha256(b"future"))]
)
B2_BY_SEIZER_RETRACT = step(
    B, B.keys[0], B1, {"op": "retracted", "proposal": PID, "version": PID}, 3
)

# z: another club's rotation, and one of its steps (its genesis is in no record).
Z_ROT = key_event(Z, Z.keys[0], None, Z.keys[0], Z.keys[1], [])
Z1 = accept(Z, Z.keys[0], None, "not invited", 2)

# The chains of key events each club's keys signed, by name, and the signing key in
# force after the first n of them (n = 0: the genesis key).
CHAINS: dict[bytes, dict[str, list[VerifiedEvent]]] = {
    P.id: {"p": []},
    A.id: {"a": [A_ROT1, A_ROT2]},
    B.id: {"b": [B_REVOKE], "seizer": [B_SEIZER_ROT]},
    Z.id: {"z": [Z_ROT]},
}
SIGNERS: dict[str, list[bytes]] = {
    "p": [P.keys[0].public],
    "a": [k.public for k in A.keys],
    "b": [k.public for k in B.keys],
    "seizer": [B.keys[0].public, SEIZER_KEY.public],
    "z": [k.public for k in Z.keys],
}
Carried = tuple[str, int]  # (chain, n): the first n key events of that chain

# Written by hand from §2.2, not computed by the code under test: under which carried
# key events each event may be attributed to its club. n = 0 (no key events) is the
# same for every chain: only the genesis key, anywhere.
ANY0 = {("p", 0), ("a", 0), ("b", 0), ("seizer", 0), ("z", 0)}
ALLOWED: dict[bytes, set[Carried]] = {
    PROPOSAL.id: ANY0,
    A1.id: ANY0 | {("a", 1), ("a", 2)},  # k0 at seq 1: inside every cut
    A2.id: {("a", 1), ("a", 2)},  # k1 at seq 2: from rotation 1, and rotation 2 keeps it
    A2_BY_K0.id: ANY0,  # k0 after its cut: only if the rotation is left out
    A3_BY_K1.id: {("a", 1)},  # k1 after rotation 2's cut: only if that is left out
    A1_FORK.id: ANY0,  # not the event the cut names at its seq
    B1.id: ANY0 | {("b", 1), ("seizer", 1)},
    B2.id: {("b", 1)},
    # The seizer's k0 after the cut: only without the revocation (the documented limit,
    # §3.8), or under the seizer's own rotation, whose cut (99) keeps k0 signing.
    B2_BY_SEIZER.id: ANY0 | {("seizer", 1)},
    B2_BY_SEIZER_RETRACT.id: ANY0 | {("seizer", 1)},
    Z1.id: ANY0,
    # A key event is the club's only as the key event the document carries at its seq.
    A_ROT1.id: {("a", 1), ("a", 2)},
    A_ROT2.id: {("a", 2)},
    B_REVOKE.id: {("b", 1)},
    B_SEIZER_ROT.id: {("seizer", 1)},
    Z_ROT.id: {("z", 1)},
}
FIRSTS = {log_of(A): A1.id, log_of(B): B1.id}


def carried_as(club: bytes, key_events: Sequence[bytes]) -> set[Carried]:
    """Which (chain, n) a document's key events for `club` (signed headers) are; empty
    if they are no prefix of a chain the club's keys signed."""
    ids = [canonical.event_id(s) for s in key_events]
    return {
        (name, len(ids))
        for name, chain in CHAINS.get(club, {}).items()
        if [e.id for e in chain[: len(ids)]] == ids and len(ids) <= len(chain)
    }


def attributable(event: bytes, carried: set[Carried]) -> bool:
    return bool(ALLOWED.get(event, set()) & carried)


def pairs(events: Sequence[VerifiedEvent]) -> list[tuple[bytes, bytes]]:
    return [(e.signed, e.payload or b"") for e in events]


# --- agreement records of format 2 ----------------------------------------------------


def record_of(
    events: Sequence[VerifiedEvent], keys: Mapping[bytes, Sequence[VerifiedEvent]]
) -> bytes:
    steps = [
        Step(e.id, e.header.club, e.header.log, e.header.seq, e.header.time_us, AUDIENCE, e.payload)
        for e in events
    ]
    [outcome] = [o for o in fold(steps, now_us=0)[0] if o.proposal == PID]
    genesis = {m.id: m.genesis for m in (P, A, B, Z)}
    return agreement.make_record(
        outcome,
        events,
        genesis,
        DESCRIPTORS,
        {c: pairs(k) for c, k in keys.items()},
        FIRSTS,
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def item(e: VerifiedEvent) -> dict[str, str]:
    return {"signed": b64(e.signed), "payload": b64(e.payload or b"")}


KEY_EVENTS = [A_ROT1, A_ROT2, B_REVOKE, B_SEIZER_ROT, Z_ROT]
STEPS = [PROPOSAL, A1, A2, B1, B2, A2_BY_K0, A3_BY_K1, A1_FORK, B2_BY_SEIZER]
STEPS += [B2_BY_SEIZER_RETRACT, Z1]

RECORD = record_of([PROPOSAL, A1, A2, B1, B2], {A.id: [A_ROT1, A_ROT2], B.id: [B_REVOKE]})
RECORDS = [
    RECORD,
    record_of([PROPOSAL, A1, A2, B1, B2], {A.id: [A_ROT1], B.id: [B_REVOKE]}),
    # valid, and each the documented limit: key events left out, or the seizer's own
    record_of([PROPOSAL, A1, A2_BY_K0, B1, B2_BY_SEIZER], {B.id: [B_SEIZER_ROT]}),
    record_of([PROPOSAL, A1, A3_BY_K1, A2, B1, B2], {A.id: [A_ROT1], B.id: [B_REVOKE]}),
]

# Each holding a step signed by a key outside its window under the key events carried.
FORGED_RECORDS = [
    record_of([PROPOSAL, A1, A2_BY_K0, B1, B2], {A.id: [A_ROT1], B.id: [B_REVOKE]}),
    record_of([PROPOSAL, A1, A2, B1, B2_BY_SEIZER], {A.id: [A_ROT1], B.id: [B_REVOKE]}),
    record_of([PROPOSAL, A1, A3_BY_K1, A2, B1, B2], {A.id: [A_ROT1, A_ROT2], B.id: [B_REVOKE]}),
]


def judge_record(data: bytes) -> bool:
    """Refused in one line, or accepted attributing nothing the clubs' keys did not
    sign where their carried key events allow it. True if accepted."""
    try:
        outcome = agreement.check_record(data)
    except InvalidEventError as exc:
        check_message(exc)
        return False
    record = msgspec.json.decode(data, type=agreement.Record | agreement.RecordWithKeys)
    clubs = [canonical.club_id(g) for g in record.clubs]
    lists = record.keys if isinstance(record, agreement.RecordWithKeys) else [[] for _ in clubs]
    carried: dict[bytes, set[Carried]] = {}
    for club, key_events in zip(clubs, lists, strict=True):
        shown = carried_as(club, [k.signed for k in key_events])
        assert shown, "accepted key events that are no prefix of any the club's keys signed"
        # A club given twice must not be read as carrying less than either copy shows
        # (the revocation in one, the seizer's rotation or nothing in the other).
        assert carried.setdefault(club, shown) == shown, "a club's key events read two ways"
    for n, e in enumerate(record.events, 1):
        h = canonical.decode_header(e.signed)
        eid = canonical.event_id(e.signed)
        assert attributable(eid, carried[h.club]), f"event {n} attributed beyond its keys"
    assert outcome.state == "agreed"
    assert outcome.proposal == PID
    return True


# --- evidence documents with `keys` -------------------------------------------------------


def evidence(e: VerifiedEvent, keys: Sequence[VerifiedEvent]) -> bytes:
    club = next(m for m in (P, A, B, Z) if m.id == e.header.club)
    return msgspec.json.encode(
        evidence_of(
            e,
            club.genesis,
            DESCRIPTORS[e.header.log],
            pairs(keys),
            FIRSTS.get(e.header.log),
        )
    )


EVIDENCE = [
    evidence(PROPOSAL, []),
    evidence(A_ROT2, [A_ROT1, A_ROT2]),  # a key event, as the feed serves it
    evidence(B_REVOKE, [B_REVOKE]),
    evidence(A1, [A_ROT1, A_ROT2]),
    evidence(A2, [A_ROT1, A_ROT2]),
    evidence(A3_BY_K1, [A_ROT1]),
    evidence(B2, [B_REVOKE]),
    evidence(B2_BY_SEIZER, [B_SEIZER_ROT]),  # valid: the seizer's chain, the limit
]
# Each signed by a key outside its window under the key events it carries.
FORGED_EVIDENCE = [
    evidence(A2_BY_K0, [A_ROT1]),
    evidence(A3_BY_K1, [A_ROT1, A_ROT2]),
    evidence(A1_FORK, [A_ROT1]),
    evidence(B2_BY_SEIZER, [B_REVOKE]),
    evidence(B2, []),
    evidence(Z1, [Z_ROT]),  # k0 of z at seq 1 with no cut naming its log: (0, 0]
    evidence(B_SEIZER_ROT, [B_REVOKE]),  # the seizer's rotation beside the revocation
    evidence(A_ROT2, [A_ROT1]),  # a key event the document does not carry
]


def judge_evidence(data: bytes) -> bool:
    try:
        doc = decode_evidence(data)
        event = check_evidence(doc)
    except InvalidEventError as exc:
        check_message(exc)
        return False
    club = canonical.club_id(doc.genesis)
    assert event.header.club == club
    carried = carried_as(club, [k.signed for k in doc.keys])
    assert carried, "accepted key events that are no prefix of any the club's keys signed"
    assert attributable(event.id, carried), "an event attributed beyond its keys"
    return True


# --- invites with `keys` ------------------------------------------------------------------


@dataclass(frozen=True)
class InviteSeed:
    member: ClubKeys
    signer: SigningKey
    url: str
    keys: tuple[VerifiedEvent, ...]

    @property
    def text(self) -> str:
        fingerprint = sha256(self.url.encode())
        name = f"Club {self.member.name}"
        return make_invite(
            self.signer, self.member.genesis, name, self.url, fingerprint, pairs(self.keys)
        )


INVITE_SEEDS = [
    InviteSeed(A, A.keys[2], "https://a.example.org:8443", (A_ROT1, A_ROT2)),
    InviteSeed(A, A.keys[0], "https://a-before.example.org", ()),  # before it rotated
    InviteSeed(B, B.keys[1], "https://b.example.org", (B_REVOKE,)),
    InviteSeed(B, SEIZER_KEY, "https://seizer.example.net", (B_SEIZER_ROT,)),
    InviteSeed(B, B.keys[0], "https://seizer0.example.net", ()),
    InviteSeed(P, P.keys[0], "https://p.example.org", ()),
]
INVITES = [s.text for s in INVITE_SEEDS]


def invite_json(text: str) -> bytes:
    body = text[len(PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def invite_of(data: bytes) -> str:
    return PREFIX + base64.urlsafe_b64encode(data).decode().rstrip("=")


def judge_invite(text: str) -> bool:
    try:
        invite = read_invite(text)
    except UsageError as exc:
        check_message(exc)
        return False
    seed = next(s for s in INVITE_SEEDS if s.url == invite.url)  # the url is signed
    assert invite.club == seed.member.id
    assert invite.fingerprint == sha256(seed.url.encode()).hex()
    carried = carried_as(invite.club, [bytes.fromhex(k.signed) for k in invite.keys])
    # The signer must be the key in force after the carried key events: a key the
    # club's keys handed over to, never one a spliced or altered event names.
    assert any(SIGNERS[chain][n] == seed.signer.public for chain, n in carried)
    assert invite.history().current.key == seed.signer.public
    return True


# --- mutations: bytes, and the documents' structure -----------------------------------------

Doc = dict[str, Any]
Encode = Callable[[VerifiedEvent], dict[str, str]]


def item_hex(e: VerifiedEvent) -> dict[str, str]:
    return {"signed": e.signed.hex(), "payload": (e.payload or b"").hex()}


CHAIN_CHOICES = [
    [],
    [A_ROT1],
    [A_ROT1, A_ROT2],
    [A_ROT2],  # a gap: seq 2 first
    [A_ROT2, A_ROT1],
    [A_ROT1, A_ROT1],
    [B_REVOKE],
    [B_SEIZER_ROT],
    [B_REVOKE, B_SEIZER_ROT],
    [B_SEIZER_ROT, B_REVOKE],
    [Z_ROT],
    [A_ROT1, Z_ROT],
]


def edit_key_list(draw: st.DrawFn, keys: list[Any], encode: Encode) -> None:
    """One change to a list of carried key events."""
    op = draw(st.sampled_from(["reorder", "dup", "drop", "splice", "chain", "oversize", "item"]))
    at = draw(st.integers(0, len(keys)))
    if op == "reorder":
        keys[:] = draw(st.permutations(keys))
    elif op == "dup" and keys:
        keys.insert(at, keys[min(at, len(keys) - 1)])
    elif op == "drop" and keys:
        del keys[min(at, len(keys) - 1)]
    elif op == "splice":  # another key event, of this club or another, inserted or put over
        new = encode(draw(st.sampled_from(KEY_EVENTS)))
        keys[at : at + draw(st.integers(0, 1))] = [new]
    elif op == "chain":
        keys[:] = [encode(e) for e in draw(st.sampled_from(CHAIN_CHOICES))]
    elif op == "oversize":
        keys[:] = [keys[0] if keys else encode(A_ROT1)] * draw(st.sampled_from([2, 64, 300]))
    elif op == "item" and keys and isinstance(keys[min(at, len(keys) - 1)], dict):
        # a carried event's fields: swapped, dropped, retyped
        one = dict(keys[min(at, len(keys) - 1)])
        field = draw(st.sampled_from(["signed", "payload", "extra"]))
        choice = draw(st.sampled_from(["swap", "drop", "retype"]))
        if choice == "swap":
            one["signed"], one["payload"] = one.get("payload"), one.get("signed")
        elif choice == "drop":
            one.pop(field, None)
        else:
            one[field] = draw(json_values)
        keys[min(at, len(keys) - 1)] = one


def paths(value: Any, prefix: tuple[Any, ...] = (), depth: int = 3) -> list[tuple[Any, ...]]:
    """Where a value may be put: every field and the first items of lists, 3 deep."""
    out = [prefix] if prefix else []
    if depth and isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k), depth - 1)
    elif depth and isinstance(value, list):
        for i, v in enumerate(value[:3]):
            out += paths(v, (*prefix, i), depth - 1)
    return out


def retype(draw: st.DrawFn, doc: Doc) -> None:
    """Any field, or an item of a list, replaced by a JSON value of any type."""
    if not doc:
        return
    where = draw(st.sampled_from(paths(doc)))
    parent = doc
    for step_ in where[:-1]:
        parent = parent[step_]
    parent[where[-1]] = draw(json_values)


def drop_field(draw: st.DrawFn, doc: Doc) -> None:
    if doc:
        doc.pop(draw(st.sampled_from(sorted(doc))))


def as_json(draw: st.DrawFn, doc: Doc) -> bytes:
    """The document as JSON, maybe with one field given twice (the last counts in
    msgspec; a reader must not take the first)."""
    text = json.dumps(doc)
    if doc and draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(sorted(doc)))
        value = doc[name] if draw(st.booleans()) else draw(json_values)
        text = "{" + json.dumps(name) + ":" + json.dumps(value) + "," + text[1:]
    return text.encode()


def first_bytes(draw: st.DrawFn) -> str:
    choice = draw(
        st.sampled_from([b"", A1.id, B1.id, A2.id, sha256(b"wrong"), bytes(31), bytes(33)])
    )
    return b64(choice)


def prefixes(doc: Doc, j: int) -> list[list[VerifiedEvent]]:
    """Every prefix of every chain of key events signed for the j-th club of `doc`."""
    try:
        club = canonical.club_id(base64.b64decode(doc["clubs"][j]))
    except (TypeError, ValueError):
        return [[]]
    chains = CHAINS.get(club, {}).values()
    return [[]] + [chain[:n] for chain in chains for n in range(1, len(chain) + 1)]


@st.composite
def reshaped_record(draw: st.DrawFn) -> bytes:
    doc: Doc = json.loads(draw(st.sampled_from(RECORDS + FORGED_RECORDS)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                ["keys", "keys", "keys", "firsts", "events", "clubs", "format", "retype", "drop"]
            )
        )
        keys = doc.get("keys")
        if op == "keys" and isinstance(keys, list) and keys and isinstance(keys[0], list):
            edit_key_list(
                draw, draw(st.sampled_from([k for k in keys if isinstance(k, list)])), item
            )
        elif op == "firsts" and isinstance(doc.get("firsts"), list) and doc["firsts"]:
            doc["firsts"][draw(st.integers(0, len(doc["firsts"]) - 1))] = first_bytes(draw)
        elif op == "events" and isinstance(doc.get("events"), list):
            edit_key_list(draw, doc["events"], item)  # the same edits, on the steps
            if draw(st.booleans()):  # and a step of any club, put in
                at = draw(st.integers(0, len(doc["events"])))
                doc["events"][at : at + draw(st.integers(0, 1))] = [
                    item(draw(st.sampled_from(STEPS)))
                ]
        elif op == "clubs" and isinstance(doc.get("clubs"), list):
            # z's genesis, with or without its key events; or a club given twice
            at = draw(st.integers(0, len(doc["clubs"])))
            if draw(st.booleans()):
                doc["clubs"].insert(at, b64(Z.genesis))
                doc["logs"] = [*doc.get("logs", []), b64(DESCRIPTORS[log_of(Z)])]
                if isinstance(keys, list):
                    keys.insert(at, [item(Z_ROT)] if draw(st.booleans()) else [])
                if isinstance(doc.get("firsts"), list):
                    doc["firsts"].append(b64(Z1.id))
            elif doc["clubs"]:
                j = draw(st.integers(0, len(doc["clubs"]) - 1))
                doc["clubs"].insert(at, doc["clubs"][j])
                if isinstance(keys, list) and j < len(keys):
                    # the copy carries a prefix of one of the club's own chains
                    keys.insert(at, [item(e) for e in draw(st.sampled_from(prefixes(doc, j)))])
        elif op == "format":
            doc["format"] = draw(
                st.sampled_from(
                    [agreement.FORMAT, agreement.FORMAT_KEYS, "federation-agreement/3", 2]
                )
            )
        elif op == "retype":
            retype(draw, doc)
        elif op == "drop":
            drop_field(draw, doc)
    return as_json(draw, doc)


@st.composite
def reshaped_evidence(draw: st.DrawFn) -> bytes:
    doc: Doc = json.loads(draw(st.sampled_from(EVIDENCE + FORGED_EVIDENCE)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(["keys", "keys", "keys", "first", "event", "genesis", "retype", "drop"])
        )
        if op == "keys":
            keys = doc.setdefault("keys", [])
            if isinstance(keys, list):
                edit_key_list(draw, keys, item)
        elif op == "first":
            doc["first"] = draw(st.sampled_from([None, first_bytes(draw)]))
        elif op == "event":  # another step's signed bytes, payload, id and header
            other = json.loads(evidence(draw(st.sampled_from(STEPS)), []))
            for name in draw(
                st.sampled_from(
                    [("signed", "payload", "id", "header"), ("signed",), ("signed", "id", "header")]
                )
            ):
                doc[name] = other[name]
        elif op == "genesis":
            other = draw(st.sampled_from([P, A, B, Z]))
            doc["genesis"] = b64(other.genesis)
            if draw(st.booleans()):
                doc["descriptor"] = b64(DESCRIPTORS[log_of(other)])
        elif op == "retype":
            retype(draw, doc)
        elif op == "drop":
            drop_field(draw, doc)
    return as_json(draw, doc)


@st.composite
def reshaped_invite(draw: st.DrawFn) -> str:
    doc: Doc = json.loads(invite_json(draw(st.sampled_from(INVITES))))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["keys", "keys", "keys", "signature", "retype", "drop"]))
        if op == "keys":
            keys = doc.setdefault("keys", [])
            if isinstance(keys, list):
                edit_key_list(draw, keys, item_hex)
        elif op == "signature":  # another invite's signature, or genesis
            other = json.loads(invite_json(draw(st.sampled_from(INVITES))))
            name = draw(st.sampled_from(["signature", "genesis"]))
            doc[name] = other[name]
        elif op == "retype":
            retype(draw, doc)
        elif op == "drop":
            drop_field(draw, doc)
    return invite_of(as_json(draw, doc))


# --- the properties ------------------------------------------------------------------------


@fuzz(400)
@given(
    reshaped_record()
    | mutated(RECORDS + FORGED_RECORDS)
    | json_values.map(lambda v: json.dumps(v).encode())
)
def test_a_format_2_record_is_refused_in_one_line_or_attributes_nothing_more(data: bytes) -> None:
    judge_record(data)


@fuzz(300)
@given(reshaped_evidence() | mutated(EVIDENCE + FORGED_EVIDENCE))
def test_an_evidence_document_is_refused_in_one_line_or_attributes_nothing_more(
    data: bytes,
) -> None:
    judge_evidence(data)


@fuzz(300)
@given(reshaped_invite() | mutated([invite_json(i) for i in INVITES]).map(invite_of))
def test_an_invite_is_refused_in_one_line_or_signed_by_the_key_its_key_events_give(
    text: str,
) -> None:
    judge_invite(text)


# Key events signed by the key in force but saying anything (what a seizer holding the
# key can sign): the key rule reads them, and must refuse in one line or take them.
KEY_FIELDS = ["action", "key", "revoked", "cut"]
VALID_KEY_PAYLOAD = A_ROT1.payload or b""


@fuzz(100)
@given(
    mutated([VALID_KEY_PAYLOAD])
    | st.dictionaries(st.sampled_from(KEY_FIELDS) | st.text(max_size=6), json_values).map(
        lambda v: json.dumps(v).encode()
    )
    | st.sampled_from([A.keys[1].public.hex(), A.keys[0].public.hex(), "zz" * 32]).map(
        lambda k: json.dumps(
            {
                "action": "rotate",
                "key": k,
                "revoked": A.keys[0].public.hex(),
                "cut": ["ab" * 88] * 8,
            }
        ).encode()
    )
)
def test_a_key_event_saying_anything_is_refused_in_one_line_or_read(payload: bytes) -> None:
    if len(payload) > canonical.MAX_PAYLOAD_BYTES:
        return
    signed = sign_event(
        A.keys[0],
        club=A.id,
        log=key_log_id(A.id),
        head=None,
        time_us=BASE_TIME_US,
        kind=Kind.KEY,
        payload=payload,
    )
    doc = msgspec.json.encode(evidence_of(A1, A.genesis, proposals_log(A), pairs([signed]), A1.id))
    invite = make_invite(
        A.keys[0], A.genesis, "Club a", "https://a.example.org", sha256(b"c"), pairs([signed])
    )
    try:
        history = check_key_event(KeyHistory.of(A.decoded), signed.header, payload)
    except FederationError as exc:
        check_message(exc)
        history = None
    for check in (lambda: check_evidence(decode_evidence(doc)), lambda: read_invite(invite)):
        try:
            check()
        except FederationError as exc:
            check_message(exc)
        else:  # taken only if the key rule takes the event (it hands k0 over to a key)
            assert history is not None


# --- the documents as made, and what the table says of them ---------------------------------


def test_the_seeds_verify_or_are_refused_as_the_table_says() -> None:
    """The positive control: the mutations start from real documents, the valid ones
    verify, and each forged one is refused, so the table and the code agree on them."""
    assert all(judge_record(r) for r in RECORDS)
    assert all(judge_evidence(e) for e in EVIDENCE)
    assert not any(judge_evidence(e) for e in FORGED_EVIDENCE)
    assert [judge_invite(i) for i in INVITES] == [True] * len(INVITES)
    assert not any(judge_record(r) for r in FORGED_RECORDS)
    # The table's own check: a forged document, had it been accepted, would fail it.
    assert not attributable(A2_BY_K0.id, carried_as(A.id, [A_ROT1.signed]))
    assert not attributable(B2_BY_SEIZER.id, carried_as(B.id, [B_REVOKE.signed]))
    assert not carried_as(A.id, [Z_ROT.signed])
    assert not carried_as(A.id, [A_ROT2.signed])


# --- regressions: what the fuzzing found -----------------------------------------------------


def test_a_key_event_verifies_as_evidence_among_the_key_events_carried() -> None:
    """The feed serves its keys log's events at /events/{id} too: a rotation signed by
    a key the club later rotated, and a revocation (signed by the recovery key), were
    refused as outside a window or not authorised. A key event is checked by the key
    rule, as the key event carried at its seq; without them, or another, it is not."""
    assert check_evidence(decode_evidence(evidence(A_ROT1, [A_ROT1, A_ROT2]))).id == A_ROT1.id
    assert check_evidence(decode_evidence(evidence(B_REVOKE, [B_REVOKE]))).id == B_REVOKE.id
    for forged in (evidence(A_ROT1, []), evidence(B_SEIZER_ROT, [B_REVOKE])):
        with pytest.raises(FederationError, match="among the club's key events"):
            check_evidence(decode_evidence(forged))


def history_of(m: ClubKeys, events: Sequence[VerifiedEvent]) -> KeyHistory:
    history = KeyHistory.of(m.decoded)
    for e in events:
        epoch = check_key_event(history, e.header, e.payload)
        history = with_event(history, epoch, e.id, e.header.time_us)
    return history


@pytest.mark.parametrize(
    ("held", "shown", "taken"),
    [
        ([], [], True),
        ([], [A_ROT1, A_ROT2], True),
        ([A_ROT1], [A_ROT1, A_ROT2], True),
        ([A_ROT1, A_ROT2], [A_ROT1, A_ROT2], True),
        ([A_ROT1, A_ROT2], [A_ROT1], False),  # an older invite
        ([A_ROT1], [], False),
        ([B_REVOKE], [B_SEIZER_ROT], False),  # the seizer's own chain, as long
        ([B_SEIZER_ROT], [B_REVOKE], True),  # the revocation beats the seizer's rotation
        ([B_REVOKE], [B_REVOKE], True),
    ],
)
def test_an_invites_key_events_must_lead_to_the_key_in_force_here(
    held: list[VerifiedEvent], shown: list[VerifiedEvent], taken: bool
) -> None:
    m = A if any(e.header.club == A.id for e in held + shown) else B
    assert leads_to_key_in_force(history_of(m, held), history_of(m, shown)) is taken


async def test_the_seizers_own_rotation_cannot_move_a_peer_once_the_revocation_is_held(
    tmp_path: Path,
) -> None:
    """Found here: an invite carrying the seizer's rotation (as many key events as the
    club's revocation) was taken by a node holding the revocation, and the club's peer
    address became the seizer's. It is refused before anything is written; in the
    other order the club's own invite, whose revocation beats the rotation, is taken."""
    by_url = {s.url: s.text for s in INVITE_SEEDS}
    club_b, seizer = by_url["https://b.example.org"], by_url["https://seizer.example.net"]
    for name, order in (("x", [club_b, seizer]), ("y", [seizer, club_b])):
        root = tmp_path / name
        await init_node(
            root, name=f"Club {name}", listen="127.0.0.1:0", passphrase=None, plain_http=True
        )
        async with await Node.open(root) as node:
            await peering.add(node, order[0])
            if order[0] == club_b:
                with pytest.raises(UsageError, match="since rotated or revoked"):
                    await peering.add(node, seizer)
                assert await node.store.forks() == []  # its key event was not even taken
            else:  # nothing here told the seizer's invite apart (protocol.md §5.1)
                await peering.add(node, club_b)
            assert [p.url for p in await node.store.peers()] == ["https://b.example.org"]
            assert node.keys.signing_key(B.id) == B.keys[1].public
            assert [e.id for e in await node.store.events(key_log_id(B.id))] == [B_REVOKE.id]


async def test_a_rotation_the_held_revocation_beats_is_refused_not_a_fork(tmp_path: Path) -> None:
    """protocol.md §2.2: a revocation beats any key event at its seq that is not one;
    two revocations are the only real fork. A seizer's rotation relayed after the
    revocation (by a peer that never had the revocation) must change nothing: no fork
    recorded, and the club's next key event still taken."""
    root = tmp_path / "x"
    await init_node(root, name="Club x", listen="127.0.0.1:0", passphrase=None, plain_http=True)
    b_k2 = SigningKey(sha256(b"fuzz keys b 2"))
    next_rotation = key_event(B, B.keys[1], B_REVOKE, B.keys[1], b_k2, [])
    async with await Node.open(root) as node:
        await peering.add(node, INVITE_SEEDS[2].text)  # b's, with its revocation
        log = key_log_id(B.id)
        for run in ([B_SEIZER_ROT], [B_REVOKE, next_rotation]):
            async with open_ingest(node.store, node.genesis, node.clock) as ingest:
                await ingest.log(log, key_log_descriptor(B.id))
                await ingest.run(log, pairs(run))
        assert await node.store.forks() == []
        assert [e.id for e in await node.store.events(log)] == [B_REVOKE.id, next_rotation.id]
        await node.load_clubs()
        assert node.keys.signing_key(B.id) == b_k2.public


def test_a_club_given_twice_cannot_hide_its_revocation_in_a_record() -> None:
    """Found here: b given twice, its revocation beside the first copy and the seizer's
    rotation beside the second, verified the seizer's acceptance in a record that
    carries the revocation (the last copy was read). A club or log given twice is
    refused; each copy alone is the documented limit or refused."""
    data = record_of([PROPOSAL, A1, A2, B1, B2_BY_SEIZER], {A.id: [A_ROT1], B.id: [B_SEIZER_ROT]})
    assert judge_record(data)  # the seizer's chain alone: what a record cannot tell (§3.8)
    doc = json.loads(data)
    at = doc["clubs"].index(b64(B.genesis))
    doc["clubs"].insert(0, doc["clubs"][at])
    doc["keys"].insert(0, [item(B_REVOKE)])
    with pytest.raises(FederationError, match="in the record twice"):
        agreement.check_record(json.dumps(doc).encode())
    doc = json.loads(RECORD)
    doc["logs"].append(doc["logs"][0])
    doc["firsts"].append(b64(sha256(b"another first")))
    with pytest.raises(FederationError, match="in the record twice"):
        agreement.check_record(json.dumps(doc).encode())


# --- the windows, worked out once, and the bound on what a document carries --------------

LOG_W, FIRST_W = sha256(b"windows log"), sha256(b"windows first")


def reference_outside(
    history: KeyHistory, log: bytes, first: bytes, events: Sequence[tuple[int, bytes, bytes]]
) -> int | None:
    """§2.2 as written, one key at a time (`window` and `end_of`, every cut opened
    again for each): what `first_outside`, which opens each cut once, must equal."""
    for seq, key, eid in events:
        window = history.window(log, first, key)
        j = history.epoch_of(key)
        end = (float("inf"), None) if j is None else history.end_of(j, log, first)
        if window is None or not window[0] < seq <= window[1]:
            return seq
        if seq == end[0] and eid != end[1]:
            return seq
    return None


@fuzz(60)
@given(
    cuts=st.lists(
        st.lists(st.tuples(st.sampled_from([LOG_W, sha256(b"other")]), st.integers(0, 12))),
        min_size=1,
        max_size=6,
    ),
    events=st.lists(
        st.tuples(st.integers(1, 14), st.integers(0, 7), st.integers(0, 6)), max_size=8
    ),
)
def test_windows_worked_out_once_are_the_windows_of_the_rule(
    cuts: list[list[tuple[bytes, int]]], events: list[tuple[int, int, int]]
) -> None:
    """Each cut names the log or not, at any seq (ties, and later cuts below earlier
    ones); events are signed by any of the keys, or one that is none of them."""
    keys = [SigningKey(sha256(b"windows key %d" % i)) for i in range(8)]
    genesis = Genesis(keys[0].public, sha256(A.recovery.public), BASE_TIME_US)
    history = KeyHistory.of(genesis)
    for n, marks in enumerate(cuts, 1):
        # the id a cut names depends on the epoch: which of two equal cuts ends a
        # window shows
        entries = [
            CutMark(log, FIRST_W, seq, sha256(b"%d %d" % (n, seq))) for log, seq in marks if seq
        ]
        payload = make_payload(
            Kind.KEY,
            {
                "action": "rotate",
                "key": keys[n].public.hex(),
                "revoked": keys[n - 1].public.hex(),
                "cut": [
                    e.hex()
                    for e in seal_cut(
                        n, entries, bytes(padding_entries(len(entries)) * CUT_ENTRY_BYTES)
                    )
                ],
            },
        )
        club = canonical.club_id(canonical.encode_genesis(genesis))
        head = None if n == 1 else Head(n - 1, history.current.event)
        e = sign_event(
            keys[n - 1],
            club=club,
            log=key_log_id(club),
            head=head,
            time_us=n,
            kind=Kind.KEY,
            payload=payload,
        )
        history = with_event(history, check_key_event(history, e.header, e.payload), e.id, n)
    shown = [(seq, keys[k].public, sha256(b"%d %d" % (n, seq))) for seq, k, n in sorted(events)]
    found = first_outside(history, LOG_W, FIRST_W, shown)
    assert (None if found is None else found[0]) == reference_outside(
        history, LOG_W, FIRST_W, shown
    )
    for j in range(len(history.epochs)):  # each epoch's, asked in any order, the same
        window, end_id = history.window_at(j, LOG_W, FIRST_W)
        assert window == history.window(LOG_W, FIRST_W, history.epochs[j].key)
        assert (window[1], end_id) == history.end_of(j, LOG_W, FIRST_W)


def test_a_document_carries_at_most_256_key_events_of_a_club() -> None:
    """The work a document asks of a verifier grows with the key events it carries
    for each log it shows: past MAX_CARRIED_KEY_EVENTS it is refused before any is
    checked (protocol.md §2.2); 256 still verify."""
    chain: list[VerifiedEvent] = []
    keys = [SigningKey(sha256(b"many keys %d" % i)) for i in range(MAX_CARRIED_KEY_EVENTS + 2)]
    genesis = Genesis(keys[0].public, sha256(A.recovery.public), BASE_TIME_US)
    raw = canonical.encode_genesis(genesis)
    club = ClubKeys("many", tuple(keys), A.recovery, raw)
    for n in range(1, MAX_CARRIED_KEY_EVENTS + 2):
        chain.append(
            key_event(club, keys[n - 1], chain[-1] if chain else None, keys[n - 1], keys[n], [])
        )
    assert carried_history(genesis, club.id, pairs(chain[:-1])).current.key == keys[-2].public
    with pytest.raises(InvalidEventError, match="over the 256 a document may carry"):
        carried_history(genesis, club.id, pairs(chain))
    invite = make_invite(
        keys[-1], raw, "Club many", "https://many.example.org", sha256(b"c"), pairs(chain)
    )
    with pytest.raises(UsageError, match="over the 256"):
        read_invite(invite)
