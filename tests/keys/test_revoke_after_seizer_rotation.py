"""The seizer rotated the club's key first (protocol.md §2.2): its rotation reached the
club's own node, whose key is then no longer in force. The club still revokes the key
its node holds: the revocation takes the seizer's place in the keys log, and the
seizer's key signs nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from federation.cli.main import main
from federation.core import canonical, crypto
from federation.core.canonical import Audience, Kind
from federation.core.events import sign_event
from federation.core.keys import (
    CUT_ENTRY_BYTES,
    CutMark,
    key_log_id,
    padding_entries,
    seal_cut,
)
from federation.core.payloads import make_payload
from federation.node import keys as node_keys
from federation.node.node import Node, init_node
from tests.keys.support import RECOVERY, RECOVERY_SEED, public_log


async def test_a_revocation_replaces_the_seizers_rotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "k"
    await init_node(
        root,
        name="Club k",
        listen="127.0.0.1:0",
        passphrase=None,
        plain_http=True,
        recovery_seed=RECOVERY_SEED,
    )
    async with await Node.open(root) as node:
        seized = node.unlock()
        _, first = await node.post(Kind.NOTE, {"text": "legit"}, Audience("public"))
        # What the seizer signs with the copied key, and a sync brings here:
        keys_log = await node.own_log(Audience("public"), "keys")
        theirs = crypto.SigningKey(canonical.sha256(b"the seizer's own key"))
        mark = CutMark(public_log(node.club), first.id, 1, first.id)
        cut = seal_cut(1, [mark], bytes(padding_entries(1) * CUT_ENTRY_BYTES))
        payload = make_payload(
            Kind.KEY,
            {
                "action": "rotate",
                "key": theirs.public.hex(),
                "revoked": seized.public.hex(),
                "cut": [e.hex() for e in cut],
            },
        )
        rotation = sign_event(
            seized,
            club=node.club,
            log=keys_log.id,
            head=None,
            time_us=node.clock(),
            kind=Kind.KEY,
            payload=payload,
        )
        await node.store.append([rotation])
        await node.load_clubs()
        assert node.keys.signing_key(node.club) == theirs.public

        result = await node_keys.revoke(node, RECOVERY)
        assert result.old == seized.public
        assert result.seq == 1  # in the seizer's place
        events = await node.store.events(key_log_id(node.club))
        assert [e.id for e in events] == [result.event]
        assert [h.seq for h in await node.store.held_apart()] == [1]
        assert node.keys.signing_key(node.club) == result.new
        assert not node.keys.may_sign(node.club, theirs.public)
        assert node.unlock().public == result.new
    # status, log and show say it in words (and --json)
    capsys.readouterr()

    async def cli_text(*args: str) -> str:
        code = await asyncio.to_thread(main, ["--node", str(root), *args])
        out = capsys.readouterr()
        assert code == 0, out.err
        return out.out

    async def cli(*args: str) -> Any:
        return json.loads(await cli_text(*args))

    status = await cli("status", "--json")
    assert status["signing_key"] == {"key": result.new.hex(), "since": 1}
    assert [h["seq"] for h in status["held_apart"]] == [1]
    text = await cli_text("status")
    assert f"signing  key {result.new.hex()[:12]}" in text
    assert "held apart, not relayed" in text
    assert "held apart, not relayed" in await cli_text("log")
    shown = await cli("show", rotation.id.hex()[:12], "--json")
    assert shown["held_apart"] is True
    assert "replaced by the club's revocation" in shown["reason"]
