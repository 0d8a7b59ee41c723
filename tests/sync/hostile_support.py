"""Helpers shared by the hostile-peer tests (test_hostile_server.py, test_hostile_client.py):
bounded rounds against a hostile peer, and what an honest node's store holds before and
after an attack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.node.follow import RoundResult, sync_round
from federation.store.base import ForkRecord
from tests.harness import Federation, Member

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
