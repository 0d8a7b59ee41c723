"""Issue 8, item 1: an unsigned claim never locks a club out of its own logs
(protocol.md §3.6; DESIGN principle 15).

A hostile peer, added by club a like any club, speaks the wire as protocol.md writes
it (tests/sync/hostile.py). Its frontier claims a's own logs far beyond a's heads. A
bare claim is a warning in `federation status`; only a validly signed event of a's
beyond a's head holds a log back, and pausing or removing that peer lifts it. The
roster log is never held back. A signed event of a's that forks a's log is fork
evidence: the log freezes and `post` says how to go on.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.cli.club import cmd_status
from federation.core.canonical import Kind
from federation.core.events import Head, sign_event
from federation.core.selection import roster_log_id
from federation.errors import ForkError, InvalidEventError, UsageError
from federation.node import peering
from federation.store.meta import holding_back, restore_guards
from federation.sync.messages import Batch, LogHead
from tests.attacks.support import as_probe
from tests.conftest import Club
from tests.harness import Federation, Member
from tests.sync.hostile import HostilePeer, frontier_answer, open_hostile, stream_answer
from tests.sync.hostile_support import bounded, forks, held, still_serving, sync

pytestmark = pytest.mark.timeout(20)

# The honest node answers a probe within this during every attack here.
PROBE_S = 2.0
TOP_SEQ = 2**40 - 1  # the highest seq the wire carries (§6.7)


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


async def guards_shown(member: Member) -> list[dict[str, Any]]:
    """The restore guards `federation status --json` shows."""
    out = await cmd_status(argparse.Namespace(node=str(member.root), json=True))
    assert isinstance(out.data, dict)
    shown: list[dict[str, Any]] = out.data["restore_guards"]
    return shown


async def test_a_bare_claim_is_only_a_warning(
    fed: Federation, hostile: HostilePeer, http: aiohttp.ClientSession
) -> None:
    """Attack: one active peer's frontier claims seq 2^40-1 of a's federation and roster
    logs, then sends nothing. Posting, `peers remove` and syncing with b still work."""
    a = fed["a"]
    first = await a.post(Kind.NOTE, {"text": "a's first"}, "federation")
    federation_log, roster = first.header.log, roster_log_id(a.club)
    hostile.frontier = frontier_answer(
        [LogHead(federation_log, TOP_SEQ, bytes(32)), LogHead(roster, TOP_SEQ, bytes(32))]
    )
    hostile.events = stream_answer()  # asked for those events, it sends none
    before = await held(a)
    result = await sync(a, hostile.club.id)
    await as_probe(http, a, PROBE_S)
    assert not result.complete
    assert result.behind > 0

    # The round asked for the claimed events (as for any log where a peer is ahead).
    [want] = hostile.wants
    assert {e.log for e in want.logs} == {federation_log, roster}
    assert await held(a) == before

    # Only a warning: named in `status` (and --json), holding nothing back.
    warned = {(g["log"], g["evidence"]) for g in await guards_shown(a)}
    assert warned == {(federation_log.hex(), False), (roster.hex(), False)}
    assert await holding_back(a.node.store, federation_log, 1) is None
    after = await a.post(Kind.NOTE, {"text": "a posts anyway"}, "federation")
    assert after.header.seq == 2
    await still_serving(fed)

    # Pausing the peer clears the warning; removing it writes to the roster log.
    await peering.set_state(a.node, "Mallory", "paused")
    assert await guards_shown(a) == []
    await peering.remove(a.node, "Mallory")
    await a.refresh()
    assert hostile.club.id not in a.service.rt.peers


async def test_junk_after_a_claim_is_no_evidence(fed: Federation, hostile: HostilePeer) -> None:
    """Attack: the claim, then a batch of junk and of a's events badly signed."""
    a = fed["a"]
    first = await a.post(Kind.NOTE, {"text": "a's first"}, "federation")
    log = first.header.log
    forged = sign_event(
        hostile.club.key,  # not a's key: fails its check
        club=a.club,
        log=log,
        head=Head(1, first.id),
        time_us=first.header.time_us + 1,
        kind=Kind.NOTE,
        payload=b'{"text":"not a\'s"}',
    )
    hostile.frontier = frontier_answer([LogHead(log, TOP_SEQ, bytes(32))])
    hostile.events = stream_answer(Batch(log, [(forged.signed, forged.payload)]))
    before = await held(a)
    with pytest.raises(InvalidEventError):
        await sync(a, hostile.club.id)
    assert await held(a) == before
    assert await holding_back(a.node.store, log, 1) is None
    assert (await a.post(Kind.NOTE, {"text": "still ours"}, "federation")).header.seq == 2


async def test_signed_evidence_holds_back_until_the_peer_is_paused(
    fed: Federation, hostile: HostilePeer, http: aiohttp.ClientSession
) -> None:
    """The positive control: a validly signed event of a's at seq 3 that does not
    continue a's head (a lost write: a restored node) holds the log back; `status`
    says so; pausing the peer lifts it. The roster log is never held back."""
    a = fed["a"]
    first = await a.post(Kind.NOTE, {"text": "a's first"}, "federation")
    log = first.header.log
    lost = sign_event(
        a.service.rt.key,
        club=a.club,
        log=log,
        head=Head(2, bytes(range(32))),  # after an event a no longer holds
        time_us=first.header.time_us + 2,
        kind=Kind.NOTE,
        payload=b'{"text":"written before the restore"}',
    )
    hostile.frontier = frontier_answer([LogHead(log, 3, lost.id)])
    hostile.events = stream_answer(Batch(log, [(lost.signed, lost.payload)]))
    before = await held(a)
    with pytest.raises(InvalidEventError, match="gap"):
        await sync(a, hostile.club.id)
    await as_probe(http, a, PROBE_S)
    assert await held(a) == before
    guard = await holding_back(a.node.store, log, 1)
    assert guard is not None
    assert (guard.seq, guard.peer, guard.evidence) == (3, "Mallory", True)
    with pytest.raises(UsageError, match="restored from an old backup"):
        await a.post(Kind.NOTE, {"text": "would fork"}, "federation")
    [shown] = await guards_shown(a)
    assert shown["evidence"] is True
    assert shown["seq"] == 3

    # Evidence about the roster log never blocks it (peers remove writes there).
    roster = roster_log_id(a.club)
    assert [g.log for g in await restore_guards(a.node.store, [(roster, 0)])] == []
    await peering.set_state(a.node, "Mallory", "paused")
    assert await holding_back(a.node.store, log, 1) is None
    assert (await a.post(Kind.NOTE, {"text": "after pausing"}, "federation")).header.seq == 2


async def test_a_signed_fork_of_our_own_log_freezes_it_and_says_how_to_go_on(
    fed: Federation, hostile: HostilePeer
) -> None:
    """A validly signed event of a's at a's own head seq that differs from a's: the
    proof of a fork (§3.6). The log freezes; `post` says what happened and what to do."""
    a = fed["a"]
    first = await a.post(Kind.NOTE, {"text": "a's first"}, "federation")
    log = first.header.log
    other = sign_event(
        a.service.rt.key,
        club=a.club,
        log=log,
        head=None,
        time_us=first.header.time_us + 5,
        kind=Kind.NOTE,
        payload=b'{"text":"the other seq 1"}',
    )
    hostile.frontier = frontier_answer([LogHead(log, 2, bytes(32))])
    hostile.events = stream_answer(Batch(log, [(other.signed, other.payload)]))
    with pytest.raises(ForkError):
        await bounded(sync(a, hostile.club.id))
    [fork] = await forks(a)
    assert (fork.log, fork.seq) == (log, 1)
    with pytest.raises(UsageError, match=r"frozen after a fork.*post into another log"):
        await a.post(Kind.NOTE, {"text": "more"}, "federation")
    assert (await a.post(Kind.NOTE, {"text": "elsewhere"}, "public")).header.seq == 1
