"""The sans-IO client session (protocol.md §6.2, §6.3): its want computation, its
checks, and its one transition table, every pair of which is tried."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.core.events import Head
from federation.errors import LocalProtocolError, RemoteProtocolError
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
from federation.sync.session import (
    LOCAL_INPUTS,
    TRANSITIONS,
    AskFrontier,
    AskWant,
    EndOfStream,
    Input,
    Session,
    State,
    Stored,
    own_logs_behind,
)


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


# --- want computation (protocol.md §6.2) ---------------------------------------------------


def test_new_log_wants_everything_and_its_descriptor() -> None:
    assert want_for(PEER[0]) == Want([WantLog(NEW, 0, 0, True)])


def test_log_known_without_events_wants_everything_and_its_descriptor() -> None:
    assert want_for(PEER[0], {NEW: None}) == Want([WantLog(NEW, 0, 0, True)])


def test_behind_overlaps_by_one() -> None:
    # After seq 4: the peer's event 5 shows continuity with our head (or proves a fork).
    assert want_for(PEER[1]) == Want([WantLog(BEHIND, 4, 0, False)])


def test_same_head_wants_nothing_and_the_round_is_complete() -> None:
    session = started()
    assert session.on_frontier(Frontier(DIGEST, [PEER[2]])) is None
    assert session.state is State.DONE
    session.stored(LOCAL)
    assert session.complete  # so CLOSED


def test_same_seq_other_head_fetches_the_fork_proof() -> None:
    assert want_for(PEER[3]) == Want([WantLog(FORKED, 4, 1, False)])


def test_ahead_wants_nothing() -> None:
    assert want_for(PEER[4]) is None


def test_frozen_log_wants_nothing_and_is_not_behind() -> None:
    session = Session(LOCAL, None, frozen={BEHIND})
    session.frontier_known()
    assert session.on_frontier(Frontier(DIGEST, [PEER[1]])) is None
    assert session.behind(LOCAL) == 0
    session.stored(LOCAL)
    assert session.complete


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


def test_empty_frontier_is_complete() -> None:
    session = started()
    assert session.on_frontier(Frontier(DIGEST, [])) is None
    session.stored(LOCAL)
    assert session.complete


# --- unchanged frontiers (§6.6) --------------------------------------------------------------


def test_unchanged_with_matching_known_is_complete() -> None:
    session = started(known=DIGEST)
    assert session.on_frontier(Frontier(DIGEST, None)) is None
    assert session.state is State.DONE
    session.stored(LOCAL)
    assert session.complete


@pytest.mark.parametrize("known", [None, b"o" * 32])
def test_unchanged_without_that_known_is_refused(known: bytes | None) -> None:
    session = started(known=known)
    with pytest.raises(RemoteProtocolError) as info:
        session.on_frontier(Frontier(DIGEST, None))
    assert info.value.code == "malformed"
    assert session.state is State.AWAIT_FRONTIER


# --- frontier checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "logs",
    [
        [PEER[1], PEER[1]],  # a log twice
        [LogHead(NEW, 0, event_id(0))],  # seq 0 has no head
        [LogHead(NEW, 1, b"short")],
        [PEER[0], LogHead(NEW, 1, b"short")],  # a good entry first changes nothing
    ],
)
def test_bad_frontier_is_refused_and_changes_nothing(logs: list[LogHead]) -> None:
    session = started()
    with pytest.raises(RemoteProtocolError) as info:
        session.on_frontier(Frontier(DIGEST, logs))
    assert info.value.code == "malformed"
    assert (session.state, session.frontier, session.target, session.wanted) == (
        State.AWAIT_FRONTIER,
        None,
        {},
        {},
    )


def test_frontier_with_too_many_logs_is_too_large() -> None:
    logs = [LogHead(i.to_bytes(32, "big"), 1, event_id(1)) for i in range(MAX_FRONTIER_LOGS + 1)]
    with pytest.raises(RemoteProtocolError) as info:
        started().on_frontier(Frontier(DIGEST, logs))
    assert info.value.code == "too_large"


def test_error_instead_of_frontier_carries_the_peers_code() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        started().on_frontier(Error("unknown_club", "who are you"))
    assert info.value.code == "unknown_club"
    assert info.value.message == "peer refused: who are you"


def test_a_session_is_for_one_round() -> None:
    session = started()
    with pytest.raises(LocalProtocolError):
        session.frontier_known()
    session.on_frontier(Frontier(DIGEST, []))
    session.stored(LOCAL)
    with pytest.raises(LocalProtocolError):
        session.frontier_known()


def test_on_frontier_is_for_the_frontier_answer() -> None:
    with pytest.raises(LocalProtocolError):
        Session(LOCAL, None).on_frontier(Frontier(DIGEST, []))


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
    session.end_of_stream()  # after done: as it should be
    assert not session.more
    caught_up = {**LOCAL, NEW: Head(3, event_id(3)), BEHIND: Head(9, event_id(9))}
    session.stored(caught_up)
    assert session.complete


def test_complete_only_when_every_head_shown_is_held() -> None:
    """The peer said done without more, but sent less than its frontier showed."""
    session = streaming()
    session.on_message(Done())
    session.stored({**LOCAL, NEW: Head(3, event_id(3))})
    assert session.state is State.CLOSED
    assert not session.complete
    assert session.behind(session.local) == 4  # BEHIND: 9 - 5


def test_done_with_more_and_progress_asks_again_without_known_or_wait() -> None:
    session = Session(LOCAL, DIGEST, wait_s=25)
    assert (session.frontier_known(), session.wait_s) == (DIGEST, 25)
    session.on_frontier(Frontier(b"n" * 32, PEER))
    session.on_message(Done(more=True))
    assert session.more
    moved = {**LOCAL, NEW: Head(1, event_id(1))}
    session.stored(moved)
    assert session.state is State.START
    assert (session.frontier_known(), session.wait_s) == (None, 0)
    assert session.local == moved
    # The new frontier is compared with the heads we hold now.
    assert session.on_frontier(Frontier(DIGEST, [PEER[0]])) == Want([WantLog(NEW, 0, 0, False)])


def test_done_with_more_and_no_progress_fails() -> None:
    session = streaming()
    session.on_message(Done(more=True))
    with pytest.raises(RemoteProtocolError) as info:
        session.stored(dict(LOCAL))
    assert info.value.code == "no_progress"
    assert "more" in info.value.message
    assert session.state is State.DONE


def test_more_after_an_answer_we_refused_whole_stops_those_logs_once() -> None:
    """An answer all of whose events we refused for good (a blocked club, one at its
    quota) moves no head but stops its log: asked again without it, and counted as
    not held; the same log stopped again is no progress."""
    session = streaming()
    session.on_message(Done(more=True))
    session.stored(dict(LOCAL), frozenset({NEW}))
    assert session.state is State.START
    assert session.frontier_known() is None
    want = session.on_frontier(Frontier(DIGEST, PEER))
    assert want is not None
    assert NEW not in {w.log for w in want.logs}
    assert session.behind(session.local) > 0
    session.on_message(Done(more=True))
    with pytest.raises(RemoteProtocolError) as info:
        session.stored(dict(LOCAL), frozenset({NEW}))
    assert info.value.code == "no_progress"


def test_stream_ending_before_done_is_truncated() -> None:
    session = streaming()
    session.on_message(Batch(NEW, [(b"h1", b"p1")]))
    with pytest.raises(RemoteProtocolError) as info:
        session.end_of_stream()
    assert (info.value.code, info.value.message) == ("truncated", "event stream ended without done")


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (Batch(SAME, [(b"h", b"p")]), "malformed"),  # a log we did not ask for
        (Batch(NEW, []), "malformed"),
        (LogInfo(AHEAD, b"descriptor"), "malformed"),
        (Frontier(DIGEST, PEER), "unexpected"),
        (Want([]), "unexpected"),
    ],
)
def test_stream_refuses(message: Message, code: str) -> None:
    session = streaming()
    with pytest.raises(RemoteProtocolError) as info:
        session.on_message(message)
    assert info.value.code == code
    assert session.state is State.STREAMING


def test_error_in_stream_carries_the_peers_code() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        streaming().on_message(Error("unknown_log", "gone"))
    assert info.value.code == "unknown_log"


def test_nothing_after_done() -> None:
    session = streaming()
    session.on_message(Done())
    with pytest.raises(RemoteProtocolError) as info:
        session.on_message(Done())
    assert info.value.code == "unexpected"


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


# --- the table: every (state, input) either moves as §6.2 says or is refused --------------

# protocol.md §6.2's table, written out again here: (state, input) -> next states.
# Messages not listed are the peer's fault; the shell's inputs not listed, the caller's.
LEGAL: dict[tuple[State, type], set[State]] = {
    (State.START, AskFrontier): {State.AWAIT_FRONTIER},
    (State.AWAIT_FRONTIER, Frontier): {State.AWAIT_FRONTIER, State.STREAMING, State.DONE},
    (State.STREAMING, ClubInfo): {State.STREAMING},
    (State.STREAMING, LogInfo): {State.STREAMING},
    (State.STREAMING, Batch): {State.STREAMING},
    (State.STREAMING, Done): {State.DONE},
    (State.DONE, EndOfStream): {State.DONE},
    (State.DONE, AskWant): {State.STREAMING, State.DONE},
    (State.DONE, Stored): {State.START, State.CLOSED},
}
# Legal moves that a condition of the table may still refuse: a bad frontier, a log
# not asked for or an empty batch, `more` without progress.
CONDITIONAL = {
    (State.AWAIT_FRONTIER, Frontier),
    (State.STREAMING, ClubInfo),
    (State.STREAMING, LogInfo),
    (State.STREAMING, Batch),
    (State.DONE, Stored),
}
# Listed, but always a failure: the peer's refusal, a stream cut short.
FAILING = {
    (State.AWAIT_FRONTIER, Error),
    (State.STREAMING, Error),
    (State.STREAMING, EndOfStream),
}


def test_the_session_table_is_the_documented_one() -> None:
    assert set(TRANSITIONS) == set(LEGAL) | FAILING
    for key, move in TRANSITIONS.items():
        assert move.to == frozenset(LEGAL.get(key, ())), key


logs = st.sampled_from([log_id(i) for i in range(1, 8)])
heads = st.sampled_from([event_id(i) for i in range(4)] + [b"", b"x" * 31])
digests = st.sampled_from([DIGEST, b"o" * 32])
local_heads = st.dictionaries(logs, st.none() | st.builds(Head, st.integers(1, 12), heads))
inputs: st.SearchStrategy[Input] = st.one_of(
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
    st.just(AskFrontier()),
    st.just(EndOfStream()),
    st.just(AskWant()),
    st.builds(Stored, local_heads),
)


def feed(session: Session, event: Input) -> None:
    """The shell's call for each input."""
    if isinstance(event, AskFrontier):
        session.frontier_known()
    elif isinstance(event, EndOfStream):
        session.end_of_stream()
    elif isinstance(event, AskWant):
        session.next_want()
    elif isinstance(event, Stored):
        session.stored(event.heads)
    elif session.state is State.AWAIT_FRONTIER:
        session.on_frontier(event)
    else:
        session.on_message(event)


def step(session: Session, event: Input) -> bool:
    """Feed one input; check it moved as the table says or was refused. True if moved."""
    before = session.state
    key = (before, type(event))
    snapshot = (session.frontier, session.target, session.wanted, session.more, session.local)
    refusal: RemoteProtocolError | LocalProtocolError | None = None
    try:
        feed(session, event)
    except (RemoteProtocolError, LocalProtocolError) as exc:
        refusal = exc
    if refusal is None:
        assert key in LEGAL, f"{type(event).__name__} accepted in {before}"
        assert session.state in LEGAL[key]
        return True
    if isinstance(refusal, LocalProtocolError):
        assert isinstance(event, LOCAL_INPUTS), "the peer's mistake, not the caller's"
        assert key not in LEGAL
        assert key not in FAILING
    elif key in LEGAL:
        assert key in CONDITIONAL, f"{type(event).__name__} refused in {before}: {refusal}"
    elif key in FAILING:
        expected = event.code if isinstance(event, Error) else "truncated"
        assert refusal.code == expected  # a peer's refusal is passed on with its code
    else:
        assert not isinstance(event, LOCAL_INPUTS), "the caller's mistake, not the peer's"
        assert refusal.code == "unexpected"
    assert session.state is before, "a refused input must not move the session"
    state_after = (session.frontier, session.target, session.wanted, session.more, session.local)
    assert state_after == snapshot, "a refused input must not change the session"
    return False


def session_in(state: State, known: bytes | None) -> Session:
    """A session driven into `state` by legal moves only."""
    session = Session(LOCAL, known)
    if state is State.START:
        return session
    session.frontier_known()
    if state is State.STREAMING:
        session.on_frontier(Frontier(DIGEST, PEER))
    elif state in (State.DONE, State.CLOSED):
        session.on_frontier(Frontier(DIGEST, []))
    if state is State.CLOSED:
        session.stored(LOCAL)
    assert session.state is state
    return session


@given(st.sampled_from(list(State)), inputs, st.none() | digests)
def test_any_state_and_input_moves_legally_or_is_refused(
    state: State, event: Input, known: bytes | None
) -> None:
    step(session_in(state, known), event)


@given(st.none() | digests, local_heads, st.lists(inputs, max_size=16))
def test_any_sequence_moves_legally_until_refused(
    known: bytes | None, local: dict[bytes, Head | None], events: list[Input]
) -> None:
    session = Session(local, known)
    for event in events:
        if not step(session, event):
            break


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize(
    "event",
    [
        Frontier(DIGEST, PEER),
        Frontier(DIGEST, None),
        Want([WantLog(NEW, 0)]),
        ClubInfo(b"c" * 32, b"g"),
        LogInfo(NEW, b"d"),
        Batch(NEW, [(b"h", b"p")]),
        Done(),
        Done(more=True),
        Error("busy", "later"),
        AskFrontier(),
        EndOfStream(),
        Stored(LOCAL),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_state_and_input_type(state: State, event: Input) -> None:
    step(session_in(state, DIGEST), event)
