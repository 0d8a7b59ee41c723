"""Blocking a club (protocol.md §6.3; issue 8 item 2), against real nodes on loopback.

The relay Mallory (tests/attacks/relay.py) brings node a a junk club's logs. Before
the block, a relays them on: its partner c receives them (the positive control,
seen in the bytes c's client received). After `federation block` (run as the CLI
runs it, on its own connection to a's store, while a's node runs): the club's logs,
events and genesis are gone from a's store; Mallory offering them again gets
nothing stored, only a warning, and later rounds stop asking; a partner syncing
from a never receives a byte of them; a still answers and syncs with b. After
`unblock`, the same offer is taken again.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from federation.cli.blocking import cmd_block, cmd_unblock
from federation.core.ids import short
from federation.errors import UsageError
from federation.node import peering
from federation.node.blocking import block
from tests.attacks.relay import RelayedLog, RelayPeer, many_clubs, one_event_logs, open_relay
from tests.attacks.support import as_probe
from tests.conftest import Club
from tests.harness import Federation, Member
from tests.sync.hostile_support import held, rows, still_serving, sync

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b", "c"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        await fed.federate("a", "c")
        yield fed


@pytest.fixture
async def mallory(fed: Federation) -> AsyncIterator[RelayPeer]:
    async with open_relay(Club.make(b"mallory")) as peer:
        await peering.add(fed["a"].node, peer.invite())
        await fed["a"].refresh()
        yield peer


def traces(logs: list[RelayedLog]) -> list[bytes]:
    """Bytes that would show any of these logs on the wire: ids and signed headers."""
    return [r.id for r in logs] + [e.signed for r in logs for e in r.events]


def received(member: Member) -> bytes:
    return b"".join(member.received)


async def test_a_blocked_club_is_dropped_refused_and_not_relayed(
    fed: Federation, mallory: RelayPeer, tmp_path: Path
) -> None:
    a, c = fed["a"], fed["c"]
    junk_club = Club.make(b"junk club")
    junk = one_event_logs(junk_club, 20)
    bystander = many_clubs(1, b"bystander")  # another club's public log, relayed alike
    mallory.relay(junk + bystander)
    empty = await held(a)
    assert (await sync(a, mallory.club.id)).added == 21
    # The positive control: before the block, a relays the junk to its partner c.
    await sync(c, a.club)
    assert all(trace in received(c) for trace in traces(junk))
    assert {r.id for r in junk} <= set(await held(c))

    # `federation block`, as the CLI runs it: its own connection to a's store.
    args = argparse.Namespace(node=str(a.root), club=short(junk_club.id), json=True)
    out = await cmd_block(args)
    assert (out.data["logs"], out.data["events"]) == (20, 20)
    await fed.wait_for(lambda: junk_club.id in a.service.rt.blocked, what="the store watcher")
    assert await held(a) == {**empty, **{r.id: rows(r.events) for r in bystander}}
    assert junk_club.id not in await a.node.store.clubs()

    # Offered again: nothing stored, a warning; the next round does not ask again.
    again = await sync(a, mallory.club.id)
    assert again.added == 0
    assert again.warnings == [
        f"refused 20 logs of club {short(junk_club.id)}: blocked by this node's operator"
    ]
    assert a.service.rt.refused == {r.id for r in junk}
    wants = len(mallory.wants)
    assert (await sync(a, mallory.club.id)).complete
    assert len(mallory.wants) == wants
    assert junk_club.id not in await a.node.store.clubs()
    assert set(await held(a)) == set(empty) | {r.id for r in bystander}

    # Not relayed: a partner that never had them receives not one byte of them.
    d = await fed.add(tmp_path, "d", tls=False, follow=False)
    await fed.federate("a", "d")
    await sync(d, a.club)
    assert bystander[0].id in received(d)  # the round did carry the rest
    assert not any(trace in received(d) for trace in traces(junk))
    c.received.clear()
    await sync(c, a.club)
    assert not any(trace in received(c) for trace in traces(junk))
    async with aiohttp.ClientSession() as http:
        await as_probe(http, a, 2.0)
    await still_serving(fed)

    # Unblocked, the same offer is taken again (the block was what refused it).
    await cmd_unblock(argparse.Namespace(node=str(a.root), club=junk_club.id.hex(), json=True))
    await fed.wait_for(lambda: not a.service.rt.blocked, what="the store watcher")
    assert (await sync(a, mallory.club.id)).added == 20
    assert {r.id for r in junk} <= set(await held(a))


async def test_our_club_and_our_peers_cannot_be_blocked(
    fed: Federation, mallory: RelayPeer
) -> None:
    a = fed["a"]
    before = await held(a)
    with pytest.raises(UsageError, match="cannot be blocked"):
        await block(a.node, a.club.hex())
    with pytest.raises(UsageError, match="remove it first"):
        await block(a.node, "Mallory")  # the relay is a peer: it must be removed first
    assert await a.node.store.blocked() == {}
    assert await held(a) == before
