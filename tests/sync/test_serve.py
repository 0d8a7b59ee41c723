"""The serving side of sync, pure (protocol.md §6.1): the frontier and its digest, the
checks on a want, and the events answer's plan as a generator over pages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from random import Random
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.core.events import Head
from federation.errors import LocalProtocolError, RemoteProtocolError
from federation.sync import messages, serve
from federation.sync.messages import (
    MAX_FRONTIER_LOGS,
    Batch,
    ClubInfo,
    Done,
    Frontier,
    LogHead,
    LogInfo,
    Message,
    Want,
    WantLog,
)
from tests.sync.pair import CLUB, GENESIS, Event, ServedLogInfo, Server, chain


def log_id(n: int) -> bytes:
    return bytes([n]) * 32


def event_id(n: int) -> bytes:
    return bytes([0xE0, n]) * 16


NEW, BEHIND, SAME = log_id(1), log_id(2), log_id(3)


# --- the frontier and the want (protocol.md §6.1, §6.6) ------------------------------------

visible_sets = st.dictionaries(
    st.binary(min_size=32, max_size=32),
    st.builds(Head, st.integers(1, 2**40), st.binary(min_size=32, max_size=32)),
    max_size=8,
)


@given(visible_sets, st.randoms(use_true_random=False))
def test_frontier_digest_is_order_independent(visible: dict[bytes, Head], rng: Random) -> None:
    items = list(visible.items())
    digest, heads = serve.frontier(items)
    rng.shuffle(items)
    assert serve.frontier(items) == (digest, heads)
    assert [h.log for h in heads] == sorted(visible)
    assert len(digest) == 32


def test_frontier_digest_is_stable() -> None:
    # The requester sends the digest back as `known`, maybe after our restart: equal
    # heads must give equal digests, however they were built or listed.
    visible = [(NEW, Head(3, event_id(3))), (SAME, Head(5, event_id(5)))]
    digest, heads = serve.frontier(visible)
    assert heads == [LogHead(NEW, 3, event_id(3)), LogHead(SAME, 5, event_id(5))]
    rebuilt = {SAME: Head(5, bytes(event_id(5))), NEW: Head(3, bytes(event_id(3)))}
    assert serve.frontier(rebuilt.items())[0] == digest
    assert serve.frontier(reversed(visible))[0] == digest


@given(visible_sets, visible_sets)
def test_frontier_digest_differs_when_heads_differ(
    a: dict[bytes, Head], b: dict[bytes, Head]
) -> None:
    if a != b:
        assert serve.frontier(a.items())[0] != serve.frontier(b.items())[0]


VISIBLE = {NEW: Head(3, event_id(3)), BEHIND: Head(9, event_id(9))}


def test_plan_returns_the_wanted_logs() -> None:
    want = Want([WantLog(NEW, 0, 0, True), WantLog(BEHIND, 4, 1)])
    assert serve.plan(want, VISIBLE) == want.logs


def test_plan_refuses_an_unknown_or_invisible_log_alike() -> None:
    # SAME exists on the node but is not visible to this requester: same refusal as none.
    with pytest.raises(RemoteProtocolError) as info:
        serve.plan(Want([WantLog(SAME, 0)]), VISIBLE)
    assert info.value.code == "unknown_log"
    assert info.value.http_status == 404


def test_plan_refuses_a_log_twice() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        serve.plan(Want([WantLog(NEW, 0), WantLog(NEW, 1)]), VISIBLE)
    assert info.value.code == "malformed"


@pytest.mark.parametrize("entry", [WantLog(NEW, -1), WantLog(NEW, 0, -1)])
def test_plan_refuses_negatives(entry: WantLog) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        serve.plan(Want([entry]), VISIBLE)
    assert info.value.code == "malformed"


def test_plan_refuses_too_many_logs() -> None:
    want = Want([WantLog(i.to_bytes(32, "big"), 0) for i in range(MAX_FRONTIER_LOGS + 1)])
    with pytest.raises(RemoteProtocolError) as info:
        serve.plan(want, {})
    assert info.value.code == "too_large"


def test_answer_is_unchanged_only_for_the_known_digest() -> None:
    digest, heads = serve.frontier([(NEW, Head(3, event_id(3)))])
    assert serve.answer(digest, heads, digest) == Frontier(digest, None)
    assert serve.answer(digest, heads, b"") == Frontier(digest, heads)
    assert serve.answer(digest, heads, b"o" * 32) == Frontier(digest, heads)


# --- the events answer ------------------------------------------------------------------------


@contextlib.contextmanager
def limits(*, events: int, size: int, response: int) -> Iterator[None]:
    """Small limits, so that every cut is reached by a few events."""
    with (
        mock.patch.object(serve, "BATCH_MAX_EVENTS", events),
        mock.patch.object(serve, "BATCH_MAX_BYTES", size),
        mock.patch.object(serve, "MAX_EVENTS_PER_RESPONSE", response),
    ):
        yield


def answer(server: Server, *entries: WantLog) -> list[Message]:
    return list(server.events(Want(list(entries))))


def one_club_server() -> Server:
    # Both logs are of club C (pair.CLUB): its genesis is sent once an answer.
    return Server({NEW: chain(NEW, 5), BEHIND: chain(BEHIND, 3)})


def test_records_first_where_asked_the_club_once() -> None:
    server = one_club_server()
    sent = answer(server, WantLog(NEW, 0, 0, True), WantLog(BEHIND, 0, 0, True))
    assert sent[:2] == [ClubInfo(CLUB, GENESIS), LogInfo(NEW, b"descriptor " + NEW)]
    assert sent[3] == LogInfo(BEHIND, b"descriptor " + BEHIND)  # no second club
    assert [type(m) for m in sent] == [ClubInfo, LogInfo, Batch, LogInfo, Batch, Done]
    assert sent[-1] == Done(more=False)


def test_events_after_and_within_the_limit_in_seq_order() -> None:
    server = one_club_server()
    sent = answer(server, WantLog(NEW, 1, 3, False))
    assert sent == [Batch(NEW, [(e.signed, e.payload) for e in chain(NEW, 4, start=2)]), Done()]


def test_a_log_with_nothing_after_gets_no_batch() -> None:
    assert answer(one_club_server(), WantLog(NEW, 5, 0, False)) == [Done()]


def test_batches_close_at_the_event_count_and_after_the_byte_limit() -> None:
    server = Server({NEW: chain(NEW, 7)})
    with limits(events=3, size=10**6, response=100):
        sent = answer(server, WantLog(NEW, 0))
    assert [len(m.events) for m in sent if isinstance(m, Batch)] == [3, 3, 1]
    size = len(chain(NEW, 1)[0].signed) + 2  # signed header and payload of one event
    with limits(events=100, size=2 * size + 1, response=100):
        sent = answer(server, WantLog(NEW, 0))
    # A batch closes with the event that reaches the limit: 3 events of 2 * size + 1.
    assert [len(m.events) for m in sent if isinstance(m, Batch)] == [3, 3, 1]


def test_done_with_more_once_the_answer_reaches_its_limit() -> None:
    server = one_club_server()
    with limits(events=2, size=10**6, response=4):
        sent = answer(server, WantLog(NEW, 0), WantLog(BEHIND, 0))
    assert [len(m.events) for m in sent if isinstance(m, Batch)] == [2, 2]
    assert sent[-1] == Done(more=True)
    assert not any(isinstance(m, Batch) and m.log == BEHIND for m in sent)


def test_a_page_request_must_be_answered() -> None:
    stream = serve.stream([WantLog(NEW, 0)], {NEW: ServedLogInfo(NEW, CLUB, b"d")}, {})
    assert next(stream) == serve.PageRequest(NEW, 0, messages.BATCH_MAX_EVENTS)
    with pytest.raises(LocalProtocolError):
        stream.send(None)


def reference_answer(
    plan: list[WantLog],
    logs: dict[bytes, list[Event]],
    *,
    batch_events: int,
    batch_bytes: int,
    response_events: int,
) -> bytes:
    """The answer as web/peer_api._stream wrote it before the plan moved into
    sync/serve.py (commit d6c85a4), over lists: the bytes must not change. One
    deliberate change since: a batch never takes the answer past `response_events`
    (protocol.md §6.1 "it stops there"; clients refuse more), so the last page
    asked for is at most what is left of the answer."""
    out = bytearray()
    sent_clubs: set[bytes] = set()
    total = 0
    for entry in plan:
        if entry.descriptor:
            if CLUB not in sent_clubs:
                sent_clubs.add(CLUB)
                out += messages.frame(ClubInfo(CLUB, GENESIS))
            out += messages.frame(LogInfo(entry.log, b"descriptor " + entry.log))
        after = entry.after
        left = entry.limit or (1 << 62)
        while left > 0 and total < response_events:
            room = response_events - total
            page = logs[entry.log][after : after + min(batch_events, left, room)]
            if not page:
                break
            batch: list[tuple[bytes, bytes | None]] = []
            size = 0
            for raw in page:
                batch.append((raw.signed, raw.payload))
                size += len(raw.signed) + len(raw.payload or b"")
                if size >= batch_bytes:
                    break
            out += messages.frame(Batch(entry.log, batch))
            after = page[len(batch) - 1].seq
            left -= len(batch)
            total += len(batch)
        if total >= response_events:
            out += messages.frame(Done(more=True))
            break
    else:
        out += messages.frame(Done())
    return bytes(out)


LOGS = [log_id(i) for i in range(1, 5)]


@st.composite
def served(draw: st.DrawFn) -> tuple[dict[bytes, list[Event]], list[WantLog]]:
    logs = {
        log: [
            Event(seq, b"h%d" % seq, draw(st.none() | st.binary(max_size=9)))
            for seq in range(1, draw(st.integers(1, 12)) + 1)
        ]
        for log in draw(st.lists(st.sampled_from(LOGS), min_size=1, unique=True))
    }
    plan = [
        WantLog(log, draw(st.integers(0, 13)), draw(st.integers(0, 5)), draw(st.booleans()))
        for log in draw(st.permutations(list(logs)))
    ]
    return logs, plan


@given(served(), st.integers(1, 4), st.integers(1, 30), st.integers(1, 20))
def test_the_answer_is_byte_for_byte_what_it_was(
    case: tuple[dict[bytes, list[Event]], list[WantLog]], events: int, size: int, response: int
) -> None:
    logs, plan = case
    server = Server(logs)
    with limits(events=events, size=size, response=response):
        sent = b"".join(messages.frame(m) for m in server.messages(Want(plan)))
    expected = reference_answer(
        plan, logs, batch_events=events, batch_bytes=size, response_events=response
    )
    assert sent == expected
