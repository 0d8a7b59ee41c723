"""The chain rule for appending a run, decided once for every store (protocol.md §3.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.core.events import Head, VerifiedRun, runs_of
from federation.core.log import held_seq, rest_to_append
from federation.errors import InvalidEventError
from tests.conftest import Club

CLUB = Club.make(b"chain club")
EVENTS = CLUB.chain(6)
OTHER = CLUB.chain(3, after=Head(2, EVENTS[1].id), payloads=[b"x", b"y", b"z"])  # a branch


def run(lo: int, hi: int) -> VerifiedRun:
    """Events lo+1 .. hi (seqs) as one run."""
    [only] = runs_of(EVENTS[lo:hi])
    return only


def head(seq: int) -> Head | None:
    return None if seq == 0 else Head(seq, EVENTS[seq - 1].id)


def test_a_run_that_starts_at_the_head_is_appended_whole() -> None:
    assert rest_to_append(run(0, 3), None, CLUB.id) == run(0, 3)
    assert rest_to_append(run(3, 6), head(3), CLUB.id) == run(3, 6)


def test_a_run_through_the_head_gives_its_tail() -> None:
    rest = rest_to_append(run(0, 5), head(2), CLUB.id)
    assert rest == run(2, 5)
    assert rest is not None
    assert (rest.first, rest.after) == (3, head(2))


def test_a_run_held_already_is_nothing_to_append() -> None:
    assert rest_to_append(run(0, 3), head(3), CLUB.id) is None  # ends at the head
    assert held_seq(run(0, 3), head(3)) is None  # the head decides alone
    # Ends before the head: the store looks up the id it holds at the run's end.
    assert held_seq(run(0, 2), head(5)) == 2
    assert rest_to_append(run(0, 2), head(5), CLUB.id, held=EVENTS[1].id) is None
    with pytest.raises(InvalidEventError, match="head is seq 5"):
        rest_to_append(run(0, 2), head(5), CLUB.id, held=OTHER[0].id)


def test_a_run_that_does_not_extend_the_log_is_refused_with_its_place() -> None:
    with pytest.raises(InvalidEventError, match=r"does not extend the log \(head is seq 0\)"):
        rest_to_append(run(1, 3), None, CLUB.id)  # seq 2 on an empty log
    [branch] = runs_of(OTHER)
    with pytest.raises(InvalidEventError, match="head is seq 4") as info:
        rest_to_append(branch, head(4), CLUB.id)  # another seq 3 and 4, then 5
    assert (info.value.log, info.value.seq) == (CLUB.log(), 3)
    with pytest.raises(InvalidEventError, match="head is seq 1"):
        rest_to_append(run(2, 4), head(1), CLUB.id)  # a gap


def test_a_run_of_another_club_is_refused() -> None:
    with pytest.raises(InvalidEventError, match="another club"):
        rest_to_append(run(0, 2), None, Club.make(b"someone else").id)


def test_an_empty_run_is_nothing_to_append() -> None:
    empty = run(0, 2).without_first(2)
    assert len(empty) == 0
    assert rest_to_append(empty, None, CLUB.id) is None
    assert held_seq(empty, head(4)) is None


@given(lo=st.integers(0, 5), size=st.integers(1, 6), at=st.integers(0, 6))
def test_what_is_appended_always_starts_at_the_head(lo: int, size: int, at: int) -> None:
    """Any run of the log against any head: refused, nothing, or exactly what follows."""
    hi = min(lo + size, len(EVENTS))
    if hi <= lo:
        return
    r = run(lo, hi)
    seq = held_seq(r, head(at))
    held = None if seq is None else EVENTS[seq - 1].id
    try:
        rest = rest_to_append(r, head(at), CLUB.id, held)
    except InvalidEventError:
        assert lo > at  # only a run that starts past the head leaves a gap
        return
    if rest is None:
        assert hi <= at
    else:
        assert (rest.after, rest.head) == (head(at), head(hi))
