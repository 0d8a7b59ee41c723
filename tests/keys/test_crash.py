"""A key change interrupted by a crash (protocol.md §2.2): the next key is written
beside the key file first; at the next unlock the node finishes the change if the keys
log holds the key event, and rolls it back if not. Either way it signs with the key in
force."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.core import canonical
from federation.core.crypto import SigningKey
from federation.node import keys as node_keys
from federation.node.node import Node, init_node
from tests.keys.support import RECOVERY_SEED


async def make_node(root: Path) -> Path:
    await init_node(
        root,
        name="Club c",
        listen="127.0.0.1:0",
        passphrase=None,
        plain_http=True,
        recovery_seed=RECOVERY_SEED,
    )
    return root


async def test_a_crash_before_the_key_event_rolls_back(tmp_path: Path) -> None:
    root = await make_node(tmp_path / "c")
    async with await Node.open(root) as node:
        old = node.unlock().public
        node.stage_signing_key(SigningKey(canonical.sha256(b"never used")))
    assert (root / "club.key.next").exists()
    async with await Node.open(root) as node:
        assert node.unlock().public == old
    assert not (root / "club.key.next").exists()


async def test_a_crash_after_the_key_event_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = await make_node(tmp_path / "c")

    def crash(self: Node, key: SigningKey) -> None:
        raise RuntimeError("power cut")

    async with await Node.open(root) as node:
        old = node.unlock().public
        with monkeypatch.context() as m:
            m.setattr(Node, "replace_signing_key", crash)
            with pytest.raises(RuntimeError, match="power cut"):
                await node_keys.rotate(node)
    assert (root / "club.key.next").exists()
    async with await Node.open(root) as node:
        new = node.unlock().public
        assert new != old
        assert node.keys.is_signing_key(node.club, new)
    assert not (root / "club.key.next").exists()
