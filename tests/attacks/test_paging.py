"""Issue 8, item 2 (part): frontiers and wants that page, so a node that holds more
logs than one message carries still syncs (protocol.md §6.1, §6.2).

A victim once fed 99,999 logs failed every round after with "frontier lists too many
logs". Here the page size (MAX_FRONTIER_LOGS) is made small so that real nodes page
with a handful of logs; the rules are the same at 100,000. A hostile peer that pages
forever, or goes back, is refused by name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from federation.core.canonical import Kind
from federation.errors import RemoteProtocolError
from federation.node import peering
from federation.node.follow import sync_round
from federation.sync import messages, serve, session
from federation.sync.messages import FRONTIER_PATH, MAX_FRONTIER_PAGES, Frontier, LogHead
from tests.attacks.support import as_probe
from tests.conftest import Club
from tests.harness import Federation
from tests.sync.hostile import Answer, HostilePeer, open_hostile, stream_answer
from tests.sync.hostile_support import bounded, held, sync

pytestmark = pytest.mark.timeout(20)

PAGE = 3  # logs a page, in these tests
PROBE_S = 2.0


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve, "MAX_FRONTIER_LOGS", PAGE)
    monkeypatch.setattr(session, "MAX_FRONTIER_LOGS", PAGE)


@pytest.fixture
async def fed(tmp_path: Path, small_pages: None) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        yield fed


@pytest.fixture
async def hostile(fed: Federation) -> AsyncIterator[HostilePeer]:
    async with open_hostile(Club.make(b"mallory"), "Mallory") as peer:
        await peering.add(fed["a"].node, peer.invite())
        await fed["a"].service.rt.refresh()
        yield peer


async def test_a_node_with_more_logs_than_a_page_syncs(fed: Federation) -> None:
    """a holds three pages of logs b may receive: b takes all of them in one round,
    through paged frontier requests and wants of at most a page each; the next round
    is one unchanged frontier. Then b, now holding more logs than a page, serves a."""
    a, b = fed["a"], fed["b"]
    for n in range(7):
        await a.post(Kind.NOTE, {"text": f"in log {n}"}, "federation", f"log{n}")
    visible = a.service.rt.visible(b.club)
    assert len(visible) > 2 * PAGE
    result = await sync(b, a.club)
    assert result.complete
    assert result.logs == len(visible)
    heads_b = await b.heads()
    for log, record in visible.items():
        assert record.head is not None
        assert heads_b[log] == record.head.seq
    frontiers = [r for r in b.responses if r.path == FRONTIER_PATH]
    wants = [r for r in b.responses if r.path != FRONTIER_PATH]
    pages = -(-len(visible) // PAGE)
    assert len(frontiers) == pages
    assert [r.url.query.get("after", "") != "" for r in frontiers] == [False] + [True] * (pages - 1)
    assert len(wants) == pages  # every log wanted, a page a want

    # The next round, with `known`: one unchanged frontier, whatever the pages.
    client = b.service.client(a.club)
    again = await bounded(sync_round(b.service.rt, client, known=result.digest, wait_s=0.0))
    assert again.complete
    assert not again.changed
    assert len([r for r in b.responses if r.path == FRONTIER_PATH]) == pages + 1

    # b now holds more logs than a page, and a syncs from it as before.
    note = await b.post(Kind.NOTE, {"text": "b's news"}, "federation")
    assert (await sync(a, b.club)).complete
    assert note.payload in await a.payloads()


def page(logs: list[bytes], *, more: bool) -> Answer:
    heads = [LogHead(log, 1, bytes(32)) for log in logs]
    return Answer(chunks=[messages.encode(Frontier(bytes(32), heads, more=more))])


async def test_endless_pages_are_refused(fed: Federation, hostile: HostilePeer) -> None:
    """Attack: page after page, each saying `more`, without end."""
    a = fed["a"]
    hostile.frontiers = [
        page([bytes([n, k]) + bytes(30) for k in range(PAGE)], more=True) for n in range(100)
    ]
    before = await held(a)
    with pytest.raises(RemoteProtocolError, match="pages") as refused:
        await sync(a, hostile.club.id)
    assert refused.value.code == "too_large"
    asked = [path for method, path in hostile.requests if method == "GET"]
    assert len(asked) == MAX_FRONTIER_PAGES
    # Each page after the first is asked after the last log of the one before (§6.1).
    assert asked[1].endswith("&after=" + (bytes([0, PAGE - 1]) + bytes(30)).hex())
    assert await held(a) == before
    async with aiohttp.ClientSession() as http:
        await as_probe(http, a, PROBE_S)


async def test_a_page_that_goes_back_is_refused(fed: Federation, hostile: HostilePeer) -> None:
    """Attack: the second page lists again a log of the first (a log twice)."""
    a = fed["a"]
    logs = [bytes([k]) + bytes(31) for k in range(1, PAGE + 1)]
    hostile.frontiers = [page(logs, more=True), page(logs[-1:], more=False)]
    hostile.events = stream_answer()
    with pytest.raises(RemoteProtocolError, match="out of order") as refused:
        await sync(a, hostile.club.id)
    assert refused.value.code == "malformed"
    # The control: the same pages in order are taken as one frontier.
    hostile.frontiers = [page(logs, more=True), page([bytes([9]) + bytes(31)], more=False)]
    result = await sync(a, hostile.club.id)
    assert result.logs == PAGE + 1
    [*_, want] = hostile.wants
    assert len(want.logs) <= PAGE
