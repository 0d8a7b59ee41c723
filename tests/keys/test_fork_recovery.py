"""Fork recovery, end to end after a real fork (protocol.md §2.2, §3.6).

Club a's node is restored from an old copy of its directory and posts again: the
club's public log forks, and both a and its peer b freeze it. `federation verify`
fails while the fork is unresolved. `key rotate` cuts the log just below the fork:
both branches fall outside the old key's window, every node unfreezes the log, and
the club carries it on under its new key; `verify` passes again.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from federation.cli.main import main
from federation.core.canonical import Kind
from federation.node import keys as node_keys
from tests.harness import Federation
from tests.keys.support import public_log, start_club, texts


async def verify_exit(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`federation verify` as its own process would run it (its own event loop)."""
    code = await asyncio.to_thread(main, ["--node", str(root), "verify"])
    return code, capsys.readouterr().out


async def test_a_forked_log_is_carried_on_by_a_rotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Federation.open(tmp_path, ["b"], tls=False) as fed:
        a = await start_club(fed, tmp_path, "a")
        await fed.federate("a", "b")
        log = public_log(a.club)
        await a.post(Kind.NOTE, {"text": "one"}, "public")
        await fed.stop("a")
        shutil.copytree(tmp_path / "a", tmp_path / "old-copy")
        a = await fed.start(tmp_path / "a", "a", port=a.port)
        await a.post(Kind.NOTE, {"text": "two"}, "public")

        async def b_has(n: int) -> bool:
            return len(await texts(fed["b"].node.store, log)) == n

        await fed.wait_for(lambda: b_has(2), what="b has a's second note")

        # Restored from the old copy, without a sync first: the next post forks.
        await fed.stop("a")
        shutil.rmtree(tmp_path / "a")
        shutil.copytree(tmp_path / "old-copy", tmp_path / "a")
        a = await fed.start(tmp_path / "a", "a", port=a.port, follow=False)
        await a.post(Kind.NOTE, {"text": "two, again"}, "public")
        await a.service.rt.refresh()
        a.start_following()

        async def frozen(member: str) -> bool:
            record = await fed[member].node.store.log(log)
            return record is not None and record.frozen

        await fed.wait_for(lambda: frozen("b"), what="b froze a's forked log")
        await fed.wait_for(lambda: frozen("a"), what="a froze its own forked log")
        code, out = await verify_exit(tmp_path / "a", capsys)
        assert code == 1
        assert "federation key rotate" in out

        result = await node_keys.rotate(a.node)
        assert result.dropped == {"public": 1}  # our own "two, again", outside the window
        await a.service.rt.refresh()
        assert not await frozen("a")
        await a.post(Kind.NOTE, {"text": "two, new key"}, "public")
        await a.service.rt.refresh()

        async def carried_on(member: str) -> bool:
            held = await texts(fed[member].node.store, log)
            return held == ['{"text":"one"}', '{"text":"two, new key"}']

        await fed.wait_for(lambda: carried_on("b"), what="b follows the log under the new key")
        assert not await frozen("b")
        forks = await fed["b"].node.store.forks()
        assert [f.resolved for f in forks] == [True]  # evidence kept, resolved
        held = {h.seq for h in await fed["b"].node.store.held_apart()}
        assert held == {2}
        await fed.stop("a")
        await fed.stop("b")
    code, out = await verify_exit(tmp_path / "a", capsys)
    assert code == 0, out
    code, out = await verify_exit(tmp_path / "b", capsys)
    assert code == 0, out
    assert "resolved" in out
