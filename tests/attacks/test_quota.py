"""Quotas on what peers make a node hold (protocol.md §6.3, §6.4; issue 8 item 2).

A peer relays honestly signed logs in bulk: many one-event logs of one club, or one
log each of many clubs. Real nodes on loopback: the honest node a syncs with the
relay Mallory (tests/attacks/relay.py, speaking §6.1-§6.3) and with its honest partner
b. Each test shows that a keeps at most the quota and nothing of what it refused,
that the valid rest of the same answer lands, that the refusal is a warning (in the
round's result and in `federation status`), not an error, that later rounds do not
ask again for what was refused for good, and that a still answers and syncs with b.
The production quotas are exceeded honestly where that is fast (per club, per round);
the totals are made small for their test through the runtime's `limits`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from federation.cli.club import cmd_status
from federation.cli.peering import cmd_sync
from federation.core.ids import short
from federation.node import peering
from federation.node.follow import RoundResult
from federation.sync.quota import (
    MAX_LOGS_PER_CLUB,
    MAX_NEW_CLUBS_PER_ROUND,
    MAX_NEW_LOGS_PER_ROUND,
    Limits,
    Quota,
)
from tests.attacks.relay import RelayedLog, RelayPeer, many_clubs, one_event_logs, open_relay
from tests.attacks.relay import standard_log as log_of
from tests.attacks.support import as_probe
from tests.conftest import Club
from tests.harness import Federation, Member
from tests.sync.hostile_support import Held, held, rows, still_serving, sync

pytestmark = pytest.mark.timeout(60)

PROBE_S = 2.0  # an anonymous frontier request answers within this during an attack


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        yield fed


@pytest.fixture
async def mallory(fed: Federation) -> AsyncIterator[RelayPeer]:
    async with open_relay(Club.make(b"mallory")) as peer:
        await peering.add(fed["a"].node, peer.invite())
        await fed["a"].refresh()
        yield peer


def entitled(before: Held, kept: list[RelayedLog]) -> Held:
    return {**before, **{r.id: rows(r.events) for r in kept}}


async def attacked_round(a: Member, peer: RelayPeer) -> RoundResult:
    """One round of a with the relay, while anonymous probes check that a answers."""
    round_ = asyncio.create_task(sync(a, peer.club.id))
    async with aiohttp.ClientSession() as http:
        while not round_.done():
            await as_probe(http, a, PROBE_S)
            await asyncio.sleep(0.05)
    return await round_


def logs_of(store_held: Held, relayed: list[RelayedLog]) -> list[RelayedLog]:
    return [r for r in relayed if r.id in store_held]


async def test_one_club_relaying_many_logs_is_held_to_its_quota(
    fed: Federation, mallory: RelayPeer
) -> None:
    a = fed["a"]
    spammer = Club.make(b"spammer")
    junk = one_event_logs(spammer, MAX_LOGS_PER_CLUB + 500)
    rest = [log_of(mallory.club, mallory.club.chain(3), "federation"), *many_clubs(3, b"by")]
    mallory.relay(junk + rest)
    before = await held(a)

    result = await attacked_round(a, mallory)

    after = await held(a)
    kept = logs_of(after, junk)
    assert len(kept) == MAX_LOGS_PER_CLUB  # per origin club, honestly exceeded
    assert after == entitled(before, kept + rest)  # the valid rest landed; nothing refused did
    why = f"the club holds {MAX_LOGS_PER_CLUB} logs here, the most one club may"
    assert result.warnings == [f"refused 500 logs of club {short(spammer.id)}: {why}"]
    assert not result.complete  # a warning, not an error: the round ran to its end
    refused = {r.id for r in junk} - {r.id for r in kept}
    assert a.service.rt.refused == refused

    # The next round does not ask for them again, and is complete.
    wants = len(mallory.wants)
    again = await sync(a, mallory.club.id)
    assert (again.complete, again.warnings, again.added) == (True, [], 0)
    assert len(mallory.wants) == wants  # nothing wanted: no events request at all
    assert await held(a) == after

    # `federation sync` (its own runtime) is refused again and says why; `status` shows it.
    synced = await cmd_sync(argparse.Namespace(node=str(a.root), peer="Mallory", json=True))
    assert synced.data[0]["warnings"] == result.warnings
    status = await cmd_status(argparse.Namespace(node=str(a.root), json=True))
    [peer] = [p for p in status.data["peers"] if p["name"] == "Mallory"]
    assert peer["quota_warning"] == result.warnings[0]
    shown = " ".join(" ".join(status.lines).split())  # status wraps long lines at 80 columns
    assert "over a quota" in shown
    assert why in shown
    await a.refresh()
    assert await held(a) == after

    # a still answers, and syncs with its honest partner as before.
    async with aiohttp.ClientSession() as http:
        await as_probe(http, a, PROBE_S)
    await still_serving(fed)


async def test_many_clubs_at_once_are_taken_a_round_at_a_time(
    fed: Federation, mallory: RelayPeer
) -> None:
    a = fed["a"]
    crowd = many_clubs(MAX_NEW_CLUBS_PER_ROUND + 50)
    rest = [log_of(mallory.club, mallory.club.chain(2), "federation")]
    mallory.relay(crowd + rest)
    before = await held(a)

    first = await attacked_round(a, mallory)

    after = await held(a)
    kept = logs_of(after, crowd)
    assert len(kept) == MAX_NEW_CLUBS_PER_ROUND  # per round, honestly exceeded
    assert after == entitled(before, kept + rest)
    why = f"{MAX_NEW_CLUBS_PER_ROUND} new clubs this round, the most a round takes"
    assert first.warnings == [f"refused 50 logs of 50 clubs: {why}"]
    assert not first.complete
    assert a.service.rt.refused == set()  # for this round only: asked for again

    second = await sync(a, mallory.club.id)
    assert second.complete
    assert second.warnings == []
    assert await held(a) == entitled(before, crowd + rest)
    await still_serving(fed)


async def test_many_logs_at_once_are_taken_a_round_at_a_time(
    fed: Federation, mallory: RelayPeer
) -> None:
    a = fed["a"]
    relayed = [
        log
        for i in range(4)
        for log in one_event_logs(Club.make(b"busy %d" % i), MAX_NEW_LOGS_PER_ROUND // 4 + 25)
    ]
    mallory.relay(relayed)
    before = await held(a)
    first = await attacked_round(a, mallory)
    kept = logs_of(await held(a), relayed)
    assert len(kept) == MAX_NEW_LOGS_PER_ROUND  # per round, honestly exceeded
    why = f"{MAX_NEW_LOGS_PER_ROUND} new logs this round, the most a round takes"
    assert first.warnings == [f"refused 100 logs of 4 clubs: {why}"]
    second = await sync(a, mallory.club.id)
    assert (second.complete, second.warnings) == (True, [])
    assert await held(a) == entitled(before, relayed)


async def test_the_node_holds_at_most_its_total_quotas(fed: Federation, mallory: RelayPeer) -> None:
    """The totals are large in production (5,000 clubs, 50,000 logs): here they are
    set just above what a holds, through the runtime's limits."""
    a = fed["a"]
    rt = a.service.rt
    quota = rt.quota()
    rt.limits = Limits(clubs_held=quota.clubs + 20, logs_held=quota.logs + 30)
    crowd = many_clubs(40)
    one_club = one_event_logs(Club.make(b"prolific"), 40)
    mallory.relay(crowd + one_club)
    before = await held(a)

    result = await attacked_round(a, mallory)

    after = await held(a)
    kept = logs_of(after, crowd + one_club)
    assert len(kept) == 30  # the total of logs
    assert len({r.club.id for r in kept}) <= 20 + 1  # the total of clubs
    assert after == entitled(before, kept)
    assert all("its quota" in w for w in result.warnings), result.warnings
    assert rt.refused == {r.id for r in crowd + one_club} - {r.id for r in kept}
    wants = len(mallory.wants)
    assert (await sync(a, mallory.club.id)).complete  # lasting: not asked for again
    assert len(mallory.wants) == wants
    assert await held(a) == after
    await still_serving(fed)


async def test_under_the_quotas_everything_lands(fed: Federation, mallory: RelayPeer) -> None:
    """The positive control: the same shapes, within every quota, land whole."""
    a = fed["a"]
    relayed = [
        *one_event_logs(Club.make(b"spammer"), 300),
        *many_clubs(MAX_NEW_CLUBS_PER_ROUND - 2),
        log_of(mallory.club, mallory.club.chain(3), "federation"),
    ]
    mallory.relay(relayed)
    before = await held(a)
    result = await attacked_round(a, mallory)
    assert (result.complete, result.warnings) == (True, [])
    assert await held(a) == entitled(before, relayed)
    assert a.service.rt.refused == set()


def test_our_own_club_and_a_blocked_club() -> None:
    """The rule itself: our own club's logs are never refused (a restored node catches
    up, protocol.md §3.6), whatever the counts; a blocked club's always are."""
    own, other, blocked = b"o" * 32, b"x" * 32, b"b" * 32
    zero = Limits(0, 0, 0, 0, 0)
    quota = Quota(clubs=9, logs=9, logs_of=Counter({other: 9}), own=own, limits=zero)
    assert quota.take(b"l" * 32, own, new_club=False) is None
    refusal = quota.take(b"m" * 32, other, new_club=False)
    assert refusal is not None
    assert refusal.lasting
    quota = Quota(0, 0, {}, own, blocked=frozenset({blocked}))
    assert quota.refuse_club(blocked) is not None
    assert quota.check(b"n" * 32, blocked, new_club=True) is not None
    assert quota.lasting == {b"n" * 32}
    assert quota.check(b"p" * 32, other, new_club=True) is None
