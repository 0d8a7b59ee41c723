"""Signing and verifying events, one at a time and a run at a time (protocol.md §3, §4)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.core import canonical
from federation.core.canonical import (
    HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    SIGNED_HEADER_BYTES,
    ZERO_HASH,
    Header,
    Kind,
)
from federation.core.crypto import SigningKey
from federation.core.events import (
    Head,
    VerifiedEvent,
    runs_of,
    sign_event,
    verify_event,
    verify_run,
)
from federation.errors import InvalidEventError
from tests.conftest import BASE_TIME_US, Club, run_of

# Built once: Hypothesis examples must not share a function-scoped fixture.
CLUB = Club.make(b"club a")
EVENTS = CLUB.chain(3, payloads=[b"", b'{"text":"x"}', bytes(range(256)) * 4])


def resign(club: Club, header: Header, key: SigningKey | None = None) -> bytes:
    """Sign an arbitrary header, as a (possibly malicious) key holder could."""
    body = canonical.encode_header(header)
    return body + (key or club.key).sign(body)


def with_bad_signature(signed: bytes) -> bytes:
    return signed[:-1] + bytes([signed[-1] ^ 0x01])


# --- one event ----------------------------------------------------------------------


def test_sign_then_verify(club: Club) -> None:
    payload = b'{"text":"picket at the depot, 7am"}'
    event = sign_event(
        club.key,
        club=club.id,
        log=club.log(),
        head=None,
        time_us=BASE_TIME_US,
        kind=Kind.NOTE,
        payload=payload,
    )
    assert len(event.signed) == SIGNED_HEADER_BYTES
    assert event.id == canonical.event_id(event.signed)
    assert canonical.decode_header(event.signed) == event.header
    h = event.header
    assert (h.club, h.log, h.seq, h.prev) == (club.id, club.log(), 1, ZERO_HASH)
    assert (h.payload_hash, h.payload_size, h.key) == (
        canonical.sha256(payload),
        len(payload),
        club.key.public,
    )
    assert verify_event(event.signed, payload, club.authorized) == event

    second = sign_event(
        club.key,
        club=club.id,
        log=club.log(),
        head=Head(1, event.id),
        time_us=BASE_TIME_US,
        kind=Kind.REPORT,
        payload=b"{}",
    )
    assert (second.header.seq, second.header.prev) == (2, event.id)
    assert verify_event(second.signed, b"{}", club.authorized) == second


def test_erased_payload_still_verifies(club: Club) -> None:
    events = club.chain(4)
    erased = [VerifiedEvent(e.id, e.header, e.signed, None) for e in events]
    assert verify_event(events[1].signed, None, club.authorized).erased
    verified, error = verify_run(club.log(), None, run_of(erased), club.authorized)
    assert error is None
    assert verified.events() == erased
    verified, error = verify_run(
        club.log(), None, run_of(erased), club.authorized, every_signature=True
    )
    assert (verified.events(), error) == (erased, None)


def test_oversize_payload_is_not_signed(club: Club) -> None:
    with pytest.raises(InvalidEventError, match="over the limit of 65536"):
        club.chain(1, payloads=[bytes(MAX_PAYLOAD_BYTES + 1)])
    assert club.chain(1, payloads=[bytes(MAX_PAYLOAD_BYTES)])[0].header.payload_size == 65536


def test_oversize_payload_is_refused_even_when_signed(club: Club) -> None:
    big = bytes(MAX_PAYLOAD_BYTES + 1)
    header = Header(
        club.id,
        club.log(),
        1,
        ZERO_HASH,
        0,
        Kind.NOTE,
        canonical.sha256(big),
        len(big),
        club.key.public,
    )
    signed = resign(club, header)
    with pytest.raises(InvalidEventError, match="over the limit") as caught:
        verify_event(signed, big, club.authorized)
    assert (caught.value.club, caught.value.log, caught.value.seq) == (club.id, club.log(), 1)
    verified, error = verify_run(club.log(), None, [(signed, big)], club.authorized)
    assert verified.events() == []
    assert error is not None
    assert "over the limit" in error.reason


def test_unknown_kind_and_seq_zero_are_refused() -> None:
    good = EVENTS[0].header
    for changes, why in (({"kind": 99}, "unknown event kind 99"), ({"seq": 0}, "seq must start")):
        signed = resign(CLUB, msgspec.structs.replace(good, **changes))
        with pytest.raises(InvalidEventError, match=why):
            verify_event(signed, b"", CLUB.authorized)


def test_unauthorised_key_is_refused(club: Club, other_club: Club) -> None:
    # A well-signed event for club A made with club B's key.
    header = club.chain(1)[0].header
    forged = msgspec.structs.replace(header, key=other_club.key.public)
    signed = resign(club, forged, other_club.key)
    payload = club.chain(1)[0].payload
    with pytest.raises(InvalidEventError, match="not authorised for this club") as caught:
        verify_event(signed, payload, club.authorized)
    assert caught.value.club == club.id
    verified, error = verify_run(club.log(), None, [(signed, payload)], club.authorized)
    assert verified.events() == []
    assert error is not None
    assert "not authorised" in error.reason


positions = st.sampled_from(range(len(EVENTS))).flatmap(
    lambda i: st.tuples(
        st.just(i),
        st.booleans(),  # True: tamper with the signed header; False: with the payload
        st.integers(0, SIGNED_HEADER_BYTES - 1),
        st.integers(1, 255),
    )
)


@settings(max_examples=500)
@given(positions)
def test_any_flipped_byte_fails_verification(case: tuple[int, bool, int, int]) -> None:
    i, in_header, index, mask = case
    event = EVENTS[i]
    signed, payload = bytearray(event.signed), bytearray(event.payload or b"")
    if in_header:
        signed[index] ^= mask
    elif payload:
        payload[index % len(payload)] ^= mask
    else:
        payload = bytearray([mask])  # an empty payload can only be tampered with by adding to it
    with pytest.raises(InvalidEventError) as caught:
        verify_event(bytes(signed), bytes(payload), CLUB.authorized)
    error = caught.value
    if in_header and index < 17:  # tag or version: the header does not decode
        assert error.club is None
        return
    # The error names the event as the (tampered) bytes claim it to be.
    claimed = canonical.decode_header(bytes(signed))
    assert (error.club, error.log, error.seq) == (claimed.club, claimed.log, claimed.seq)
    assert f"club {claimed.club.hex()[:16]}" in str(error)
    assert f"log {claimed.log.hex()[:16]}" in str(error)
    assert f"seq {claimed.seq}" in str(error)
    # A run fails at the same event, keeping the events before it.
    run = run_of(EVENTS)
    run[i] = (bytes(signed), bytes(payload))
    verified, run_error = verify_run(CLUB.log(), None, run, CLUB.authorized)
    assert verified.events() == EVENTS[:i]
    assert run_error is not None


# --- runs ---------------------------------------------------------------------------


def test_valid_run(club: Club) -> None:
    events = club.chain(10)
    for every in (False, True):
        run, error = verify_run(
            club.log(), None, run_of(events), club.authorized, every_signature=every
        )
        assert (run.events(), error) == (events, None)
        assert (run.log, run.club, run.after, run.first, run.head) == (
            club.log(),
            club.id,
            None,
            1,
            Head(10, events[-1].id),
        )
    # a run that follows a head
    after = Head(4, events[3].id)
    run, error = verify_run(club.log(), after, run_of(events[4:]), club.authorized)
    assert (run.events(), error, run.first, run.head) == (events[4:], None, 5, events_head(events))
    run, error = verify_run(club.log(), after, [], club.authorized)
    assert (len(run), error, run.head) == (0, None, after)


def test_runs_of_groups_consecutive_events(club: Club) -> None:
    events = club.chain(6)
    other = club.chain(2, audience="public")
    runs = runs_of([*events[:3], *other, *events[4:]])
    assert [(r.log, r.first, len(r)) for r in runs] == [
        (club.log(), 1, 3),
        (club.log("public"), 1, 2),
        (club.log(), 5, 2),  # seq 4 is missing: a new run, which the store will refuse
    ]
    assert [e for r in runs for e in r.events()] == [*events[:3], *other, *events[4:]]
    assert runs_of([]) == []


def events_head(events: list[VerifiedEvent]) -> Head:
    return Head(events[-1].header.seq, events[-1].id)


def test_seq_gap(club: Club) -> None:
    events = club.chain(5)
    run = run_of(events[:2] + events[3:])
    verified, error = verify_run(club.log(), None, run, club.authorized)
    assert verified.events() == events[:2]
    assert error is not None
    assert "seq gap: expected seq 3, got 4" in str(error)
    assert error.seq == 4
    # a run that does not start right after the head
    verified, error = verify_run(
        club.log(), Head(1, events[0].id), run_of(events[2:]), club.authorized
    )
    assert verified.events() == []
    assert error is not None
    assert "expected seq 2, got 3" in str(error)


def test_broken_prev_link(club: Club) -> None:
    events = club.chain(4)
    # seq 3 signed on top of a different seq 2
    other = club.chain(1, after=Head(1, events[0].id), payloads=[b"another seq 2"])[0]
    third = club.chain(1, after=Head(2, other.id))[0]
    verified, error = verify_run(
        club.log(), None, run_of([events[0], events[1], third]), club.authorized
    )
    assert verified.events() == events[:2]
    assert error is not None
    assert "previous-hash link broken" in str(error)
    assert (error.club, error.log, error.seq) == (club.id, club.log(), 3)
    # the head a run follows is checked too
    verified, error = verify_run(
        club.log(), Head(1, b"\x01" * 32), run_of(events[1:]), club.authorized
    )
    assert (verified.events(), error is not None) == ([], True)


def test_altered_payload(club: Club) -> None:
    events = club.chain(5)
    run = run_of(events)
    run[2] = (run[2][0], b'{"text":"note X"}')
    verified, error = verify_run(club.log(), None, run, club.authorized)
    assert verified.events() == events[:2]
    assert error is not None
    assert "altered payload" in str(error)
    assert error.seq == 3


def test_forged_signature_on_the_last_event_keeps_the_prefix(club: Club) -> None:
    events = club.chain(6)
    run = run_of(events)
    run[-1] = (with_bad_signature(run[-1][0]), run[-1][1])
    for every in (False, True):
        verified, error = verify_run(club.log(), None, run, club.authorized, every_signature=every)
        assert verified.events() == events[:5]
        assert error is not None
        assert "bad signature" in str(error)
        assert error.seq == 6


def test_forged_signature_in_the_middle_found_by_the_audit(club: Club) -> None:
    events = club.chain(2)
    # seq 3 carries a bad signature, and seq 4 and 5 are chained onto it
    forged_signed = with_bad_signature(club.chain(1, after=Head(2, events[1].id))[0].signed)
    forged = VerifiedEvent(
        canonical.event_id(forged_signed),
        canonical.decode_header(forged_signed),
        forged_signed,
        b'{"text":"note 0"}',
    )
    rest = club.chain(2, after=Head(3, forged.id))
    run = run_of([*events, forged, *rest])
    verified, error = verify_run(club.log(), None, run, club.authorized, every_signature=True)
    assert verified.events() == events
    assert error is not None
    assert "bad signature" in str(error)
    assert error.seq == 3


def test_wrong_log(club: Club) -> None:
    events = club.chain(3)
    public = club.chain(1, audience="public")[0]
    verified, error = verify_run(club.log(), None, run_of([events[0], public]), club.authorized)
    assert verified.events() == events[:1]
    assert error is not None
    assert "another log" in str(error)
    verified, error = verify_run(club.log("public"), None, run_of(events), club.authorized)
    assert verified.events() == []
    assert error is not None


def test_unauthorised_key_in_a_run(club: Club, other_club: Club) -> None:
    events = club.chain(3)
    verified, error = verify_run(club.log(), None, run_of(events), other_club.authorized)
    assert verified.events() == []
    assert error is not None
    assert "not authorised" in str(error)
    assert error.seq == 1


def test_oversize_payload_in_a_run(club: Club) -> None:
    events = club.chain(2)
    big = bytes(MAX_PAYLOAD_BYTES + 1)
    header = Header(
        club.id,
        club.log(),
        3,
        events[1].id,
        0,
        Kind.NOTE,
        canonical.sha256(big),
        len(big),
        club.key.public,
    )
    run = [*run_of(events), (resign(club, header), big)]
    verified, error = verify_run(club.log(), None, run, club.authorized)
    assert verified.events() == events
    assert error is not None
    assert "over the limit" in str(error)
    assert error.seq == 3


def test_truncated_header_in_a_run(club: Club) -> None:
    events = club.chain(2)
    run = [*run_of(events[:1]), (events[1].signed[:HEADER_BYTES], events[1].payload)]
    verified, error = verify_run(club.log(), None, run, club.authorized)
    assert verified.events() == events[:1]
    assert error is not None
    assert "expected 263" in str(error)
