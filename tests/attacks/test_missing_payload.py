"""A missing payload is never read as permission (issue 8 item 3; protocol.md §5.4,
§6.3; DESIGN principle 16), against real nodes on loopback speaking the wire.

A hostile relay strips the payload of the origin's `removed` roster event. The honest
node then holds that event without its payload: the origin's roster is unknown there,
and the origin's federation logs go to nobody but the origin (checked in the bytes
the removed club receives). Then the payload arrives again, from the origin or any
peer: it is filled in (checked against the header's hash and size) and the roster
takes effect. A campaign whose `closed` step is stripped shows as unknown, then
closed once filled in.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from federation.core import canonical
from federation.core.canonical import Kind
from federation.core.selection import roster_log_id
from federation.node import peering, projector
from federation.node.follow import RoundResult, sync_round
from federation.sync.messages import Batch, LogHead
from federation.views.campaigns import UNKNOWN
from tests.attacks.support import as_probe
from tests.conftest import Club
from tests.harness import Federation, Member
from tests.sync.hostile import HostilePeer, frontier_answer, open_hostile, stream_answer

pytestmark = pytest.mark.timeout(60)
PROBE_S = 2.0  # the honest node answers an anonymous frontier within this, meanwhile


async def pull(member: Member, peer_club: bytes) -> RoundResult:
    return await sync_round(
        member.service.rt, member.service.client(peer_club), known=None, wait_s=0.0
    )


def received(member: Member) -> bytes:
    return b"".join(bytes(r.body) for r in member.responses)


async def relay_stripped(
    relay: HostilePeer, origin: Member, victim: Member, logs: list[bytes], strip: set[bytes]
) -> None:
    """Script the relay: the origin's `logs` from the victim's heads on (overlapping by
    one, as §6.2 asks), the events whose ids are in `strip` without their payload."""
    heads, batches = [], []
    held = await victim.heads()
    for log in logs:
        events = await origin.node.store.events(log, 0, 10_000)
        heads.append(LogHead(log, events[-1].header.seq, events[-1].id))
        start = max(held.get(log, 0) - 1, 0)
        batch = [(e.signed, None if e.id in strip else e.payload) for e in events[start:]]
        batches.append(Batch(log, batch))
    relay.frontier = frontier_answer(heads)
    relay.events = stream_answer(*batches)


async def test_a_stripped_removed_roster_event_sends_nothing_to_the_removed_club(
    tmp_path: Path,
) -> None:
    names = ["o", "h", "x", "y", "z"]
    async with (
        Federation.open(tmp_path, names, tls=False, follow=False) as fed,
        open_hostile(Club.make(b"relay"), "Relay") as relay,
        aiohttp.ClientSession() as http,
    ):
        o, h, x, y = fed["o"], fed["h"], fed["x"], fed["y"]
        for other in ("h", "x", "y", "z"):
            await fed.federate("o", other)  # o's roster: h, x, y, z
        for other in ("x", "y", "z"):
            await fed.federate("h", other)  # h relays to x, y and z
        await peering.add(h.node, relay.invite())
        await h.refresh()
        await o.post(Kind.NOTE, {"text": "before"}, "federation")
        assert (await pull(h, o.club)).complete
        roster, federation = roster_log_id(o.club), (await o.node.own_log(_fed())).id

        # o removes x, then writes a note x must never receive.
        await peering.remove(o.node, x.club.hex())
        await o.refresh()
        removed = (await o.node.store.events(roster, 0, 100))[-1]
        secret = (await o.post(Kind.NOTE, {"text": "after x left"}, "federation")).payload
        assert secret is not None

        # The relay strips the `removed` payload; h takes the rest.
        await relay_stripped(relay, o, h, [roster, federation], {removed.id})
        before = await h.heads()
        result = await pull(h, relay.club.id)
        assert result.added == 2, result
        held = await h.node.store.event_at(roster, removed.header.seq)
        assert held is not None
        assert held.payload is None
        assert h.service.rt.rosters[o.club] is None, "unknown, not the roster before removal"
        assert (await h.heads()).keys() == before.keys(), "nothing beyond what it is owed"
        await as_probe(http, h, PROBE_S)

        # x asks h: nothing of o's federation log reaches it, not even its head.
        assert (await pull(x, h.club)).complete
        assert secret not in received(x)
        assert federation not in received(x)
        assert federation not in await x.heads()
        # Nor y, still in o's roster: an unknown roster lets nobody but o in.
        await pull(y, h.club)
        assert secret not in received(y)

        # The payload comes back from any peer holding it: here z, an honest relay.
        assert (await pull(fed["z"], o.club)).complete
        filled = await pull(h, fed["z"].club)
        assert filled.complete
        held = await h.node.store.event_at(roster, removed.header.seq)
        assert held is not None
        assert held.payload == removed.payload
        assert h.service.rt.rosters[o.club] == frozenset({h.club, y.club, fed["z"].club})

        # Positive control: y (in the roster) now receives the note through h; x not.
        assert (await pull(y, h.club)).complete
        assert secret in received(y)
        assert (await pull(x, h.club)).complete
        assert secret not in received(x)
        assert federation not in await x.heads()


async def test_a_filled_in_payload_must_match_the_header(tmp_path: Path) -> None:
    async with (
        Federation.open(tmp_path, ["o", "h"], tls=False, follow=False) as fed,
        open_hostile(Club.make(b"relay"), "Relay") as relay,
    ):
        o, h = fed["o"], fed["h"]
        await fed.federate("o", "h")
        await peering.add(h.node, relay.invite())
        await h.refresh()
        await o.post(Kind.NOTE, {"text": "first"}, "federation")
        assert (await pull(h, o.club)).complete
        note = await o.post(Kind.NOTE, {"text": "keep"}, "federation")
        log = note.header.log
        await relay_stripped(relay, o, h, [log], {note.id})
        await pull(h, relay.club.id)
        assert await h.node.store.missing_payloads() == {log: note.header.seq}
        # The relay now offers other bytes for it: refused, nothing stored.
        relay.frontier = frontier_answer([LogHead(log, 2, note.id)])
        relay.events = stream_answer(Batch(log, [(note.signed, b'{"text":"lies"}')]))
        with pytest.raises(Exception, match="hash"):
            await pull(h, relay.club.id)
        assert await h.node.store.missing_payloads() == {log: note.header.seq}
        # The origin's bytes fill it in.
        assert (await pull(h, o.club)).complete
        held = await h.node.store.event_at(log, 2)
        assert held is not None
        assert held.payload == note.payload
        assert canonical.sha256(note.payload or b"") == held.header.payload_hash
        assert await h.node.store.missing_payloads() == {}


async def test_a_stripped_closed_step_shows_unknown_then_closed(tmp_path: Path) -> None:
    async with (
        Federation.open(tmp_path, ["o", "h"], tls=False, follow=False) as fed,
        open_hostile(Club.make(b"relay"), "Relay") as relay,
    ):
        o, h = fed["o"], fed["h"]
        await fed.federate("o", "h")
        await peering.add(h.node, relay.invite())
        await h.refresh()
        await o.post(Kind.CAMPAIGN, {"campaign": "rent", "op": "created"}, "federation")
        assert (await pull(h, o.club)).complete
        closed = await o.post(Kind.CAMPAIGN, {"campaign": "rent", "op": "closed"}, "federation")
        await relay_stripped(relay, o, h, [closed.header.log], {closed.id})
        await pull(h, relay.club.id)
        (shown,) = await projector.campaigns(h.node.store)
        assert shown.status == UNKNOWN, "a missing `closed` is not read as open"
        assert (await pull(h, o.club)).complete
        (shown,) = await projector.campaigns(h.node.store)
        assert shown.status == "closed"


def _fed() -> canonical.Audience:
    return canonical.Audience("federation")
