"""The running node's caches: rosters fold on after our own ingest, and fold again
from the start after a change by another process (which may have erased)."""

from __future__ import annotations

from pathlib import Path

from federation.core.canonical import Kind
from federation.core.selection import roster_log_id
from federation.node.follow import sync_round
from federation.store.sqlite import SqliteStore
from tests.harness import Federation, Member
from tests.store_access import node_store_key


async def pull(member: Member, peer: Member) -> None:
    client = member.service.client(peer.club)
    result = await sync_round(member.service.rt, client, known=None, wait_s=0.0)
    assert result.complete


async def test_rosters_fold_on_after_ingest_and_again_after_an_erase(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b", "c"], follow=False) as fed:
        a, b, c = fed["a"], fed["b"], fed["c"]
        await fed.federate("a", "b")  # a's roster: b
        rt = b.service.rt
        await pull(b, a)
        assert rt.rosters[a.club] == frozenset({b.club})
        kept = rt.rosters[a.club]
        await a.post(Kind.NOTE, {"text": "not a roster change"}, "federation")
        await pull(b, a)
        assert rt.rosters[a.club] is kept, "an unchanged roster log is not folded again"

        await a.add_peer(c)  # a's roster: b and c, by a new roster event
        await pull(b, a)
        assert rt.rosters[a.club] == frozenset({b.club, c.club})

        # Another process (the CLI) erases the event that added c, in b's store.
        events = await b.node.store.events(roster_log_id(a.club))
        (added_c,) = [e for e in events if e.payload and c.club.hex().encode() in e.payload]
        key = node_store_key(b.root)
        async with await SqliteStore.open(b.root / "store.sqlite", key=key) as cli:
            assert await cli.erase(added_c.id)
        await rt.refresh(appended_only=True)  # as if an ingest had just committed
        # It refolds, and a roster event without its payload makes the roster unknown
        # (protocol.md §5.4): not {b}, which would read the missing payload as "no c".
        assert rt.rosters[a.club] is None, "a change by another process refolds"
