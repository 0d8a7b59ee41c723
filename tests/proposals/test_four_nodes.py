"""End to end over four real nodes (HTTP on 127.0.0.1): the issue's story.

c proposes a joint campaign to a and b; a amends; b and c accept the amended version;
it is agreed on all three, and its record verifies offline. d federates with all
three but is not invited: neither its store nor any byte it received holds the
proposal's text, while a federation note of c's reaches it (the positive control).
A forged acceptance never reaches the view: ingest refuses it (protocol.md §4.1).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from federation.cli.main import main
from federation.core import canonical
from federation.core.canonical import Audience, Kind
from federation.core.events import sign_event
from federation.core.log import descriptor_bytes
from federation.core.payloads import make_payload
from federation.errors import InvalidEventError
from federation.node import archive, proposals
from federation.views.agreement import check_record
from tests.harness import Federation, Member

pytestmark = pytest.mark.timeout(90)

TITLE = "Tenants bloc at the March 9 rally"
AMENDED = "Tenants bloc and stall at the March 9 rally"


async def _state(m: Member, pid: str) -> tuple[str, str] | None:
    found = [o for o in await proposals.outcomes(m.node) if o.proposal == pid]
    return (found[0].state, found[0].version.id) if found else None


async def test_two_clubs_answer_a_third_and_a_fourth_never_sees_it(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b", "c", "d"], tls=False) as fed:
        for x, y in [("a", "b"), ("a", "c"), ("b", "c"), ("a", "d"), ("b", "d"), ("c", "d")]:
            await fed.federate(x, y)
        a, b, c, d = (fed[n] for n in "abcd")
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
        pid = (
            await proposals.propose(
                c.node,
                title=TITLE,
                invited=[a.club, b.club],
                deadline=deadline,
                asks={"*": "a bloc of eight"},
            )
        ).hex()
        await c.refresh()
        control = await c.post(Kind.NOTE, {"text": "CONTROL note for the federation"}, "federation")

        async def everywhere(state: str, version: str) -> bool:
            return all([await _state(m, pid) == (state, version) for m in (a, b, c)])

        await fed.wait_for(lambda: everywhere("open", pid), what="the proposal at a and b")
        shown = await proposals.delivery(c.node, await proposals.find(c.node, pid))
        assert {v["route"] for v in shown.values()} == {"peer"}

        # A forged acceptance "from b" (signed with a's key) is refused by ingest at c.
        audience = tuple(sorted((a.club, b.club, c.club)))
        d_b = descriptor_bytes(b.club, "forged", Audience("clubs", audience))
        forged = sign_event(
            a.node.unlock(),
            club=b.club,
            log=canonical.log_id(d_b),
            head=None,
            time_us=c.node.clock(),
            kind=Kind.PROPOSAL,
            payload=make_payload(
                Kind.PROPOSAL, {"op": "accepted", "proposal": pid, "version": pid}
            ),
        )
        lines = [
            archive._encoder.encode(archive.LogLine(canonical.log_id(d_b).hex(), d_b.hex()))
            + b"\n",
            archive.event_line(forged),
        ]
        before = await proposals.find(c.node, pid)
        with pytest.raises(InvalidEventError, match="not authorised"):
            await archive.import_lines(c.node.store, c.node.genesis, lines, c.node.clock())
        assert await proposals.find(c.node, pid) == before

        v2 = (await proposals.amend(a.node, pid, {"title": AMENDED})).hex()
        await a.refresh()
        await fed.wait_for(lambda: everywhere("open", v2), what="the amendment everywhere")
        await proposals.answer(b.node, pid, "accepted", "eight people and a banner")
        await b.refresh()
        await proposals.answer(c.node, pid, "accepted", "the stall")
        await c.refresh()
        await fed.wait_for(lambda: everywhere("agreed", v2), what="agreed on all three")

        record = tmp_path / "agreement.json"
        # The CLI, in a thread as a separate process would run it: export, then verify offline.
        export = ["--node", str(c.root), "proposal", "export", pid[:12], "-o", str(record)]
        assert await asyncio.to_thread(main, export) == 0
        assert await asyncio.to_thread(main, ["proposal", "verify", str(record)]) == 0
        checked = check_record(record.read_bytes())
        assert (checked.version.id, sorted(checked.accepted)) == (
            v2,
            sorted(m.club.hex() for m in (a, b, c)),
        )

        # The positive control reached d; the proposal's text never did.
        await fed.wait_for(
            lambda: any(b"CONTROL note" in chunk for chunk in d.received), what="the control"
        )
        assert control.payload in await d.payloads()
        received = b"".join(d.received)
        for text in (TITLE.encode(), AMENDED.encode(), b"the stall", pid.encode()):
            assert text not in received
            assert not any(text in p for p in await d.payloads())
        assert await proposals.outcomes(d.node) == []
