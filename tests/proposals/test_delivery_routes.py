"""`federation proposal show` tells the proposer how each invited club can be reached
(protocol.md §3.7, Delivery): a peer, through the peers whose rosters list it, or no
route at all, said plainly, so a proposal that cannot arrive is not left to expire.

Real nodes over HTTP on 127.0.0.1: a peers with b, b with c; d peers with nobody.
a invites b, c and d.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path

import pytest

from federation.cli.main import main
from federation.node import proposals
from tests.harness import Federation

pytestmark = pytest.mark.timeout(60)


async def test_show_says_which_clubs_have_no_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Federation.open(tmp_path, ["a", "b", "c", "d"], tls=False) as fed:
        await fed.federate("a", "b")
        await fed.federate("b", "c")
        a, b, c, d = (fed[n] for n in "abcd")
        pid = (
            await proposals.propose(
                a.node,
                title="Rent strike bloc",
                invited=[b.club, c.club, d.club],
                deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=7),
            )
        ).hex()

        async def routes() -> dict[str, object]:
            shown = await proposals.delivery(a.node, await proposals.find(a.node, pid))
            return {club: v["route"] for club, v in shown.items()}

        async def c_via_b() -> bool:
            return (await routes()).get(c.club.hex()) == "via Club b"

        # a learns from b's roster (b's roster log reaches a, b's peer) that b lists c.
        await fed.wait_for(c_via_b, what="b's roster, listing c, at a")
        assert await routes() == {
            b.club.hex(): "peer",
            c.club.hex(): "via Club b",
            d.club.hex(): "none",
        }

        capsys.readouterr()
        show = ["--node", str(a.root), "proposal", "show", pid[:12]]
        assert await asyncio.to_thread(main, show) == 0
        # Lines wrapped to fit the terminal go on, indented, on the next: join them back.
        out = re.sub(r"\n {4,}", " ", capsys.readouterr().out)
        # Clubs by name; d, whose name a does not know, by the start of its id.
        lines = {
            club: [line for line in out.splitlines() if f"delivery to {club} (" in line]
            for club in ("Club b", "Club c", f"club {d.club.hex()[:8]}")
        }
        assert all(len(found) == 1 for found in lines.values()), out
        (to_b,), (to_c,), (to_d,) = lines.values()
        assert "(peer)" in to_b
        assert "NO ROUTE" not in to_b
        assert "(via Club b)" in to_c
        assert "NO ROUTE" not in to_c
        assert "(none)" in to_d
        assert "NO ROUTE: no peer of ours lists this club" in to_d
        assert f"{pid[:8]} unknown" in to_d
