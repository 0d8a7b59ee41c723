"""Hostile peers (DESIGN principles 13 and 14; protocol.md §4, §5.2, §6).

Every refusal here carries a named error (a RemoteProtocolError code or an
InvalidEventError reason), leaves the honest node's store as it was (a valid prefix
may be kept), and the honest node goes on serving and syncing afterwards.

A. An honest node syncs with a hostile *server* (tests/sync/hostile.py) it added
   from an invite, and is sent forged events, broken frames, messages out of place.
B. Hostile *clients* send crafted requests to an honest node's peer API: replayed,
   expired or misdirected tokens, requests for logs they may not have, bad bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import msgspec
import pytest

from federation import peers
from federation.core import canonical
from federation.core.canonical import Kind
from federation.core.crypto import SigningKey, certificate_fingerprint
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.errors import (
    ForkError,
    InvalidEventError,
    PeerUnavailableError,
    RemoteProtocolError,
)
from federation.peer_commands import cmd_sync
from federation.store.base import ForkRecord
from federation.sync import auth, messages
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
from federation.syncer import RoundResult, sync_round
from federation.web.client import PeerClient
from federation.web.peer_api import EVENTS_PATH, FRONTIER_PATH
from tests.conftest import BASE_TIME_US, Club
from tests.harness import Federation, Member
from tests.sync.hostile import (
    Answer,
    HostilePeer,
    frontier_answer,
    message_answer,
    open_hostile,
    stream_answer,
)

pytestmark = pytest.mark.timeout(20)

# One sync round or request against a hostile peer ends within this, or the test fails:
# a peer must never be able to hold an honest node's round open.
ROUND_S = 8.0

T = TypeVar("T")
Held = dict[bytes, list[tuple[int, bytes, bytes | None]]]
Pairs = list[tuple[bytes, bytes | None]]


async def bounded(work: Awaitable[T]) -> T:
    return await asyncio.wait_for(work, ROUND_S)


async def held(member: Member) -> Held:
    """Every event the member's store holds, per log, as exact bytes."""
    out: Held = {}
    for record in await member.node.store.logs():
        if record.head is not None:
            raw = await member.node.store.raw_events(record.id, 0, 100_000)
            out[record.id] = [(e.seq, e.signed, e.payload) for e in raw]
    return out


async def forks(member: Member) -> list[ForkRecord]:
    return await member.node.store.forks()


def rows(events: list[VerifiedEvent]) -> list[tuple[int, bytes, bytes | None]]:
    return [(e.header.seq, e.signed, e.payload) for e in events]


def pairs(events: list[VerifiedEvent]) -> Pairs:
    return [(e.signed, e.payload) for e in events]


async def sync(member: Member, club: bytes) -> RoundResult:
    """One round of `member` with the peer `club`, as `federation sync` runs it."""
    client = member.service.client(club)
    return await bounded(sync_round(member.service.rt, client, known=None, wait_s=0.0))


async def still_serving(fed: Federation) -> None:
    """The honest node a serves its peer b, and syncs from b, as before the attack."""
    a, b = fed["a"], fed["b"]
    out = await a.post(Kind.NOTE, {"text": "a, after the attack"}, "federation")
    await sync(b, a.club)
    assert out.payload in await b.payloads()
    back = await b.post(Kind.NOTE, {"text": "b, after the attack"}, "federation")
    await sync(a, b.club)
    assert back.payload in await a.payloads()


# --- part A: a hostile server ------------------------------------------------------------


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        yield fed


@pytest.fixture
async def hostile(fed: Federation) -> AsyncIterator[HostilePeer]:
    """Mallory's server, added by a as a peer from its invite like any club."""
    async with open_hostile(Club.make(b"mallory"), "Mallory") as peer:
        await peers.add(fed["a"].node, peer.invite())
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
    [line] = out.lines
    assert line.startswith("Mallory: error: ")
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


# --- part B: hostile clients ----------------------------------------------------------------


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[Federation]:
    """a federates with b and with c; a holds c's federation log, b is not in c's roster."""
    async with Federation.open(tmp_path, ["a", "b", "c"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        await fed.federate("a", "c")
        a, c = fed["a"], fed["c"]
        await a.post(Kind.NOTE, {"text": "a's private plan"}, "private")
        await a.post(Kind.NOTE, {"text": "a's federation note"}, "federation")
        await a.post(Kind.NOTE, {"text": "a's public note"}, "public")
        await c.post(Kind.NOTE, {"text": "c's federation note"}, "federation")
        await sync(a, c.club)
        yield fed


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Reply(msgspec.Struct):
    status: int
    message: Message | None
    body: bytes


async def call(
    http: aiohttp.ClientSession,
    to: Member,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    authorization: str | None = None,
) -> Reply:
    """One request as a hostile client crafts it: the exact target, any Authorization."""
    sent = {} if authorization is None else {"Authorization": authorization}
    async with http.request(
        method,
        to.url + target,
        data=body or None,
        headers=sent,
        timeout=aiohttp.ClientTimeout(total=ROUND_S),
    ) as response:
        data = await response.read()
    try:
        message: Message | None = messages.decode(data)
    except RemoteProtocolError:
        message = None
    return Reply(response.status, message, data)


def token(
    sender: Member,
    to: Member,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    now_us: int | None = None,
    recipient: bytes | None = None,
    key: SigningKey | None = None,
    club: bytes | None = None,
) -> str:
    rt = sender.service.rt
    return auth.make(
        key or rt.key,
        sender=club or sender.club,
        recipient=recipient or to.club,
        method=method,
        target=target,
        body=body,
        now_us=rt.clock() if now_us is None else now_us,
    )


def refused(reply: Reply, status: int, code: str) -> Error:
    assert reply.status == status, reply
    assert isinstance(reply.message, Error), reply
    assert reply.message.code == code, reply.message
    return reply.message


def frontier_target() -> str:
    return f"{FRONTIER_PATH}?known=&wait=0"


def log_of(member: Member, audience: str) -> bytes:
    [log] = [
        r.id
        for r in member.service.rt.logs.values()
        if r.club == member.club and r.name == audience
    ]
    return log


async def guarded(fed: Federation, attack: Callable[[], Awaitable[T]]) -> T:
    """Run an attack on a; a's store is unchanged and a serves b honestly afterwards."""
    a, b = fed["a"], fed["b"]
    before, forks_before = await held(a), await forks(a)
    outcome = await bounded(attack())
    assert await held(a) == before
    assert await forks(a) == forks_before
    note = await a.post(Kind.NOTE, {"text": "a, after the attack"}, "federation")
    await sync(b, a.club)
    assert note.payload in await b.payloads()
    return outcome


async def test_replayed_request_is_refused(trio: Federation, http: aiohttp.ClientSession) -> None:
    a, b = trio["a"], trio["b"]
    captured: list[tuple[str, str]] = []

    async def on_request(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        captured.append((str(params.url), params.headers["Authorization"]))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request)
    async with aiohttp.ClientSession(trace_configs=[trace]) as recording:
        rt = b.service.rt
        client = PeerClient(recording, rt.peers[a.club], me=b.club, key=rt.key, clock=rt.clock)
        assert isinstance(await bounded(client.frontier(None, 0.0)), Frontier)
    [(url, header)] = captured

    async def replay() -> Reply:
        target = url.removeprefix(a.url)
        return await call(http, a, "GET", target, authorization=header)

    reply = await guarded(trio, replay)
    refused(reply, 401, "replayed")


@pytest.mark.parametrize("skew_s", [-121, 121])
async def test_expired_token_is_refused(
    trio: Federation, http: aiohttp.ClientSession, skew_s: int
) -> None:
    a, b = trio["a"], trio["b"]
    target = frontier_target()
    when = a.service.rt.clock() + skew_s * 1_000_000
    header = token(b, a, "GET", target, now_us=when)
    refused(
        await guarded(trio, lambda: call(http, a, "GET", target, authorization=header)),
        401,
        "expired",
    )


async def test_token_for_another_recipient_is_refused(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a, b, c = trio["a"], trio["b"], trio["c"]
    target = frontier_target()
    header = token(b, a, "GET", target, recipient=c.club)
    reply = await guarded(trio, lambda: call(http, a, "GET", target, authorization=header))
    refused(reply, 401, "wrong_recipient")


async def test_token_for_another_path_is_refused(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a, b = trio["a"], trio["b"]
    header = token(b, a, "GET", f"{FRONTIER_PATH}?known=&wait=1")
    reply = await guarded(
        trio, lambda: call(http, a, "GET", frontier_target(), authorization=header)
    )
    refused(reply, 401, "bad_request_token")


async def test_body_not_matching_its_token_is_refused(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a, b = trio["a"], trio["b"]
    signed_for = messages.encode(Want([WantLog(log_of(a, "public"), 0)]))
    sent = messages.encode(Want([WantLog(log_of(a, "federation"), 0)]))
    header = token(b, a, "POST", EVENTS_PATH, signed_for)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=sent, authorization=header)
    )
    refused(reply, 401, "bad_request_token")


@pytest.mark.parametrize("who", ["stranger", "b with another key"])
async def test_unknown_club_is_refused(
    trio: Federation, http: aiohttp.ClientSession, who: str
) -> None:
    a, b = trio["a"], trio["b"]
    stranger = Club.make(b"stranger")
    club = stranger.id if who == "stranger" else b.club
    header = token(b, a, "GET", frontier_target(), key=stranger.key, club=club)
    reply = await guarded(
        trio, lambda: call(http, a, "GET", frontier_target(), authorization=header)
    )
    refused(reply, 401, "unknown_club")


@pytest.mark.parametrize(
    "header", ["Bearer abc", "Federation !!!not base64", "Federation " + "A" * 400]
)
async def test_malformed_authorization_is_refused(
    trio: Federation, http: aiohttp.ClientSession, header: str
) -> None:
    a = trio["a"]
    reply = await guarded(
        trio, lambda: call(http, a, "GET", frontier_target(), authorization=header)
    )
    refused(reply, 401, "unauthenticated")


async def test_no_authorization_gets_public_logs_only(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a = trio["a"]
    reply = await guarded(trio, lambda: call(http, a, "GET", frontier_target()))
    assert reply.status == 200
    assert isinstance(reply.message, Frontier)
    assert reply.message.logs is not None
    assert [h.log for h in reply.message.logs] == [log_of(a, "public")]
    # The public log streams; the federation log is refused as if it did not exist.
    public = messages.encode(Want([WantLog(log_of(a, "public"), 0)]))
    streamed = await guarded(trio, lambda: call(http, a, "POST", EVENTS_PATH, body=public))
    assert streamed.status == 200
    kinds = [type(m).__name__ for m in messages.FrameReader().feed(streamed.body)]
    assert kinds == ["Batch", "Done"]
    want = messages.encode(Want([WantLog(log_of(a, "federation"), 0)]))
    reply = await guarded(trio, lambda: call(http, a, "POST", EVENTS_PATH, body=want))
    refused(reply, 404, "unknown_log")


@pytest.mark.parametrize("which", ["a's private", "c's federation", "c's roster", "no such"])
async def test_log_the_peer_may_not_have_is_refused_like_no_log(
    trio: Federation, http: aiohttp.ClientSession, which: str
) -> None:
    a, b, c = trio["a"], trio["b"], trio["c"]
    log = {
        "a's private": log_of(a, "private"),
        "c's federation": log_of(c, "federation"),
        "c's roster": log_of(c, "roster"),
        "no such": canonical.sha256(b"no such log"),
    }[which]
    assert which == "no such" or log in a.service.rt.logs
    body = messages.encode(Want([WantLog(log_of(a, "public"), 0), WantLog(log, 0, 0, True)]))
    header = token(b, a, "POST", EVENTS_PATH, body)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=body, authorization=header)
    )
    error = refused(reply, 404, "unknown_log")
    assert error.message == f"no log {log.hex()[:16]} for you here"


async def test_oversize_body_is_refused(trio: Federation, http: aiohttp.ClientSession) -> None:
    a, b = trio["a"], trio["b"]
    body = bytes(MAX_MESSAGE_BYTES + 1)
    header = token(b, a, "POST", EVENTS_PATH, body)

    async def attack() -> Reply:
        async with http.post(
            a.url + EVENTS_PATH, data=io.BytesIO(body), headers={"Authorization": header}
        ) as response:
            return Reply(response.status, messages.decode(await response.read()), b"")

    refused(await guarded(trio, attack), 413, "too_large")


async def test_body_without_length_is_refused(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a, b = trio["a"], trio["b"]
    body = messages.encode(Want([WantLog(log_of(a, "public"), 0)]))
    header = token(b, a, "POST", EVENTS_PATH, body)

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    async def attack() -> Reply:
        async with http.post(
            a.url + EVENTS_PATH, data=chunks(), headers={"Authorization": header}
        ) as response:
            return Reply(response.status, messages.decode(await response.read()), b"")

    refused(await guarded(trio, attack), 413, "too_large")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\xc1garbage", "malformed"),
        (msgspec.msgpack.encode({"t": "want", "logs": "all of them"}), "malformed"),
        (messages.encode(Done()), "unexpected"),
        (messages.encode(Frontier(bytes(32), [])), "unexpected"),
        (b"", "malformed"),
    ],
)
async def test_malformed_or_wrong_body_is_refused(
    trio: Federation, http: aiohttp.ClientSession, body: bytes, code: str
) -> None:
    a, b = trio["a"], trio["b"]
    header = token(b, a, "POST", EVENTS_PATH, body)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=body, authorization=header)
    )
    refused(reply, 400, code)


@pytest.mark.parametrize(
    "entry",
    [
        lambda log: [WantLog(log, -1)],
        lambda log: [WantLog(log, 0, -5)],
        lambda log: [WantLog(log, 0), WantLog(log, 1)],
    ],
    ids=["negative seq", "negative limit", "log twice"],
)
async def test_bad_want_is_refused(
    trio: Federation, http: aiohttp.ClientSession, entry: Callable[[bytes], list[WantLog]]
) -> None:
    a, b = trio["a"], trio["b"]
    body = messages.encode(Want(entry(log_of(a, "federation"))))
    header = token(b, a, "POST", EVENTS_PATH, body)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=body, authorization=header)
    )
    refused(reply, 400, "malformed")


@pytest.mark.parametrize(
    "query", ["known=zz&wait=0", "known=&wait=soon", "known=&wait=nan", "known=&wait=inf"]
)
async def test_malformed_frontier_query_is_refused(
    trio: Federation, http: aiohttp.ClientSession, query: str
) -> None:
    a, b = trio["a"], trio["b"]
    target = f"{FRONTIER_PATH}?{query}"
    header = token(b, a, "GET", target)
    reply = await guarded(trio, lambda: call(http, a, "GET", target, authorization=header))
    refused(reply, 400, "malformed")


async def test_want_past_any_seq_gets_an_empty_stream(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    """The largest seq the wire can say (u64) is past every log: nothing to send."""
    a, b = trio["a"], trio["b"]
    body = messages.encode(Want([WantLog(log_of(a, "federation"), 2**64 - 1, 2**64 - 1)]))
    header = token(b, a, "POST", EVENTS_PATH, body)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=body, authorization=header)
    )
    assert reply.status == 200
    assert list(messages.FrameReader().feed(reply.body)) == [Done()]


async def test_long_poll_with_a_nan_wait_is_refused_not_spun(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    """With `known` current, a NaN wait would never time out: the poll would spin."""
    a, b = trio["a"], trio["b"]
    first = await call(
        http, a, "GET", frontier_target(), authorization=token(b, a, "GET", frontier_target())
    )
    assert isinstance(first.message, Frontier)
    target = f"{FRONTIER_PATH}?known={first.message.digest.hex()}&wait=nan"
    header = token(b, a, "GET", target)
    reply = await guarded(trio, lambda: call(http, a, "GET", target, authorization=header))
    refused(reply, 400, "malformed")
