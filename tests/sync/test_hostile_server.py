"""Hostile peers, part A (DESIGN principles 13 and 14; protocol.md §4, §5.2, §6).

Every refusal here carries a named error (a RemoteProtocolError code or an
InvalidEventError reason), leaves the honest node's store as it was (a valid prefix
may be kept), and the honest node goes on serving and syncing afterwards.

An honest node syncs with a hostile *server* (tests/sync/hostile.py) it added from an
invite, and is sent forged events, broken frames, messages out of place. Part B, hostile
clients, is in test_hostile_client.py.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from federation.cli.peering import cmd_sync
from federation.core import canonical
from federation.core.canonical import Kind
from federation.core.crypto import certificate_fingerprint
from federation.core.events import Head, sign_event
from federation.errors import (
    ForkError,
    InvalidEventError,
    PeerUnavailableError,
    RemoteProtocolError,
)
from federation.node import peering
from federation.sync import messages
from federation.sync.messages import (
    FRAME_HEADER,
    MAX_FRAME_BYTES,
    MAX_FRONTIER_LOGS,
    MAX_MESSAGE_BYTES,
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
from tests.conftest import BASE_TIME_US, Club
from tests.harness import Federation
from tests.sync.hostile import (
    Answer,
    HostilePeer,
    frontier_answer,
    message_answer,
    open_hostile,
    stream_answer,
)
from tests.sync.hostile_support import (
    Pairs,
    bounded,
    forks,
    held,
    pairs,
    rows,
    still_serving,
    sync,
)

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        yield fed


@pytest.fixture
async def hostile(fed: Federation) -> AsyncIterator[HostilePeer]:
    """Mallory's server, added by a as a peer from its invite like any club."""
    async with open_hostile(Club.make(b"mallory"), "Mallory") as peer:
        await peering.add(fed["a"].node, peer.invite())
        await fed["a"].service.rt.refresh()
        yield peer


def offer(peer: HostilePeer, run: Pairs, *, audience: str = "federation") -> bytes:
    """Script `peer` to list one of its logs with the run's last event as head, and to
    stream the club, the descriptor and the run when asked. Returns the log id."""
    club = peer.club
    log = club.log(audience)
    last = run[-1][0]
    head = LogHead(log, canonical.decode_header(last).seq, canonical.event_id(last))
    peer.frontier = frontier_answer([head])
    peer.events = stream_answer(
        ClubInfo(club.id, club.genesis), LogInfo(log, club.descriptors[audience]), Batch(log, run)
    )
    return log


def forge(signed: bytes) -> bytes:
    """The same header with one bit of its signature flipped."""
    return signed[:-1] + bytes([signed[-1] ^ 1])


async def test_an_honest_run_from_the_hostile_server_is_taken(
    fed: Federation, hostile: HostilePeer
) -> None:
    """The control: the scripted server speaks the protocol well enough to sync."""
    events = hostile.club.chain(3)
    before = await held(fed["a"])
    log = offer(hostile, pairs(events))
    result = await sync(fed["a"], hostile.club.id)
    assert (result.added, result.complete) == (3, True)
    assert hostile.wants == [Want([WantLog(log, 0, 0, True)])]
    assert await held(fed["a"]) == {**before, log: rows(events)}


@pytest.mark.parametrize("bad", [0, 1, 2])
async def test_forged_signature_keeps_only_the_prefix_before_it(
    fed: Federation, hostile: HostilePeer, bad: int
) -> None:
    events = hostile.club.chain(3)
    run = pairs(events)
    run[bad] = (forge(run[bad][0]), run[bad][1])
    before = await held(fed["a"])
    log = offer(hostile, run)
    with pytest.raises(InvalidEventError) as refused:
        await sync(fed["a"], hostile.club.id)
    assert refused.value.reason.startswith("bad signature")
    assert (refused.value.log, refused.value.seq) == (log, bad + 1)
    expected = {**before, log: rows(events[:bad])} if bad else before
    assert await held(fed["a"]) == expected
    await still_serving(fed)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"text":"note X"}', "payload does not match the hash"),  # same size
        (b'{"text":"a longer note"}', "payload is 24 bytes but the header says 17"),
    ],
)
async def test_altered_payload_is_refused(
    fed: Federation, hostile: HostilePeer, payload: bytes, reason: str
) -> None:
    events = hostile.club.chain(3)
    run = pairs(events)
    run[1] = (run[1][0], payload)
    before = await held(fed["a"])
    log = offer(hostile, run)
    with pytest.raises(InvalidEventError) as refused:
        await sync(fed["a"], hostile.club.id)
    assert refused.value.reason.startswith(reason)
    assert refused.value.seq == 2
    assert await held(fed["a"]) == {**before, log: rows(events[:1])}
    await still_serving(fed)


async def test_seq_gap_is_refused(fed: Federation, hostile: HostilePeer) -> None:
    events = hostile.club.chain(4)
    before = await held(fed["a"])
    log = offer(hostile, pairs([*events[:2], events[3]]))
    with pytest.raises(InvalidEventError) as refused:
        await sync(fed["a"], hostile.club.id)
    assert refused.value.reason == "seq gap: expected seq 3, got 4"
    assert await held(fed["a"]) == {**before, log: rows(events[:2])}
    await still_serving(fed)


async def test_broken_prev_link_is_refused(fed: Federation, hostile: HostilePeer) -> None:
    club = hostile.club
    first = club.chain(1)
    # Validly signed by the club, but following an event that does not exist.
    elsewhere = club.chain(1, after=Head(1, canonical.sha256(b"no such event")))
    before = await held(fed["a"])
    log = offer(hostile, pairs([*first, *elsewhere]))
    with pytest.raises(InvalidEventError) as refused:
        await sync(fed["a"], club.id)
    assert refused.value.reason.startswith("previous-hash link broken")
    assert refused.value.seq == 2
    assert await held(fed["a"]) == {**before, log: rows(first)}
    await still_serving(fed)


async def test_fork_is_kept_as_evidence_and_freezes_the_log(
    fed: Federation, hostile: HostilePeer
) -> None:
    club = hostile.club
    events = club.chain(3)
    log = offer(hostile, pairs(events))
    await sync(fed["a"], club.id)
    before = await held(fed["a"])
    # Another validly signed event at seq 3: the club's key equivocated.
    other = club.chain(1, after=Head(2, events[1].id), payloads=[b'{"text":"other"}'])[0]
    offer(hostile, pairs([other]))
    with pytest.raises(ForkError) as refused:
        await sync(fed["a"], club.id)
    assert refused.value.reason.startswith("fork:")
    assert hostile.wants[-1] == Want([WantLog(log, 2, 1, False)])  # asked for the proof
    assert await held(fed["a"]) == before
    [fork] = await forks(fed["a"])
    assert (fork.log, fork.seq, fork.ours, fork.theirs) == (log, 3, events[2].signed, other.signed)
    record = await fed["a"].node.store.log(log)
    assert record is not None
    assert record.frozen
    # The frozen log takes nothing more, even honest-looking events on our branch; it
    # is not even asked for, so the round completes and other logs keep syncing.
    wants = len(hostile.wants)
    offer(hostile, pairs([*events, *club.chain(1, after=Head(3, events[2].id))]))
    result = await sync(fed["a"], club.id)
    assert result.complete
    assert result.added == 0
    assert all(w.log != log for want in hostile.wants[wants:] for w in want.logs)
    assert await held(fed["a"]) == before
    await still_serving(fed)


async def test_events_of_another_club_inside_its_log_are_refused(
    fed: Federation, hostile: HostilePeer
) -> None:
    """Mallory signs a seq 2 into b's public log (protocol.md §4.3): refused, and b's
    own seq 2 arrives later without any fork."""
    a, b = fed["a"], fed["b"]
    first = await b.post(Kind.NOTE, {"text": "b's first public note"}, "public")
    await sync(a, b.club)
    before = await held(a)
    b_public = first.header.log
    mallory = hostile.club
    planted = sign_event(
        mallory.key,
        club=mallory.id,
        log=b_public,
        head=Head(1, first.id),
        time_us=BASE_TIME_US,
        kind=Kind.NOTE,
        payload=b'{"text":"b said this (no)"}',
    )
    hostile.frontier = frontier_answer([LogHead(b_public, 2, planted.id)])
    hostile.events = stream_answer(Batch(b_public, pairs([first, planted])))
    with pytest.raises(InvalidEventError) as refused:
        await sync(a, mallory.id)
    assert refused.value.reason == "event is signed for another club than its log's"
    assert (refused.value.club, refused.value.log, refused.value.seq) == (mallory.id, b_public, 2)
    assert await held(a) == before
    second = await b.post(Kind.NOTE, {"text": "b's real second note"}, "public")
    await sync(a, b.club)
    assert second.payload in await a.payloads()
    assert await forks(a) == []
    await still_serving(fed)


async def test_another_clubs_event_relayed_inside_a_log_is_refused(
    fed: Federation, hostile: HostilePeer
) -> None:
    """A real event of b, sent as seq 1 of Mallory's log."""
    a, b = fed["a"], fed["b"]
    real = await b.post(Kind.NOTE, {"text": "b's public note"}, "public")
    before = await held(a)
    offer(hostile, pairs([real]), audience="public")
    with pytest.raises(InvalidEventError) as refused:
        await sync(a, hostile.club.id)
    assert refused.value.reason == "event belongs to another log"
    assert await held(a) == before
    await still_serving(fed)


async def test_private_log_descriptor_is_refused(fed: Federation, hostile: HostilePeer) -> None:
    events = hostile.club.chain(1, audience="private")
    before = await held(fed["a"])
    log = offer(hostile, pairs(events), audience="private")
    with pytest.raises(InvalidEventError) as refused:
        await sync(fed["a"], hostile.club.id)
    assert refused.value.reason == "a private log never leaves its node"
    assert await fed["a"].node.store.log(log) is None
    assert await held(fed["a"]) == before
    await still_serving(fed)


async def test_log_descriptor_not_matching_its_id_is_refused(
    fed: Federation, hostile: HostilePeer
) -> None:
    club = hostile.club
    events = club.chain(1)
    before = await held(fed["a"])
    log = offer(hostile, pairs(events))
    hostile.events = stream_answer(LogInfo(log, club.descriptors["public"]))
    with pytest.raises(InvalidEventError) as refused:
        await sync(fed["a"], club.id)
    assert refused.value.reason == "log id is not the hash of its descriptor"
    assert await fed["a"].node.store.log(log) is None
    assert await held(fed["a"]) == before
    await still_serving(fed)


def stream_after_two_good(hostile: HostilePeer, *tail: Message | bytes, done: bool) -> bytes:
    """Script a stream of two valid events of Mallory's log, then `tail`."""
    club = hostile.club
    events = club.chain(3)
    log = offer(hostile, pairs(events))
    hostile.events = stream_answer(
        LogInfo(log, club.descriptors["federation"]),
        Batch(log, pairs(events[:2])),
        *tail,
        done=done,
    )
    return log


async def expect_refusal(
    fed: Federation, hostile: HostilePeer, code: str, *, kept: int = 2
) -> RemoteProtocolError:
    """The round fails with `code`; of Mallory's log only the first `kept` are stored."""
    a = fed["a"]
    before = await held(a)
    events = hostile.club.chain(3)
    with pytest.raises(RemoteProtocolError) as refused:
        await sync(a, hostile.club.id)
    assert refused.value.code == code, refused.value
    expected = {**before, hostile.club.log(): rows(events[:kept])} if kept else before
    assert await held(a) == expected
    await still_serving(fed)
    return refused.value


async def test_frame_over_the_limit_is_refused_before_it_is_read(
    fed: Federation, hostile: HostilePeer
) -> None:
    # The length alone says too much: the body is never sent, nor waited for.
    stream_after_two_good(hostile, FRAME_HEADER.pack(MAX_FRAME_BYTES + 1) + bytes(64), done=False)
    await expect_refusal(fed, hostile, "too_large")


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # never valid msgpack
        b"\x92\x01",  # an array cut short
        msgspec.msgpack.encode({"t": "nonsense"}),  # msgpack, but no message
        msgspec.msgpack.encode({"t": "batch", "log": "not bytes", "events": []}),
    ],
)
async def test_malformed_frame_is_refused(
    fed: Federation, hostile: HostilePeer, body: bytes
) -> None:
    stream_after_two_good(hostile, FRAME_HEADER.pack(len(body)) + body, done=True)
    error = await expect_refusal(fed, hostile, "malformed")
    assert "message" in error.message


@pytest.mark.parametrize(
    "intruder",
    [
        Frontier(bytes(32), []),
        Want([]),
    ],
)
async def test_unexpected_message_in_the_stream_is_refused(
    fed: Federation, hostile: HostilePeer, intruder: Message
) -> None:
    stream_after_two_good(hostile, intruder, done=True)
    await expect_refusal(fed, hostile, "unexpected")


async def test_events_of_a_log_not_asked_for_are_refused(
    fed: Federation, hostile: HostilePeer
) -> None:
    other = hostile.club.chain(1, audience="public")
    stream_after_two_good(hostile, Batch(hostile.club.log("public"), pairs(other)), done=True)
    error = await expect_refusal(fed, hostile, "malformed")
    assert error.message == "peer sent events of a log we did not ask for"


@pytest.mark.parametrize(
    "answer",
    [
        message_answer(Done()),
        message_answer(Batch(bytes(32), [])),
        message_answer(Want([])),
    ],
)
async def test_frontier_answer_of_another_type_is_refused(
    fed: Federation, hostile: HostilePeer, answer: Answer
) -> None:
    hostile.frontier = answer
    await expect_refusal(fed, hostile, "unexpected", kept=0)
    assert hostile.wants == []


@pytest.mark.parametrize(
    "logs",
    [
        [LogHead(bytes(32), 0, bytes(32))],  # seq 0 is no head
        [LogHead(bytes(32), 1, bytes(31))],  # a head is 32 bytes
        [LogHead(bytes(32), 1, bytes(32)), LogHead(bytes(32), 2, bytes(32))],  # twice
        None,  # "unchanged", when we never had one
    ],
)
async def test_malformed_frontier_is_refused(
    fed: Federation, hostile: HostilePeer, logs: list[LogHead] | None
) -> None:
    hostile.frontier = message_answer(Frontier(bytes(32), logs))
    await expect_refusal(fed, hostile, "malformed", kept=0)
    assert hostile.wants == []


async def test_stream_ending_inside_a_frame_is_refused(
    fed: Federation, hostile: HostilePeer
) -> None:
    third = hostile.club.chain(3)[2]
    half = messages.frame(Batch(hostile.club.log(), pairs([third])))[:-40]
    stream_after_two_good(hostile, half, done=False)
    await expect_refusal(fed, hostile, "truncated")


async def test_stream_cut_inside_a_frame_is_unavailable(
    fed: Federation, hostile: HostilePeer
) -> None:
    """A connection dropped mid-answer looks like a network failure, which it may be:
    the peer is unavailable for this round; the complete batches before it are kept."""
    third = hostile.club.chain(3)[2]
    half = messages.frame(Batch(hostile.club.log(), pairs([third])))[:-40]
    stream_after_two_good(hostile, half, done=False)
    hostile.events.cut = True
    a = fed["a"]
    before = await held(a)
    with pytest.raises(PeerUnavailableError) as refused:
        await sync(a, hostile.club.id)
    assert "unreachable" in refused.value.message
    assert await held(a) == {**before, hostile.club.log(): rows(hostile.club.chain(2))}
    await still_serving(fed)


async def test_stream_without_done_is_refused(fed: Federation, hostile: HostilePeer) -> None:
    stream_after_two_good(hostile, done=False)
    error = await expect_refusal(fed, hostile, "truncated")
    assert error.message == "event stream ended without done"


async def test_error_frame_is_a_named_refusal(fed: Federation, hostile: HostilePeer) -> None:
    stream_after_two_good(hostile, Error("busy", "too many syncs at once"), done=False)
    error = await expect_refusal(fed, hostile, "busy")
    assert error.message == "peer refused: too many syncs at once"


async def test_error_answer_to_a_frontier_is_a_named_refusal(
    fed: Federation, hostile: HostilePeer
) -> None:
    hostile.frontier = message_answer(Error("expired", "check clocks"), status=401)
    error = await expect_refusal(fed, hostile, "expired", kept=0)
    assert error.message == "peer refused: check clocks"


async def test_error_text_from_a_peer_is_one_bounded_line(
    fed: Federation, hostile: HostilePeer
) -> None:
    """A peer's words reach the operator's terminal and the peer status: they must not
    carry control characters (a forged log line, terminal escapes) or megabytes."""
    hostile.frontier = message_answer(
        Error("busy\n\x1b[2J", "fine\nfederation: peer b: all good\x1b[31m" + "x" * 1_000_000),
        status=503,
    )
    error = await expect_refusal(fed, hostile, "busy??[2J", kept=0)
    assert error.message.isprintable()
    assert len(str(error)) < 1000


async def test_huge_frontier_is_refused(fed: Federation, hostile: HostilePeer) -> None:
    heads = [LogHead(i.to_bytes(32, "big"), 1, bytes(32)) for i in range(MAX_FRONTIER_LOGS + 1)]
    hostile.frontier = message_answer(Frontier(bytes(32), heads))
    await expect_refusal(fed, hostile, "too_large", kept=0)
    assert hostile.wants == []


async def test_frontier_over_the_message_limit_is_refused(
    fed: Federation, hostile: HostilePeer
) -> None:
    hostile.frontier = Answer(chunks=[bytes(1024 * 1024)] * (MAX_MESSAGE_BYTES // 2**20 + 1))
    await expect_refusal(fed, hostile, "too_large", kept=0)


async def test_more_without_progress_ends_the_round(fed: Federation, hostile: HostilePeer) -> None:
    """A peer that always says `more` and never sends anything new must not hold the
    round forever (only an honest peer's full response says more)."""
    stream_after_two_good(hostile, done=False)
    hostile.events.chunks.append(messages.frame(Done(more=True)))
    # Then only `more` again: resending what it sent would break §6.2's advance rule.
    hostile.answers = [hostile.events]
    hostile.events = stream_answer(Done(more=True), done=False)
    error = await expect_refusal(fed, hostile, "no_progress")
    assert "more" in error.message
    assert len(hostile.wants) == 2  # the round with progress, and one to see none


async def test_federation_sync_reports_the_refusal(fed: Federation, hostile: HostilePeer) -> None:
    """The `federation sync` command: exit code 1, the reason, and the peer's status."""
    events = hostile.club.chain(2)
    run = pairs(events)
    run[1] = (forge(run[1][0]), run[1][1])
    log = offer(hostile, run)
    a = fed["a"]
    before = await held(a)
    args = argparse.Namespace(node=str(a.node.paths.root), peer="Mallory", json=True)
    out = await bounded(cmd_sync(args))
    assert out.exit_code == 1
    assert out.lines == []  # a failure goes to stderr, not with the results
    [line] = out.errors
    # Where: the club and log by the names this node knows (cli/names.py name_places).
    assert line.startswith("Mallory: Mallory federation#2: ")
    assert "bad signature" in line
    assert await held(a) == {**before, log: rows(events[:1])}
    [mallory] = [p for p in await a.node.store.peers() if p.club == hostile.club.id]
    assert "bad signature" in mallory.status.last_error
    await still_serving(fed)


async def test_tls_certificate_not_matching_the_invite_is_refused(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b"], follow=False) as tls_fed:
        await tls_fed.federate("a", "b")
        a, b = tls_fed["a"], tls_fed["b"]
        note = await b.post(Kind.NOTE, {"text": "for a only"}, "federation")
        record = a.service.rt.peers[b.club]
        mine = certificate_fingerprint(a.node.paths.tls_cert.read_bytes())
        await a.node.store.put_peer(msgspec.structs.replace(record, fingerprint=mine))
        await a.service.rt.refresh()
        before = await held(a)
        with pytest.raises(PeerUnavailableError) as refused:
            await sync(a, b.club)
        assert "does not match the invite's fingerprint" in refused.value.message
        assert await held(a) == before
        # With the invite's fingerprint back, the same peer syncs.
        await a.node.store.put_peer(record)
        await a.service.rt.refresh()
        await sync(a, b.club)
        assert note.payload in await a.payloads()


async def test_clubs_and_logs_with_no_valid_event_are_not_stored(
    fed: Federation, hostile: HostilePeer
) -> None:
    """A peer lists made-up logs of made-up clubs and sends their records but no
    event: nothing of them is stored, however many it offers (protocol.md §6.3)."""
    junk = [Club.make(b"junk %d" % i) for i in range(20)]
    heads = [LogHead(c.log("public"), 1, bytes(32)) for c in junk]
    hostile.frontier = frontier_answer(heads)
    records: list[Message | bytes] = []
    for c in junk:
        records += [ClubInfo(c.id, c.genesis), LogInfo(c.log("public"), c.descriptors["public"])]
    hostile.events = stream_answer(*records)
    clubs_before = await fed["a"].node.store.clubs()
    logs_before = len(await fed["a"].node.store.logs())
    result = await sync(fed["a"], hostile.club.id)
    assert result.added == 0
    assert await fed["a"].node.store.clubs() == clubs_before
    assert len(await fed["a"].node.store.logs()) == logs_before
    await still_serving(fed)
