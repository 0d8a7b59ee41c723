"""Erasure by the origin reaches every copy (issue 8 item 4; protocol.md §3.5; DESIGN
principle 20), against real nodes on loopback speaking the wire.

The origin's `erase` posts a signed erasure event in the same log; every node that
takes it drops the payload in the same transaction, stops serving it and passes the
erasure on with the log. A relay offering the erased payload again gets nothing
stored. A node wiping its own copy of another club's event is told other copies
remain, and serves that log only up to the event before.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import aiohttp
import pytest

from federation.cli import club as cli_club
from federation.cli.output import Output
from federation.core.canonical import Audience, Kind
from federation.core.selection import roster_log_id
from federation.errors import ControlError
from federation.node import peering, projector
from federation.node.follow import RoundResult, sync_round
from federation.node.ingest import open_ingest
from federation.sync.messages import Batch, LogHead
from tests.attacks.support import as_probe
from tests.conftest import Club
from tests.harness import Federation, Member
from tests.sync.hostile import frontier_answer, open_hostile, stream_answer

pytestmark = pytest.mark.timeout(60)
PROBE_S = 2.0


async def pull(member: Member, peer_club: bytes) -> RoundResult:
    return await sync_round(
        member.service.rt, member.service.client(peer_club), known=None, wait_s=0.0
    )


async def erase(member: Member, event: bytes) -> Output:
    out = await cli_club.cmd_erase(argparse.Namespace(node=str(member.root), event=event.hex()))
    await member.refresh()
    return out


async def test_the_origins_erasure_reaches_partners_and_their_downstream(
    tmp_path: Path,
) -> None:
    async with (
        Federation.open(tmp_path, ["o", "h", "d"], tls=False, follow=False) as fed,
        open_hostile(Club.make(b"relay"), "Relay") as relay,
        aiohttp.ClientSession() as http,
    ):
        o, h, d = fed["o"], fed["h"], fed["d"]
        await fed.federate("o", "h")
        await fed.federate("h", "d")  # d is downstream of h, not a partner of o
        mistake = await o.post(Kind.ACTION, _action("sent by mistake"), "public")
        assert mistake.payload is not None
        await o.post(Kind.NOTE, {"text": "kept"}, "public")
        assert (await pull(h, o.club)).complete
        assert (await pull(d, h.club)).complete
        assert mistake.payload in await d.payloads()

        out = await erase(o, mistake.id)
        assert out.data["everywhere"] is True
        assert out.data["received_by"] == [h.club.hex()], "h fetched it from o; d did not"
        assert any("at least 1 club had received" in line for line in out.lines)
        assert mistake.payload not in await o.payloads()

        # The erasure travels with the log: h takes it, then d from h.
        assert (await pull(h, o.club)).complete
        assert (await pull(d, h.club)).complete
        for member in (h, d):
            assert mistake.payload not in await member.payloads(), member.name
            erased = await member.node.store.erasures(mistake.header.log)
            assert erased == {mistake.header.seq: True}
            assert await member.node.store.missing_payloads() == {}
            calendar = await projector.items(member.node.store, "calendar")
            assert [i.erased for i in calendar if i.event == mistake.id.hex()] == [True]  # type: ignore[union-attr]
        # Nobody serves it any more: a fresh club pulling from d gets the header only.
        late = await fed.add(tmp_path, "late", tls=False, follow=False)
        await fed.federate("d", "late")
        assert (await pull(late, d.club)).complete
        assert mistake.payload not in b"".join(bytes(r.body) for r in late.responses)

        # A hostile relay offers the erased payload again: nothing is stored.
        await peering.add(h.node, relay.invite())
        await h.refresh()
        log = mistake.header.log
        head = await h.node.store.events(log, 0, 100)
        relay.frontier = frontier_answer([LogHead(log, head[-1].header.seq, head[-1].id)])
        relay.events = stream_answer(Batch(log, [(mistake.signed, mistake.payload)]))
        await pull(h, relay.club.id)  # h wants nothing of a log whose head it holds
        async with open_ingest(h.node.store, dict(h.service.rt.genesis), h.node.clock) as ingest:
            taken, error = await ingest.run(log, [(mistake.signed, mistake.payload)])
        assert (taken, error, ingest.filled) == (1, None, 0)
        assert mistake.payload not in await h.payloads()
        await as_probe(http, h, PROBE_S)


async def test_a_roster_event_cannot_be_erased(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["o", "h"], tls=False, follow=False) as fed:
        o, h = fed["o"], fed["h"]
        await fed.federate("o", "h")
        roster = roster_log_id(o.club)
        (added,) = await o.node.store.events(roster, 0, 10)
        # Refused by the running node (node/control.py): its UsageError, carried back.
        with pytest.raises(ControlError, match="cannot be erased") as refused:
            await erase(o, added.id)
        assert (refused.value.kind, refused.value.exit_code) == ("UsageError", 2)
        # An erasure event naming it (signed by o, not through `erase`) erases nothing.
        fields = {"seq": 1, "event": added.id.hex()}
        await o.node.post(Kind.ERASURE, fields, Audience("federation"), "roster")
        await o.refresh()
        assert (await pull(h, o.club)).complete
        (held, _) = await h.node.store.events(roster, 0, 10)
        assert held.payload == added.payload
        assert h.service.rt.rosters[o.club] == frozenset({h.club})


async def test_wiping_another_clubs_event_here_says_other_copies_remain(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["o", "h", "d"], tls=False, follow=False) as fed:
        o, h, d = fed["o"], fed["h"], fed["d"]
        await fed.federate("o", "h")
        await fed.federate("h", "d")
        for text in ("one", "two", "three"):
            await o.post(Kind.NOTE, {"text": text}, "public")
        assert (await pull(h, o.club)).complete
        (_, two, _) = await h.node.store.events((await o.node.own_log(_public())).id, 0, 10)
        out = await erase(h, two.id)
        assert out.data["everywhere"] is False
        assert any("other copies remain" in line for line in out.lines)
        assert await h.node.store.erasures(two.header.log) == {2: False}
        assert await h.node.store.missing_payloads() == {}, "not asked for again"
        # h serves that log only up to the event before, never payload-less.
        rt = h.service.rt
        assert rt.heads(rt.visible(d.club))[two.header.log].seq == 1
        assert (await pull(d, h.club)).complete
        assert (await d.heads())[two.header.log] == 1
        # The origin still holds it, and d can have it from there.
        assert two.payload in await o.payloads()


def _action(what: str) -> dict[str, object]:
    return {"what": what, "starts": "2026-12-01T18:00:00+00:00", "where": "the depot"}


def _public() -> Audience:
    return Audience("public")
