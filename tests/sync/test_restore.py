"""The restore guard (protocol.md §3.6): a node restored from an old backup must catch
up with what its peers hold of its own logs before it writes, or it forks them."""

from __future__ import annotations

import shutil
from pathlib import Path

from federation.core.canonical import Kind
from federation.node.follow import note_own_heads, sync_round
from federation.store.meta import holding_back, restore_guards
from federation.sync.messages import Frontier, LogHead
from tests.harness import Federation, Member


async def pull(member: Member, peer: Member) -> None:
    """One `federation sync` round of member with peer."""
    client = member.service.client(peer.club)
    result = await sync_round(member.service.rt, client, known=None, wait_s=0.0)
    assert result.complete


async def test_a_restored_node_catches_up_before_it_writes(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b"], follow=False) as fed:
        await fed.federate("a", "b")
        await fed["a"].post(Kind.NOTE, {"text": "before the backup"}, "federation")
        await pull(fed["b"], fed["a"])

        # Back up a, then a goes on writing and b receives it.
        root = fed["a"].root
        await fed.stop("a")
        backup = tmp_path / "backup"
        shutil.copytree(root, backup)
        a = await fed.restart("a", follow=False)
        lost = await a.post(Kind.NOTE, {"text": "after the backup"}, "federation")
        await pull(fed["b"], a)

        # The laptop dies; the club restores the backup.
        await fed.stop("a")
        shutil.rmtree(root)
        shutil.copytree(backup, root)
        a = await fed.restart("a", follow=False)
        b = fed["b"]

        # One look at b's frontier shows a's own federation log beyond a's head: a
        # claim, so a warning for `status`, which holds nothing back (§3.6).
        frontier = await a.service.client(b.club).frontier(None, 0.0)
        assert isinstance(frontier, Frontier)
        assert frontier.logs is not None
        await note_own_heads(a.service.rt, a.service.rt.peers[b.club], frontier.logs)
        [claim] = await restore_guards(a.node.store, [(lost.header.log, 1)])
        assert (claim.seq, claim.peer, claim.evidence) == (2, "Club b", False)
        assert await holding_back(a.node.store, lost.header.log, 1) is None

        # Catching up (the round asks b for those events) brings a's own event back
        # from b, and clears the warning; then writing forks nothing.
        await pull(a, b)
        assert await restore_guards(a.node.store, [(lost.header.log, 2)]) == []
        assert lost.payload in await a.payloads()
        await a.refresh()
        after = await a.post(Kind.NOTE, {"text": "after catching up"}, "federation")
        assert after.header.seq == 3
        await pull(b, a)
        assert after.payload in await b.payloads()
        assert await b.node.store.forks() == []
        assert await a.node.store.forks() == []


async def test_a_peer_lying_about_our_private_log_blocks_nothing(tmp_path: Path) -> None:
    """No peer can hold our private log, so a frontier claiming it is ignored."""
    async with Federation.open(tmp_path, ["a", "b"], follow=False) as fed:
        await fed.federate("a", "b")
        a, b = fed["a"], fed["b"]
        secret = await a.post(Kind.NOTE, {"text": "ours alone"}, "private")
        lie = [LogHead(secret.header.log, 1_000_000, bytes(32))]
        await note_own_heads(a.service.rt, a.service.rt.peers[b.club], lie)
        after = await a.post(Kind.NOTE, {"text": "still ours"}, "private")
        assert after.header.seq == 2
