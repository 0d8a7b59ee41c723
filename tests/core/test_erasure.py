"""The erasure payload and its rule (protocol.md §3.5), pure."""

from __future__ import annotations

import pytest

from federation.core.canonical import Kind
from federation.core.payloads import (
    POSTABLE_KINDS,
    erases,
    erasure_target,
    make_payload,
    read_payload,
    summary,
)
from federation.errors import UsageError

ID = bytes(range(32))


def payload(seq: int, event: bytes = ID) -> bytes:
    return make_payload(Kind.ERASURE, {"seq": seq, "event": event.hex()})


def test_an_erasure_names_an_earlier_seq_and_its_id() -> None:
    assert payload(3) == b'{"seq":3,"event":"' + ID.hex().encode() + b'"}'
    assert erasure_target(5, payload(3)) == (3, ID)
    assert read_payload(Kind.ERASURE, payload(3)) == {"seq": 3, "event": ID.hex()}
    assert summary(Kind.ERASURE, payload(3)).startswith("erases #3")


@pytest.mark.parametrize("seq", [5, 6])
def test_an_erasure_of_itself_or_a_later_event_names_nothing(seq: int) -> None:
    assert erasure_target(5, payload(seq)) is None


@pytest.mark.parametrize("raw", [None, b"not json", b'{"seq":1}', b'{"seq":0,"event":"00"}'])
def test_a_missing_or_malformed_erasure_names_nothing(raw: bytes | None) -> None:
    assert erasure_target(5, raw) is None


def test_only_the_named_event_and_never_a_roster_event_or_an_erasure() -> None:
    assert erases(3, ID, Kind.REPORT, (3, ID))
    assert not erases(3, bytes(32), Kind.REPORT, (3, ID)), "another event at that seq"
    assert not erases(3, ID, Kind.ROSTER, (3, ID))
    assert not erases(3, ID, Kind.ERASURE, (3, ID))


def test_erasures_are_not_posted_by_hand() -> None:
    assert Kind.ERASURE not in POSTABLE_KINDS
    with pytest.raises(UsageError):
        make_payload(Kind.ERASURE, {"seq": 1})
