"""Protocol behaviour of a whole round, on a session pair pumped in memory (h11's
idea; tests/sync/pair.py): the client Session against the serving side's pure plan,
joined by the wire encoding and framing (protocol.md §6.2, §6.3)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.errors import RemoteProtocolError
from federation.sync import serve
from federation.sync import session as session_module
from federation.sync.messages import Batch, Done, Frontier, Message, Want, WantLog
from federation.sync.session import State
from tests.sync.pair import Client, Server, chain, frontier_of, run_round, wire

A, B, C = (bytes([n]) * 32 for n in (1, 2, 3))


@contextlib.contextmanager
def small_answers(events: int, *, batch: int = 2) -> Iterator[None]:
    """Answers that stop at `events` events with Done(more=True); the client holds
    the server to the same limits (a bench run once found them apart)."""
    with (
        mock.patch.object(serve, "MAX_EVENTS_PER_RESPONSE", events),
        mock.patch.object(serve, "BATCH_MAX_EVENTS", batch),
        mock.patch.object(session_module, "MAX_EVENTS_PER_RESPONSE", events),
        mock.patch.object(session_module, "BATCH_MAX_EVENTS", batch),
    ):
        yield


def held(server: Server) -> dict[bytes, list[bytes]]:
    return {log: [e.signed for e in events] for log, events in server.logs.items()}


def test_a_fresh_client_takes_everything_and_is_complete() -> None:
    server = Server({A: chain(A, 5), B: chain(B, 2)})
    client = Client()
    session = run_round(client, server)
    assert session.complete
    assert client.logs == held(server)
    assert server.wants == [Want([WantLog(A, 0, 0, True), WantLog(B, 0, 0, True)])]
    assert session.frontier == frontier_of(server)


def test_the_next_round_with_known_is_unchanged_and_asks_nothing() -> None:
    server = Server({A: chain(A, 5)})
    client = Client()
    first = run_round(client, server)
    assert first.frontier is not None
    second = run_round(client, server, known=first.frontier.digest)
    assert second.complete
    assert second.frontier == Frontier(first.frontier.digest, None)
    assert len(server.wants) == 1


def test_a_client_behind_fetches_from_its_head_overlapping_by_one() -> None:
    server = Server({A: chain(A, 9)})
    client = Client({A: [e.signed for e in chain(A, 5)]})
    assert run_round(client, server).complete
    assert server.wants == [Want([WantLog(A, 4, 0, False)])]
    assert client.logs == held(server)


def test_more_asks_again_in_the_same_round_until_complete() -> None:
    server = Server({A: chain(A, 7), B: chain(B, 4)})
    client = Client()
    with small_answers(4):
        session = run_round(client, server)
    assert session.complete
    assert client.logs == held(server)
    # A's first 4; A's 4 to 7 (overlapping by one); B's 4; then a frontier wanting nothing.
    assert server.wants == [
        Want([WantLog(A, 0, 0, True), WantLog(B, 0, 0, True)]),
        Want([WantLog(A, 3, 0, False), WantLog(B, 0, 0, True)]),
        Want([WantLog(B, 0, 0, True)]),
    ]


def test_more_without_progress_fails_the_round() -> None:
    server = Server({A: chain(A, 3)})
    client = Client()

    def stingy(want: Message) -> Iterator[Message]:
        yield wire(Done(more=True))

    with pytest.raises(RemoteProtocolError) as refused:
        run_round(client, server, events=stingy)
    assert refused.value.code == "no_progress"
    assert client.logs == {}


def test_more_with_progress_then_none_fails_the_round_after_keeping_it() -> None:
    server = Server({A: chain(A, 3)})
    client = Client()
    answers = iter([[Batch(A, [(e.signed, e.payload) for e in chain(A, 2)])], []])

    def then_stingy(want: Message) -> Iterator[Message]:
        for message in next(answers):
            yield wire(message)
        yield wire(Done(more=True))

    with pytest.raises(RemoteProtocolError) as refused:
        run_round(client, server, events=then_stingy)
    assert refused.value.code == "no_progress"
    assert client.logs == {A: [e.signed for e in chain(A, 2)]}  # the progress is kept


def test_a_stream_ending_without_done_is_truncated() -> None:
    server = Server({A: chain(A, 3)})
    client = Client()

    def cut(want: Message) -> Iterator[Message]:
        for message in server.events(want):
            if not isinstance(message, Done):
                yield message

    with pytest.raises(RemoteProtocolError) as refused:
        run_round(client, server, events=cut)
    assert (refused.value.code, refused.value.message) == (
        "truncated",
        "event stream ended without done",
    )
    assert client.logs == held(server)  # what arrived was taken


def test_a_frontier_promising_more_than_is_sent_is_not_complete() -> None:
    """Done without more, but the frontier showed seq 9 and 4 came: the round ends,
    incomplete, so the client keeps no digest and asks again next time (§6.2)."""
    promised = Server({A: chain(A, 9)}).frontier(None)
    server = Server({A: chain(A, 4)})
    client = Client()
    session = run_round(client, server, frontier=lambda known: promised)
    assert session.state is State.CLOSED
    assert not session.complete
    assert session.behind(session.local) == 5
    assert client.logs == held(server)


def test_a_forked_log_fails_the_round_then_is_frozen_and_left_alone() -> None:
    server = Server({A: chain(A, 6), B: chain(B, 2)})
    client = Client({A: [e.signed for e in chain(A, 4, fork=b"!")]})
    with pytest.raises(RemoteProtocolError) as refused:
        run_round(client, server)
    assert refused.value.code == "fork"  # the pair's stand-in for ingest's ForkError
    assert client.frozen == {A}
    session = run_round(client, server)
    assert session.complete  # a fork freezes its log, not the sync (§3.6)
    assert client.logs[B] == held(server)[B]
    assert server.wants[-1] == Want([WantLog(B, 0, 0, True)])


@given(
    st.dictionaries(st.sampled_from([A, B, C]), st.integers(1, 30), min_size=1),
    st.dictionaries(st.sampled_from([A, B, C]), st.integers(0, 30)),
    st.integers(2, 12),  # an answer of one event is the overlap alone: no progress, ever
    st.integers(1, 5),
)
def test_any_start_catches_up_in_one_round_whatever_the_limits(
    served: dict[bytes, int], holding: dict[bytes, int], per_answer: int, per_batch: int
) -> None:
    server = Server({log: chain(log, n) for log, n in served.items()})
    client = Client({log: [e.signed for e in chain(log, n)] for log, n in holding.items()})
    with small_answers(per_answer, batch=per_batch):
        session = run_round(client, server)
    assert session.complete
    for log, n in served.items():
        assert len(client.logs[log]) >= n
        assert client.logs[log][:n] == held(server)[log]


# --- pages and hidden logs (protocol.md §6.1, §6.2) --------------------------------------


@contextlib.contextmanager
def small_pages(logs: int) -> Iterator[None]:
    """Frontier pages and wants of at most `logs` logs."""
    with (
        mock.patch.object(serve, "MAX_FRONTIER_LOGS", logs),
        mock.patch.object(session_module, "MAX_FRONTIER_LOGS", logs),
    ):
        yield


def test_a_frontier_over_a_page_pages_and_the_want_splits() -> None:
    logs = [bytes([n]) * 32 for n in range(1, 8)]
    server = Server({log: chain(log, 2) for log in logs})
    client = Client()
    with small_pages(3):
        session = run_round(client, server)
    assert session.complete
    assert (session.pages, session.listed) == (3, 7)
    assert [len(w.logs) for w in server.wants] == [3, 3, 1]
    assert held(server) == client.logs
    # Every page carries the whole view's digest: `known` then works in one request.
    with small_pages(3):
        again = run_round(client, server, session.digest)
    assert again.complete
    assert again.pages == 0  # unchanged: no page listed


def test_a_hidden_log_is_wanted_as_an_unknown_one() -> None:
    """A log the client holds but this peer may not receive from it: the want and
    `complete` are those of a client that does not hold it (DESIGN principle 17)."""
    server = Server({A: chain(A, 2), B: chain(B, 3)})
    holding, fresh = Client({A: [e.signed for e in chain(A, 5)]}), Client()
    run_round(holding, server, hidden=frozenset({A}))
    run_round(fresh, server)
    assert server.wants[0] == server.wants[1]
    assert server.wants[0].logs[0] == WantLog(A, 0, 0, True)
    # (`complete` counts a hidden log as far as the seqs of the peer's batches reach;
    # this pair's stand-in headers carry none: tests/attacks/test_wants.py has it.)
    # The control: not hidden, the want shows the client's head (and wants nothing).
    shown = run_round(Client({A: [e.signed for e in chain(A, 1)]}), server)
    assert server.wants[-1].logs[0] == WantLog(A, 0, 0, False)
    assert shown.complete
