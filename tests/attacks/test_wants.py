"""Issue 8, item 5: what a node sends never depends on logs the peer may not see
(protocol.md §5.4, §6.2; DESIGN principle 17).

A hostile peer that can compute a log id (a's private log, or club c's federation log,
whose roster does not name it) lists it in its frontier. a's want names it exactly as
it names a log a never held (from seq 0, with the descriptor), and a's next frontier
request is the same as for an unknown log: nothing a sends tells how many events a
holds there. The positive control: for a log the peer may see, a's want shows a's
head (`after` = head - 1), so the check can see what it looks for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from federation.core.canonical import Kind
from federation.node import peering
from federation.sync import messages
from federation.sync.messages import EVENTS_PATH, LogHead, Want, WantLog
from tests.attacks.support import as_probe, call, token
from tests.conftest import Club
from tests.harness import Federation
from tests.sync.hostile import HostilePeer, frontier_answer, open_hostile, stream_answer
from tests.sync.hostile_support import held, sync

pytestmark = pytest.mark.timeout(20)

PROBE_S = 2.0
NEVER_HELD = bytes(range(32))  # a log id no node holds


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b", "c"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        await fed.federate("a", "c")
        yield fed


@pytest.fixture
async def hostile(fed: Federation) -> AsyncIterator[HostilePeer]:
    async with open_hostile(Club.make(b"mallory"), "Mallory") as peer:
        await peering.add(fed["a"].node, peer.invite())
        await fed["a"].service.rt.refresh()
        yield peer


@pytest.mark.parametrize("private_events", [1, 5])
async def test_a_want_never_shows_a_head_the_peer_may_not_see(
    fed: Federation, hostile: HostilePeer, private_events: int
) -> None:
    """Attack: list a's private log and c's federation log (Mallory is not in c's
    roster) in the frontier, then send nothing. Run with 1 and 5 private events: what
    a sends is the same."""
    a, c = fed["a"], fed["c"]
    for n in range(private_events):
        secret = await a.post(Kind.NOTE, {"text": f"report {n}"}, "private")
    for n in range(3):
        theirs = await c.post(Kind.NOTE, {"text": f"c's {n}"}, "federation")
    await sync(a, c.club)
    shared = await a.post(Kind.NOTE, {"text": "a's shared"}, "federation")
    shared = await a.post(Kind.NOTE, {"text": "a's shared too"}, "federation")
    private_log, c_log, shared_log = secret.header.log, theirs.header.log, shared.header.log
    assert (await a.heads())[c_log] == 3
    hostile.frontier = frontier_answer(
        [
            LogHead(private_log, 1, bytes(32)),
            LogHead(c_log, 1, bytes(32)),
            LogHead(NEVER_HELD, 1, bytes(32)),
            LogHead(shared_log, 3, bytes(32)),  # the control: a log Mallory may see
        ]
    )
    hostile.events = stream_answer()
    before = await held(a)
    first = await sync(a, hostile.club.id)
    second = await sync(a, hostile.club.id)
    [want, again] = hostile.wants
    entries = {e.log: e for e in want.logs}
    assert entries[private_log] == WantLog(private_log, 0, 0, True)
    assert entries[c_log] == WantLog(c_log, 0, 0, True)
    assert entries[NEVER_HELD] == WantLog(NEVER_HELD, 0, 0, True)
    assert entries[shared_log] == WantLog(shared_log, 1, 0, False)  # control: a's head
    assert again == want
    # Not complete, exactly as for a log a never held: no `known` goes back.
    assert not first.complete
    assert not second.complete
    frontier_requests = [path for method, path in hostile.requests if method == "GET"]
    assert frontier_requests == ["/fed/v1/frontier?known=&wait=0"] * 2
    assert await held(a) == before


async def test_a_hidden_log_is_not_counted_behind_from_our_head(
    fed: Federation, hostile: HostilePeer
) -> None:
    """`behind` (in status) counts a hidden log from 0 like an unknown one: it does not
    act on, or show, a's head there."""
    a = fed["a"]
    for n in range(4):
        secret = await a.post(Kind.NOTE, {"text": f"report {n}"}, "private")
    hostile.frontier = frontier_answer([LogHead(secret.header.log, 4, bytes(32))])
    hostile.events = stream_answer()
    result = await sync(a, hostile.club.id)
    assert result.behind == 4  # as if a held none of it (it holds 4)


async def test_wants_served_refuse_hidden_logs_like_missing_ones(
    fed: Federation, hostile: HostilePeer
) -> None:
    """The serving side: b asks a for a's private log, and for a log nobody holds: the
    same refusal, word for word but the id; a answers probes meanwhile."""
    a, b = fed["a"], fed["b"]
    secret = await a.post(Kind.NOTE, {"text": "ours alone"}, "private")
    async with aiohttp.ClientSession() as http:
        replies = []
        for log in (secret.header.log, NEVER_HELD):
            body = messages.encode(Want([WantLog(log, 0, 0, True)]))
            auth = token(b, a, "POST", EVENTS_PATH, body)
            replies.append(await call(http, a, "POST", EVENTS_PATH, body=body, authorization=auth))
        await as_probe(http, a, PROBE_S)
    hidden, missing = replies
    assert hidden.status == missing.status == 404
    assert hidden.body.replace(secret.header.log.hex()[:16].encode(), b"X") == missing.body.replace(
        NEVER_HELD.hex()[:16].encode(), b"X"
    )
