"""An agreement record stays checkable offline when a club has changed its key
(protocol.md §3.8, format 2): b rotates before it accepts, so its acceptance is signed
by its new key; the record carries b's key events and the first event id of b's log,
and without them the same acceptance does not verify."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from federation.errors import InvalidEventError
from federation.node import keys as node_keys
from federation.node import proposals
from federation.views.agreement import FORMAT, FORMAT_KEYS, check_record
from tests.harness import Federation

pytestmark = pytest.mark.timeout(90)


async def test_a_record_carries_the_key_events_of_a_club_that_rotated(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b", "c"], tls=False) as fed:
        for x, y in [("a", "b"), ("a", "c"), ("b", "c")]:
            await fed.federate(x, y)
        a, b, c = (fed[n] for n in "abc")
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
        pid = (
            await proposals.propose(
                c.node, title="Joint stall", invited=[a.club, b.club], deadline=deadline
            )
        ).hex()
        await c.refresh()

        async def state(m: str) -> str | None:
            found = [o for o in await proposals.outcomes(fed[m].node) if o.proposal == pid]
            return found[0].state if found else None

        async def everywhere(wanted: str) -> bool:
            return all([await state(m) == wanted for m in "abc"])

        await fed.wait_for(lambda: everywhere("open"), what="the proposal at a and b")
        rotated = await node_keys.rotate(b.node)
        await b.service.rt.refresh()
        for m in (a, b):
            await proposals.answer(m.node, pid, "accepted", "we bring a table")
            await m.refresh()
        await fed.wait_for(lambda: everywhere("agreed"), what="agreed on all three")

        data = await proposals.export(c.node, pid)
        document = msgspec.json.decode(data)
        assert document["format"] == FORMAT_KEYS
        checked = check_record(data)
        assert sorted(checked.accepted) == sorted(m.club.hex() for m in (a, b, c))
        assert rotated.new != rotated.old

        # Without b's key events (a format 1 record of the same steps) it fails: the
        # acceptance is signed by a key the genesis does not name.
        del document["keys"], document["firsts"]
        document["format"] = FORMAT
        with pytest.raises(InvalidEventError, match="does not verify"):
            check_record(msgspec.json.encode(document))
        # A record whose carried key events were altered fails too.
        tampered = msgspec.json.decode(data)
        [b_keys] = [k for k in tampered["keys"] if k]
        b_keys[0]["payload"] = b_keys[0]["payload"][:-4] + "AAA="
        with pytest.raises(InvalidEventError):
            check_record(msgspec.json.encode(tampered))
