"""Issue 8, item 8: a peer cannot hold a round or burn our CPU (protocol.md §6.2,
§6.4; DESIGN principle 13).

A hostile peer speaks the wire as protocol.md writes it (tests/sync/hostile.py). The
client enforces every limit of §6.4 itself and requires each batch to advance; every
round has a deadline; nothing decompresses. Each attack is refused by name, quickly,
while the honest node answers probes, and its store keeps only what verified.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from federation.core import canonical
from federation.core.events import VerifiedEvent
from federation.errors import PeerUnavailableError, RemoteProtocolError
from federation.node import peering
from federation.node.follow import ROUND_DEADLINE_S, sync_round
from federation.sync import messages
from federation.sync.messages import (
    BATCH_MAX_EVENTS,
    EVENTS_PATH,
    FRAME_HEADER,
    MAX_EVENTS_PER_RESPONSE,
    MAX_MESSAGE_BYTES,
    Batch,
    ClubInfo,
    Done,
    LogHead,
    LogInfo,
    Want,
    WantLog,
)
from federation.sync.session import Session
from tests.attacks.support import as_probe, token
from tests.conftest import Club
from tests.harness import Federation
from tests.sync.hostile import (
    Answer,
    HostilePeer,
    frontier_answer,
    message_answer,
    open_hostile,
    stream_answer,
)
from tests.sync.hostile_support import bounded, held, pairs, rows, still_serving, sync

pytestmark = pytest.mark.timeout(20)

PROBE_S = 2.0
# A refused attack ends the round within this (the round's deadline is far longer).
REFUSED_S = 3.0


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        yield fed


@pytest.fixture
async def hostile(fed: Federation) -> AsyncIterator[HostilePeer]:
    async with open_hostile(Club.make(b"mallory"), "Mallory") as peer:
        await peering.add(fed["a"].node, peer.invite())
        await fed["a"].service.rt.refresh()
        yield peer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def three_held(fed: Federation, hostile: HostilePeer) -> tuple[bytes, list[VerifiedEvent]]:
    """a takes Mallory's seq 1-3 honestly; Mallory's log id and the chain of 5."""
    club = hostile.club
    events = club.chain(5)
    log = club.log("federation")
    hostile.frontier = frontier_answer([LogHead(log, 3, events[2].id)])
    hostile.events = stream_answer(
        ClubInfo(club.id, club.genesis),
        LogInfo(log, club.descriptors["federation"]),
        Batch(log, pairs(events[:3])),
    )
    assert (await sync(fed["a"], club.id)).added == 3
    hostile.wants.clear()
    return log, events


async def test_repeating_held_events_is_refused_at_once(
    fed: Federation, hostile: HostilePeer, http: aiohttp.ClientSession
) -> None:
    """Attack: claim seq 5, then send the event a holds at seq 3 in batch after batch,
    forever (it once kept `federation sync` busy until killed)."""
    a = fed["a"]
    log, events = await three_held(fed, hostile)
    held_event = pairs(events[2:3])
    hostile.frontier = frontier_answer([LogHead(log, 5, events[4].id)])
    hostile.events = stream_answer(*[Batch(log, held_event)] * 10_000, done=False)
    before = await held(a)
    start = time.monotonic()
    with pytest.raises(RemoteProtocolError, match="repeats or goes back") as refused:
        await sync(a, hostile.club.id)
    assert time.monotonic() - start < REFUSED_S
    assert refused.value.code == "malformed"
    await as_probe(http, a, PROBE_S)
    assert await held(a) == before
    await still_serving(fed)


async def test_an_overlap_and_new_events_are_taken(fed: Federation, hostile: HostilePeer) -> None:
    """The control: the same peer sending the overlap (seq 3) and then seq 4-5 is
    taken, so the advance rule refuses only what goes back."""
    a = fed["a"]
    log, events = await three_held(fed, hostile)
    hostile.frontier = frontier_answer([LogHead(log, 5, events[4].id)])
    hostile.events = stream_answer(
        Batch(log, pairs(events[2:3])),
        Batch(log, pairs(events[3:5])),
    )
    result = await sync(a, hostile.club.id)
    assert (result.added, result.already, result.complete) == (2, 1, True)
    assert hostile.wants == [Want([WantLog(log, 2, 0, False)])]
    assert (await held(a))[log] == rows(events)


async def test_a_batch_over_the_limit_is_refused_before_it_is_verified(
    fed: Federation, hostile: HostilePeer
) -> None:
    """Attack: one batch of BATCH_MAX_EVENTS + 1 events."""
    a = fed["a"]
    log, events = await three_held(fed, hostile)
    hostile.frontier = frontier_answer([LogHead(log, 5, events[4].id)])
    junk: list[tuple[bytes, bytes | None]] = [(bytes(canonical.SIGNED_HEADER_BYTES), None)]
    junk *= BATCH_MAX_EVENTS + 1
    hostile.events = stream_answer(Batch(log, junk))
    before = await held(a)
    with pytest.raises(RemoteProtocolError, match="over the limit") as refused:
        await sync(a, hostile.club.id)
    assert refused.value.code == "too_large"
    assert await held(a) == before


async def test_a_trickling_peer_meets_the_round_deadline(
    fed: Federation, hostile: HostilePeer, http: aiohttp.ClientSession
) -> None:
    """Attack: a frame header announcing 1 MiB, then its bytes a few at a time, each
    well within the read timeout. The round's deadline ends it, naming the peer. The
    deadline is the constant's, shortened here to keep the test fast."""
    a = fed["a"]
    log, events = await three_held(fed, hostile)
    hostile.frontier = frontier_answer([LogHead(log, 5, events[4].id)])
    hostile.events = Answer(chunks=[FRAME_HEADER.pack(2**20), *[b"\x00" * 16] * 1000], delay_s=0.05)
    before = await held(a)
    client = a.service.client(hostile.club.id)
    start = time.monotonic()
    deadline_s = 1.0
    with pytest.raises(PeerUnavailableError, match=r"Mallory.*deadline") as refused:
        await bounded(sync_round(a.service.rt, client, known=None, wait_s=0, deadline_s=deadline_s))
    assert deadline_s <= time.monotonic() - start < deadline_s + 1.0
    assert refused.value.peer == "Mallory"
    assert 60 <= ROUND_DEADLINE_S <= 600
    await as_probe(http, a, PROBE_S)
    assert await held(a) == before


async def test_a_compressed_answer_is_refused_unread(fed: Federation, hostile: HostilePeer) -> None:
    """Attack: a frontier answer with `Content-Encoding: gzip` (a few KiB that would
    inflate to gigabytes). Refused from its header; the same bytes uncompressed, the
    control, are read."""
    a = fed["a"]
    body = messages.encode(messages.Frontier(bytes(32), []))
    bomb = gzip.compress(b"\x00" * (64 * 2**20))
    hostile.frontier = Answer(chunks=[bomb], headers={"Content-Encoding": "gzip"})
    with pytest.raises(RemoteProtocolError, match="compressed") as refused:
        await sync(a, hostile.club.id)
    assert refused.value.code == "malformed"
    hostile.frontier = Answer(chunks=[body])
    assert (await sync(a, hostile.club.id)).complete


async def test_an_answer_never_done_is_bounded_by_events_per_response() -> None:
    """In memory, the session alone: an events answer that goes past
    MAX_EVENTS_PER_RESPONSE events and one batch more (what servers before the cap
    was kept exactly could send) is refused (`too_large`), whatever the batches."""
    log = bytes(32)
    session = Session({}, None)
    session.frontier_known()
    session.on_frontier(messages.Frontier(bytes(32), [LogHead(log, 1, bytes(32))]))
    batch = Batch(log, [(b"x", None)] * BATCH_MAX_EVENTS)  # headers that do not decode
    for _ in range(MAX_EVENTS_PER_RESPONSE // BATCH_MAX_EVENTS + 1):
        session.on_message(batch)
    with pytest.raises(RemoteProtocolError) as refused:
        session.on_message(batch)
    assert refused.value.code == "too_large"
    session.on_message(Done())  # the refusal left the session as it was


async def test_frames_are_bounded_by_the_want(fed: Federation, hostile: HostilePeer) -> None:
    """Attack: the descriptor of the one log asked for, sent again and again."""
    a = fed["a"]
    club = hostile.club
    log = club.log("federation")
    hostile.frontier = frontier_answer([LogHead(log, 1, bytes(32))])
    info = LogInfo(log, club.descriptors["federation"])
    hostile.events = stream_answer(ClubInfo(club.id, club.genesis), *[info] * 1000)
    before = await held(a)
    with pytest.raises(RemoteProtocolError, match="twice"):
        await sync(a, club.id)
    assert await held(a) == before
    hostile.events = message_answer(Done())  # not a frame: truncated, and nothing taken
    with pytest.raises(RemoteProtocolError):
        await bounded(sync(a, club.id))


async def test_a_compressed_request_body_is_not_inflated_past_the_limit(
    fed: Federation, http: aiohttp.ClientSession
) -> None:
    """Attack on the serving side: a want of gzip that inflates to three times MAX_MESSAGE_BYTES,
    with `Content-Encoding: gzip` and the compressed length. It is refused (a 4xx) and
    the node answers probes meanwhile and after."""
    a, b = fed["a"], fed["b"]
    bomb = gzip.compress(b"\x00" * (3 * MAX_MESSAGE_BYTES), compresslevel=1)
    auth = token(b, a, "POST", EVENTS_PATH, bomb)
    start = time.monotonic()
    async with http.post(
        a.url + EVENTS_PATH,
        data=bomb,
        headers={"Authorization": auth, "Content-Encoding": "gzip"},
        timeout=aiohttp.ClientTimeout(total=REFUSED_S),
    ) as response:
        await response.read()
    assert 400 <= response.status < 500
    assert time.monotonic() - start < REFUSED_S
    await as_probe(http, a, PROBE_S)
    await still_serving(fed)
