"""The sans-IO sync session (protocol.md §6.2, §6.3) and the pure serving side (§6.1)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.core.events import Head
from federation.errors import LocalProtocolError, RemoteProtocolError
from federation.sync import serve
from federation.sync.messages import (
    MAX_FRONTIER_LOGS,
    Batch,
    ClubInfo,
    Done,
    Error,
    Frontier,
    LogHead,
    LogInfo,
    Message,
    Want,
    WantLog,
)
from federation.sync.session import Session, State, own_logs_behind


def log_id(n: int) -> bytes:
    return bytes([n]) * 32


def event_id(n: int) -> bytes:
    return bytes([0xE0, n]) * 16


NEW, BEHIND, SAME, FORKED, AHEAD = (log_id(i) for i in range(1, 6))
DIGEST = b"d" * 32

# What we hold: NEW we have never seen; the others at seq 5.
LOCAL: dict[bytes, Head | None] = {
    BEHIND: Head(5, event_id(5)),
    SAME: Head(5, event_id(5)),
    FORKED: Head(5, event_id(5)),
    AHEAD: Head(5, event_id(5)),
}
# What the peer holds.
PEER = [
    LogHead(NEW, 3, event_id(3)),
    LogHead(BEHIND, 9, event_id(9)),
    LogHead(SAME, 5, event_id(5)),
    LogHead(FORKED, 5, event_id(0x55)),
    LogHead(AHEAD, 2, event_id(2)),
]


def started(local: Mapping[bytes, Head | None] = LOCAL, known: bytes | None = None) -> Session:
    session = Session(local, known)
    assert session.frontier_known() == known
    assert session.state is State.AWAIT_FRONTIER
    return session


def want_for(entry: LogHead, local: Mapping[bytes, Head | None] = LOCAL) -> Want | None:
    return started(local).on_frontier(Frontier(DIGEST, [entry]))


# --- want computation (protocol.md §6.3) ---------------------------------------------------


def test_new_log_wants_everything_and_its_descriptor() -> None:
    assert want_for(PEER[0]) == Want([WantLog(NEW, 0, 0, True)])


def test_log_known_without_events_wants_everything_and_its_descriptor() -> None:
    assert want_for(PEER[0], {NEW: None}) == Want([WantLog(NEW, 0, 0, True)])


def test_behind_overlaps_by_one() -> None:
    # After seq 4: the peer's event 5 shows continuity with our head (or proves a fork).
    assert want_for(PEER[1]) == Want([WantLog(BEHIND, 4, 0, False)])


def test_same_head_wants_nothing() -> None:
    session = started()
    assert session.on_frontier(Frontier(DIGEST, [PEER[2]])) is None
    assert session.state is State.DONE
    assert session.complete


def test_same_seq_other_head_fetches_the_fork_proof() -> None:
    assert want_for(PEER[3]) == Want([WantLog(FORKED, 4, 1, False)])


def test_ahead_wants_nothing() -> None:
    assert want_for(PEER[4]) is None


def test_want_lists_every_log_needing_events_in_frontier_order() -> None:
    session = started()
    want = session.on_frontier(Frontier(DIGEST, PEER))
    assert want == Want(
        [
            WantLog(NEW, 0, 0, True),
            WantLog(BEHIND, 4, 0, False),
            WantLog(FORKED, 4, 1, False),
        ]
    )
    assert session.state is State.STREAMING
    assert set(session.wanted) == {NEW, BEHIND, FORKED}
    assert session.frontier == Frontier(DIGEST, PEER)


def test_empty_frontier_is_done() -> None:
    session = started()
    assert session.on_frontier(Frontier(DIGEST, [])) is None
    assert session.complete


# --- unchanged frontiers -------------------------------------------------------------------


def test_unchanged_with_matching_known_is_done() -> None:
    session = started(known=DIGEST)
    assert session.on_frontier(Frontier(DIGEST, None)) is None
    assert session.state is State.DONE
    assert session.complete


@pytest.mark.parametrize("known", [None, b"o" * 32])
def test_unchanged_without_that_known_is_refused(known: bytes | None) -> None:
    session = started(known=known)
    with pytest.raises(RemoteProtocolError):
        session.on_frontier(Frontier(DIGEST, None))
    assert session.state is State.AWAIT_FRONTIER


# --- frontier checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "logs",
    [
        [PEER[1], PEER[1]],  # a log twice
        [LogHead(NEW, 0, event_id(0))],  # seq 0 has no head
        [LogHead(NEW, 1, b"short")],
    ],
)
def test_bad_frontier_is_refused(logs: list[LogHead]) -> None:
    session = started()
    with pytest.raises(RemoteProtocolError):
        session.on_frontier(Frontier(DIGEST, logs))


def test_frontier_with_too_many_logs_is_too_large() -> None:
    logs = [LogHead(i.to_bytes(32, "big"), 1, event_id(1)) for i in range(MAX_FRONTIER_LOGS + 1)]
    with pytest.raises(RemoteProtocolError) as info:
        started().on_frontier(Frontier(DIGEST, logs))
    assert info.value.code == "too_large"


def test_error_instead_of_frontier_carries_the_peers_code() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        started().on_frontier(Error("unknown_club", "who are you"))
    assert info.value.code == "unknown_club"


def test_a_session_is_for_one_round() -> None:
    session = started()
    with pytest.raises(LocalProtocolError):
        session.frontier_known()


# --- the event stream ----------------------------------------------------------------------


def streaming() -> Session:
    session = started()
    assert session.on_frontier(Frontier(DIGEST, PEER)) is not None
    return session


def test_stream_of_wanted_logs_then_done() -> None:
    session = streaming()
    stream: list[Message] = [
        ClubInfo(b"c" * 32, b"genesis"),
        LogInfo(NEW, b"descriptor"),
        Batch(NEW, [(b"h1", b"p1"), (b"h2", None)]),
        Batch(BEHIND, [(b"h5", b"p5")]),
        Done(),
    ]
    for message in stream:
        assert session.on_message(message) is message
    assert session.state is State.DONE
    assert session.complete
    assert not session.more


def test_done_with_more_is_not_complete() -> None:
    session = streaming()
    session.on_message(Done(more=True))
    assert session.state is State.DONE
    assert session.more
    assert not session.complete


@pytest.mark.parametrize(
    "message",
    [
        Batch(SAME, [(b"h", b"p")]),  # a log we did not ask for
        Batch(NEW, []),
        LogInfo(AHEAD, b"descriptor"),
        Frontier(DIGEST, PEER),
        Want([]),
    ],
)
def test_stream_refuses(message: Message) -> None:
    session = streaming()
    with pytest.raises(RemoteProtocolError):
        session.on_message(message)
    assert session.state is State.STREAMING


def test_error_in_stream_carries_the_peers_code() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        streaming().on_message(Error("unknown_log", "gone"))
    assert info.value.code == "unknown_log"


def test_nothing_after_done() -> None:
    session = streaming()
    session.on_message(Done())
    with pytest.raises(RemoteProtocolError):
        session.on_message(Done())


# --- behind() ------------------------------------------------------------------------------


def test_behind_counts_what_the_frontier_holds_beyond_local() -> None:
    session = started()
    session.on_frontier(Frontier(DIGEST, PEER))
    # NEW: 3 events, BEHIND: 9 - 5; SAME, FORKED, AHEAD: none.
    assert session.behind(LOCAL) == 3 + 4
    caught_up = {**LOCAL, NEW: Head(3, event_id(3)), BEHIND: Head(8, event_id(8))}
    assert session.behind(caught_up) == 1


def test_behind_is_zero_before_a_frontier() -> None:
    assert started().behind({}) == 0


# --- property: every (state, message) either moves legally or is refused --------------------

Feed = Callable[[Session, Message], object]
FEEDS: dict[str, Feed] = {"frontier": Session.on_frontier, "message": Session.on_message}

# The legal moves (protocol.md §6.2): (state, entry point, message type) -> next states.
LEGAL: dict[tuple[State, str, type], set[State]] = {
    (State.AWAIT_FRONTIER, "frontier", Frontier): {State.STREAMING, State.DONE},
    (State.STREAMING, "message", ClubInfo): {State.STREAMING},
    (State.STREAMING, "message", LogInfo): {State.STREAMING},
    (State.STREAMING, "message", Batch): {State.STREAMING},
    (State.STREAMING, "message", Done): {State.DONE},
}

# Where the shell feeds what arrives: an Error there is the peer refusing the round.
EXPECTING = {(State.AWAIT_FRONTIER, "frontier"), (State.STREAMING, "message")}

logs = st.sampled_from([log_id(i) for i in range(1, 8)])
heads = st.sampled_from([event_id(i) for i in range(4)] + [b"", b"x" * 31])
digests = st.sampled_from([DIGEST, b"o" * 32])
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Frontier,
        digest=digests,
        logs=st.none() | st.lists(st.builds(LogHead, logs, st.integers(-1, 12), heads), max_size=6),
    ),
    st.builds(Want, st.lists(st.builds(WantLog, logs, st.integers(0, 9)), max_size=3)),
    st.builds(ClubInfo, st.binary(max_size=32), st.binary(max_size=8)),
    st.builds(LogInfo, logs, st.binary(max_size=8)),
    st.builds(Batch, logs, st.lists(st.tuples(st.binary(max_size=4), st.none()), max_size=3)),
    st.builds(Done, st.booleans()),
    st.builds(Error, st.sampled_from(["unknown_log", "busy"]), st.text(max_size=8)),
)


def session_in(state: State, known: bytes | None) -> Session:
    """A session driven into `state` by legal moves only."""
    session = Session(LOCAL, known)
    if state is State.START:
        return session
    session.frontier_known()
    if state is State.STREAMING:
        session.on_frontier(Frontier(DIGEST, PEER))
    elif state is State.DONE:
        session.on_frontier(Frontier(DIGEST, []))
    assert session.state is state
    return session


def step(session: Session, feed: str, message: Message) -> bool:
    """Feed one message; check the move was legal or refused. True if it moved."""
    before = session.state
    legal = LEGAL.get((before, feed, type(message)))
    try:
        FEEDS[feed](session, message)
    except RemoteProtocolError as exc:
        refusal: RemoteProtocolError | None = exc
    else:
        refusal = None
    if refusal is not None:
        assert session.state is before, "a refused message must not move the session"
        if isinstance(message, Error) and (before, feed) in EXPECTING:
            assert refusal.code == message.code  # the peer's refusal, passed on
        return False
    assert legal is not None, f"{type(message).__name__} accepted via {feed} in {before}"
    assert session.state in legal
    return True


@given(
    st.sampled_from(list(State)),
    st.sampled_from(sorted(FEEDS)),
    messages,
    st.none() | digests,
)
def test_any_state_and_message_moves_legally_or_is_refused(
    state: State, feed: str, message: Message, known: bytes | None
) -> None:
    step(session_in(state, known), feed, message)


@given(
    st.none() | digests,
    st.lists(st.tuples(st.sampled_from(sorted(FEEDS)), messages), max_size=12),
)
def test_any_sequence_moves_legally_until_refused(
    known: bytes | None, inputs: list[tuple[str, Message]]
) -> None:
    session = session_in(State.AWAIT_FRONTIER, known)
    for feed, message in inputs:
        if not step(session, feed, message):
            break


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("feed", sorted(FEEDS))
@pytest.mark.parametrize(
    "message",
    [
        Frontier(DIGEST, PEER),
        Frontier(DIGEST, None),
        Want([WantLog(NEW, 0)]),
        ClubInfo(b"c" * 32, b"g"),
        LogInfo(NEW, b"d"),
        Batch(NEW, [(b"h", b"p")]),
        Done(),
        Error("busy", "later"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_state_and_message_type(state: State, feed: str, message: Message) -> None:
    step(session_in(state, DIGEST), feed, message)


# --- serving (protocol.md §6.1) --------------------------------------------------------------

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


def test_own_logs_behind_names_only_our_logs_the_peer_is_ahead_on() -> None:
    ours = {log_id(1): Head(3, event_id(3)), log_id(2): None, log_id(3): Head(5, event_id(5))}
    frontier = [
        LogHead(log_id(1), 4, event_id(4)),  # ahead of our head: we were restored
        LogHead(log_id(2), 2, event_id(2)),  # ahead of an empty log
        LogHead(log_id(3), 5, event_id(5)),  # level: nothing to guard
        LogHead(log_id(4), 9, event_id(9)),  # not ours to guard (another club's, or private)
    ]
    assert own_logs_behind(frontier, ours) == {log_id(1): 4, log_id(2): 2}
    assert own_logs_behind([], ours) == {}
