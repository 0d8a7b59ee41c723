"""A restored node cannot fork its club's logs (protocol.md §3.6): real nodes on
127.0.0.1, a real backup file and the real `restore` command. The club backs up, goes
on posting (peer b receives it), loses the machine and restores the old backup: the
restored node refuses to post until a sync has shown it its logs' heads, then posts
at the right seq, and b finds no fork."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from federation.core.canonical import Kind
from federation.errors import UsageError
from federation.node.follow import sync_round
from federation.node.keyfile import PASSPHRASE_ENV
from federation.store.meta import restored_logs
from tests.harness import Federation, Member
from tests.seized.support import PASSPHRASE, cli_quiet, ok


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.delenv("FEDERATION_NODE", raising=False)


async def pull(member: Member, peer: Member) -> None:
    """One `federation sync` round of member with peer."""
    client = member.service.client(peer.club)
    result = await sync_round(member.service.rt, client, known=None, wait_s=0.0)
    assert result.complete


async def federation_log(member: Member) -> tuple[bytes, int]:
    for record in await member.node.store.logs():
        if record.club == member.club and record.name == "federation":
            return record.id, record.head.seq if record.head else 0
    raise AssertionError("no federation log")


async def test_a_restored_node_cannot_fork_its_logs(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b"], follow=False) as fed:
        await fed.federate("a", "b")
        await fed["a"].post(Kind.NOTE, {"text": "before the backup"}, "federation")
        await pull(fed["b"], fed["a"])

        # The backup is taken while a runs (its service holds the store).
        backup = tmp_path / "a.backup"
        ok(await asyncio.to_thread(cli_quiet, fed["a"].root, "backup", "-o", str(backup)))

        # a goes on posting after the backup, and b receives it: the lost writes.
        lost = await fed["a"].post(Kind.NOTE, {"text": "after the backup"}, "federation")
        await pull(fed["b"], fed["a"])

        # The laptop is gone; the club restores the old backup in a new directory.
        root = fed["a"].root
        await fed.stop("a")
        root.rename(tmp_path / "seized")
        ok(await asyncio.to_thread(cli_quiet, None, "restore", str(backup), str(root)))
        a = await fed.restart("a", follow=False)
        log, held = await federation_log(a)
        assert held == lost.header.seq - 1  # the backup is behind what b holds

        # Posting now would fork the log at seq 2: refused, saying what to do.
        with pytest.raises(UsageError, match="run `federation sync` first"):
            await a.post(Kind.NOTE, {"text": "the fork"}, "federation")
        assert (await federation_log(a))[1] == held

        # A sync with b brings the lost event back and shows the head: a may write.
        await pull(a, fed["b"])
        assert lost.payload in await a.payloads()
        assert log not in await restored_logs(a.node.store)
        event = await a.post(Kind.NOTE, {"text": "after the restore"}, "federation")
        assert event.header.seq == lost.header.seq + 1
        assert event.header.prev == lost.id

        # b takes it as the next event: nothing forked anywhere.
        await pull(fed["b"], a)
        assert await fed["b"].node.store.forks() == []
        assert await a.node.store.forks() == []
        assert event.payload in await fed["b"].payloads()

        # The private log no peer holds stays held back until the operator declares it.
        with pytest.raises(UsageError, match="declare-no-copies private"):
            await a.post(Kind.NOTE, {"text": "a private note"}, "private")
        run = await asyncio.to_thread(cli_quiet, root, "declare-no-copies", "private")
        ok(run)
        await a.post(Kind.NOTE, {"text": "a private note"}, "private")


async def test_a_peer_that_holds_exactly_our_head_confirms_it(tmp_path: Path) -> None:
    """No lost writes: the peer's head is the restored head, and one sync lifts it."""
    async with Federation.open(tmp_path, ["a", "b"], follow=False) as fed:
        await fed.federate("a", "b")
        await fed["a"].post(Kind.NOTE, {"text": "one"}, "public")
        await pull(fed["b"], fed["a"])
        backup = tmp_path / "a.backup"
        ok(await asyncio.to_thread(cli_quiet, fed["a"].root, "backup", "-o", str(backup)))
        root = fed["a"].root
        await fed.stop("a")
        root.rename(tmp_path / "old")
        ok(await asyncio.to_thread(cli_quiet, None, "restore", str(backup), str(root)))
        a = await fed.restart("a", follow=False)
        with pytest.raises(UsageError, match="federation sync"):
            await a.post(Kind.NOTE, {"text": "two"}, "public")
        await pull(a, fed["b"])
        event = await a.post(Kind.NOTE, {"text": "two"}, "public")
        assert event.header.seq == 2
