"""The sender's read-ahead (node/serving.py `_ReadAhead`): while one page of a log is
framed and sent, the next is read from the store. Over real nodes and SQLite stores
(the memory transport's serving code is the peer API's), with pages of 2 events.

What must hold: an answer is the same with read-ahead as a page-by-page read would
make it, every event once and in order; and a page read ahead before a change (here
an erasure, which wipes a payload) is read again, so a wiped payload is never sent
from a page read before the wipe.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from unittest import mock

import pytest

from federation.core import canonical
from federation.node import control, serving
from federation.sync import serve
from federation.sync.messages import Batch, Message, Want, WantLog
from tests.node.test_memory_transport import Club, federate, open_clubs

pytestmark = pytest.mark.timeout(30)
PAGE = 2


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Club, Club]]:
    async with open_clubs(tmp_path, "a", "b") as clubs:
        await federate(clubs["a"], clubs["b"])
        yield clubs["a"], clubs["b"]


def batches(messages: list[Message]) -> list[tuple[int, bytes | None]]:
    """(seq, payload) of every event the answer's batches carry, in order."""
    return [
        (canonical.decode_header(signed).seq, payload)
        for m in messages
        if isinstance(m, Batch)
        for signed, payload in m.events
    ]


def counting(club: Club, reads: list[tuple[int, int]]) -> Callable[..., Awaitable[object]]:
    """The club's store's page reads, each noted (after, limit) in `reads` as it is made."""
    raw_events = club.rt.store.raw_events

    async def counted(log: bytes, after: int = 0, limit: int = 1000) -> list[object]:
        reads.append((after, limit))
        return list(await raw_events(log, after, limit))

    return counted


async def test_an_answer_over_many_pages_holds_every_event_once_in_order(
    pair: tuple[Club, Club],
) -> None:
    a, b = pair
    posted = [await a.post(f"note {i}", "federation") for i in range(9)]
    log = posted[0].header.log
    reads: list[tuple[int, int]] = []
    counted = counting(a, reads)
    with (
        mock.patch.object(serve, "BATCH_MAX_EVENTS", PAGE),
        mock.patch.object(a.rt.store, "raw_events", counted),
    ):
        answer = serving.events(a.rt, b.club, Want([WantLog(log, 0)]))
        got = batches([m async for m in answer])
    assert got == [(e.header.seq, e.payload) for e in posted]
    # Every page read once, each starting where the last ended: the read-ahead's
    # pages were the ones used (a page read twice would show here). The last, short
    # page starts no read-ahead; the stream's own read after it finds the log's end.
    assert reads == [(after, PAGE) for after in range(0, 10, PAGE)] + [(9, PAGE)]


async def test_a_page_a_batch_ended_inside_is_not_read_again(pair: tuple[Club, Club]) -> None:
    """A batch closes at BATCH_MAX_BYTES, inside a page: the page's unsent tail is the
    next page, and the page read ahead is still the one after it (found by review:
    every page was read twice for events of over ~1 KiB)."""
    a, b = pair
    posted = [await a.post(f"note {i} " + "x" * 300, "federation") for i in range(12)]
    log = posted[0].header.log
    reads: list[tuple[int, int]] = []
    counted = counting(a, reads)
    with (
        mock.patch.object(serve, "BATCH_MAX_EVENTS", 4),
        mock.patch.object(serve, "BATCH_MAX_BYTES", 600),  # two events of ~600 bytes
        mock.patch.object(a.rt.store, "raw_events", counted),
    ):
        answer = serving.events(a.rt, b.club, Want([WantLog(log, 0)]))
        messages = []
        async for message in answer:
            messages.append(message)
            await asyncio.sleep(0)  # as the HTTP writer yields between frames
        got = batches(messages)
    assert got == [(e.header.seq, e.payload) for e in posted]
    assert len({m.events[0][0] for m in messages if isinstance(m, Batch)}) > 3  # cut: control
    afters = [after for after, _ in reads]
    assert len(afters) == len(set(afters)), reads  # no page read twice
    assert afters == [0, 4, 8, 12], reads


async def test_a_page_read_ahead_before_an_erasure_is_read_again(
    pair: tuple[Club, Club],
) -> None:
    a, b = pair
    posted = [await a.post(f"note {i}", "federation") for i in range(6)]
    log = posted[0].header.log
    wiped = posted[3]  # seq 4: on the second page, read ahead while the first is sent
    with mock.patch.object(serve, "BATCH_MAX_EVENTS", PAGE):
        answer = serving.events(a.rt, b.club, Want([WantLog(log, 0)]))
        first = await anext(answer)
        messages = [first]
        while not isinstance(messages[-1], Batch):
            messages.append(await anext(answer))
        # The second page is being read ahead now; the origin erases seq 4 meanwhile.
        await control.perform(a.node, control.Erase(event=wiped.id.hex()))
        await a.rt.refresh()
        messages += [m async for m in answer]
    got = dict(batches(messages))
    assert got[1] == posted[0].payload  # the control: payloads are sent
    assert got[wiped.header.seq] is None
    assert wiped.payload is not None
    assert all(wiped.payload not in (p or b"") for p in got.values())
    stored = await a.node.store.event_at(log, wiped.header.seq)
    assert stored is not None
    assert stored.payload is None
    # The erasure itself follows in the log (seq 7), and travels like any event.
    assert got[7] is not None
