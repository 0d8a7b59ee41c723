"""Selection: which logs a requesting club may receive (protocol.md §5.4).

Decided here, purely, and applied at the network boundary by the peer API for every
log it lists or serves. The rules, for a log of origin club O asked for by R:

- `private`: never leaves the node, whoever asks (not even O's own other nodes).
- `public`: anyone, authenticated or not.
- `federation`: R is in O's roster, as O signed it in O's roster log; when we relay
  O's log we follow O's roster as we hold it, never our own (DESIGN principle 10).
  While any of O's roster events is held without its payload (or with one that does
  not decode), O's roster is unknown here, and its federation logs go to O alone:
  a missing payload is never read as permission (DESIGN principle 16).
- `clubs`: R is one of the named clubs.

And one rule on top, because federation is mutual and chosen: a requester that is
not one of our own active peers gets public logs only, whatever the audience says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from federation.core import canonical
from federation.core.canonical import Audience, Kind, LogDescriptor
from federation.core.events import VerifiedEvent
from federation.core.payloads import read_payload

ROSTER_LOG_NAME = "roster"
Roster = frozenset[bytes]
# A club's roster as this node knows it: None while unknown (a roster event's payload
# is missing here), which is not the empty roster, though both let nobody in.
KnownRoster = Roster | None


def roster_log_id(club: bytes) -> bytes:
    """Every node can compute any club's roster log id from the club id alone."""
    return canonical.log_id(roster_descriptor(club))


def roster_descriptor(club: bytes) -> bytes:
    return canonical.encode_log(LogDescriptor(club, ROSTER_LOG_NAME, Audience("federation")))


def fold_roster(roster: set[bytes], events: Iterable[VerifiedEvent]) -> bool:
    """Apply roster events (in seq order) to a set of club ids. Returns False if any
    roster event lacks its payload or has one that does not decode: the roster is
    then unknown (§5.4), whatever the set holds, until the payload is filled in."""
    known = True
    for event in events:
        if event.header.kind != Kind.ROSTER:
            continue
        fields = None if event.payload is None else read_payload(Kind.ROSTER, event.payload)
        if fields is None:
            known = False
            continue
        try:
            club = bytes.fromhex(str(fields["club"]))
        except ValueError:  # pragma: no cover - the payload type checks the pattern
            known = False
            continue
        if fields["op"] == "added":
            roster.add(club)
        else:
            roster.discard(club)
    return known


def may_receive(
    audience: Audience,
    origin: bytes,
    requester: bytes | None,
    *,
    our_peers: frozenset[bytes],
    rosters: Mapping[bytes, KnownRoster],
) -> bool:
    """May `requester` (None: unauthenticated) receive a log of `origin` with `audience`?"""
    if audience.kind == "private":
        return False
    if audience.kind == "public":
        return True
    if requester is None or requester not in our_peers:
        return False
    if requester == origin:
        return True  # a club may fetch its own shared logs back, e.g. after a restore
    if audience.kind == "federation":
        roster = rosters.get(origin)  # None: no roster held, or unknown: fail closed
        return roster is not None and requester in roster
    return requester in audience.clubs
