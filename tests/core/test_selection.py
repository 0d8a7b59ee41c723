"""Selection: who may receive which log (protocol.md §5.4), and rosters."""

from __future__ import annotations

import msgspec
import pytest

from federation.core import canonical
from federation.core.canonical import Audience, Kind, LogDescriptor
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.payloads import make_payload
from federation.core.selection import (
    ROSTER_LOG_NAME,
    fold_roster,
    may_receive,
    roster_descriptor,
    roster_log_id,
)
from tests.conftest import BASE_TIME_US, Club

ORIGIN = b"o" * 32
IN_ROSTER = b"r" * 32  # our peer, in the origin's roster
NOT_IN_ROSTER = b"p" * 32  # our peer, not in the origin's roster
NAMED = b"n" * 32  # our peer, named by the "clubs" audience
STRANGER = b"s" * 32  # not our peer, though in the roster and named

OUR_PEERS = frozenset({ORIGIN, IN_ROSTER, NOT_IN_ROSTER, NAMED})
ROSTERS = {ORIGIN: frozenset({IN_ROSTER, STRANGER})}

AUDIENCES = {
    "private": Audience("private"),
    "public": Audience("public"),
    "federation": Audience("federation"),
    "clubs": Audience("clubs", tuple(sorted({NAMED, STRANGER}))),
}
REQUESTERS: dict[str, bytes | None] = {
    "anonymous": None,
    "stranger": STRANGER,
    "in roster": IN_ROSTER,
    "not in roster": NOT_IN_ROSTER,
    "origin": ORIGIN,
    "named": NAMED,
}
# The whole table: audience -> the requesters that may receive.
MAY = {
    "private": set[str](),
    "public": set(REQUESTERS),
    "federation": {"in roster", "origin"},
    "clubs": {"origin", "named"},
}


@pytest.mark.parametrize("audience", sorted(AUDIENCES))
@pytest.mark.parametrize("requester", sorted(REQUESTERS))
def test_may_receive(audience: str, requester: str) -> None:
    allowed = may_receive(
        AUDIENCES[audience],
        ORIGIN,
        REQUESTERS[requester],
        our_peers=OUR_PEERS,
        rosters=ROSTERS,
    )
    assert allowed == (requester in MAY[audience])


def test_federation_without_a_roster_is_origin_only() -> None:
    def may(requester: bytes) -> bool:
        return may_receive(
            Audience("federation"), ORIGIN, requester, our_peers=OUR_PEERS, rosters={}
        )

    assert may(ORIGIN)
    assert not may(IN_ROSTER)


def test_federation_follows_the_origins_roster_not_ours() -> None:
    # We relay club X's log: X's roster decides, whatever ours (under our id) says.
    ours = b"u" * 32
    rosters = {ours: frozenset({NOT_IN_ROSTER}), ORIGIN: frozenset({IN_ROSTER})}
    assert not may_receive(
        Audience("federation"), ORIGIN, NOT_IN_ROSTER, our_peers=OUR_PEERS, rosters=rosters
    )


def test_no_peers_gets_public_only() -> None:
    for name, audience in AUDIENCES.items():
        allowed = may_receive(audience, ORIGIN, ORIGIN, our_peers=frozenset(), rosters=ROSTERS)
        assert allowed == (name == "public")


# --- rosters -------------------------------------------------------------------------------

CLUB = Club.make(b"club a")
X, Y = b"x" * 32, b"y" * 32


def roster_events(*payloads: bytes, kind: int = Kind.ROSTER) -> list[VerifiedEvent]:
    out: list[VerifiedEvent] = []
    head: Head | None = None
    for payload in payloads:
        event = sign_event(
            CLUB.key,
            club=CLUB.id,
            log=roster_log_id(CLUB.id),
            head=head,
            time_us=BASE_TIME_US + len(out),
            kind=kind,
            payload=payload,
        )
        out.append(event)
        head = Head(event.header.seq, event.id)
    return out


def entry(op: str, club: bytes) -> bytes:
    return make_payload(Kind.ROSTER, {"op": op, "club": club.hex(), "name": "a club"})


def fold(start: set[bytes], events: list[VerifiedEvent]) -> tuple[set[bytes], bool]:
    known = fold_roster(start, events)
    return start, known


def test_fold_adds_and_removes_in_order() -> None:
    events = roster_events(entry("added", X), entry("added", Y), entry("removed", X))
    assert fold(set(), events) == ({Y}, True)
    assert fold(set(), events[:2]) == ({X, Y}, True)


def test_fold_continues_from_a_given_roster() -> None:
    start = {X}
    assert fold_roster(start, roster_events(entry("added", Y))) is True
    assert start == {X, Y}


def test_removing_an_absent_club_is_harmless() -> None:
    assert fold({Y}, roster_events(entry("removed", X))) == ({Y}, True)


def test_a_roster_event_without_its_payload_makes_the_roster_unknown() -> None:
    """DESIGN principle 16: a stripped `removed` is never read as "still added"."""
    added, removed = roster_events(entry("added", X), entry("removed", X))
    stripped = msgspec.structs.replace(removed, payload=None)
    assert stripped.erased
    assert fold(set(), [added, stripped])[1] is False
    assert fold(set(), [added, removed]) == (set(), True)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"op":"added"}',  # no club
        b'{"op":"joined","club":"' + X.hex().encode() + b'"}',
        b'{"op":"added","club":"' + b"zz" * 32 + b'"}',
        b'{"op":"added","club":"' + X.hex()[:-2].encode() + b'"}',
        b'{"op":"added","club":"' + b"AB" * 32 + b'"}',  # upper case
    ],
)
def test_undecodable_roster_events_make_the_roster_unknown(payload: bytes) -> None:
    assert fold({Y}, roster_events(payload)) == ({Y}, False)


def test_a_newer_clubs_extra_fields_are_read() -> None:
    payload = b'{"op":"added","club":"' + X.hex().encode() + b'","since":"2026"}'
    assert fold(set(), roster_events(payload)) == ({X}, True)


def test_other_kinds_are_skipped() -> None:
    note = b'{"op":"added","club":"' + X.hex().encode() + b'"}'
    assert fold(set(), roster_events(note, kind=Kind.NOTE)) == (set(), True)


def test_roster_log_id_is_deterministic() -> None:
    assert roster_log_id(X) == roster_log_id(bytes(X))
    assert roster_log_id(X) != roster_log_id(Y)
    descriptor = canonical.decode_log(roster_descriptor(X))
    assert descriptor == LogDescriptor(X, ROSTER_LOG_NAME, Audience("federation"))
    assert roster_log_id(X) == canonical.log_id(roster_descriptor(X))
    assert roster_log_id(CLUB.id) != CLUB.log("federation")  # not the club's federation log


def test_an_unknown_roster_lets_nobody_but_its_club_in() -> None:
    """§5.4: None (a roster payload missing here) is not the empty roster, and is no
    permission: the origin's federation logs go to the origin alone."""
    rosters = {ORIGIN: None}
    for requester in (IN_ROSTER, NOT_IN_ROSTER, NAMED):
        assert not may_receive(
            Audience("federation"), ORIGIN, requester, our_peers=OUR_PEERS, rosters=rosters
        )
    assert may_receive(Audience("federation"), ORIGIN, ORIGIN, our_peers=OUR_PEERS, rosters=rosters)
