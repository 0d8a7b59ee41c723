"""Bad key input is refused with a clear message and changes nothing (protocol.md §2.2).

Through the command line: a revocation not made with the recovery secret, too few or
mismatched shares, a point in the future. Through ingest (what a peer sends): a
revocation not signed by the recovery key, a rotation chain with a gap, a replayed
old rotation, a rotation back to an old key; and a key event outside the key log,
which is a valid event that changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from unittest import mock

import pytest

from federation.cli.main import main
from federation.core import canonical
from federation.core.canonical import Kind
from federation.core.crypto import SigningKey
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.keys import key_log_descriptor, key_log_id
from federation.core.payloads import kind_from_name, make_payload
from federation.errors import UsageError
from federation.node import keys as node_keys
from federation.node import recovery
from federation.node.ingest import Ingest
from federation.node.keylog import load_histories
from federation.node.node import Node, init_node
from federation.node.system import system_clock
from federation.store.memory import MemoryStore
from tests.keys.support import RECOVERY, RECOVERY_SEED, public_log


async def make_node(root: Path) -> Path:
    await init_node(
        root,
        name="Club k",
        listen="127.0.0.1:0",
        passphrase=None,
        plain_http=True,
        recovery_seed=RECOVERY_SEED,
    )
    async with await Node.open(root) as node:
        await node.post(Kind.NOTE, {"text": "hello"}, canonical.Audience("public"))
    return root


async def run(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, str]:
    """The command line as its own process runs it (its own event loop)."""
    code = await asyncio.to_thread(main, ["--node", str(root), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


async def key_state(root: Path) -> tuple[bytes, int]:
    """What a refusal must leave as it was: the key file, and the keys log's length."""
    async with await Node.open(root) as node:
        record = await node.store.log(key_log_id(node.club))
        held = 0 if record is None or record.head is None else record.head.seq
    return (root / "club.key").read_bytes(), held


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


async def test_the_cli_refuses_what_is_not_the_recovery_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = await make_node(tmp_path / "k")
    before = await key_state(root)
    other = canonical.sha256(b"another club's recovery")
    shares = recovery.split(RECOVERY_SEED, 3, 5)
    stranger = recovery.split(other, 3, 5)

    def share_args(tag: str, texts: list[str]) -> list[str]:
        files = [write(tmp_path / f"{tag}{i}", t) for i, t in enumerate(texts)]
        return [a for f in files for a in ("--share", f)]

    cases = [
        (
            ["--words-file", write(tmp_path / "w", recovery.words(other))],
            "not this club's recovery secret",
        ),
        (share_args("few", shares[:2]), "2 of the 3 shares"),
        (share_args("mixed", [*shares[:2], stranger[2]]), "different sets"),
        (share_args("stranger", stranger[:3]), "not this club's recovery secret"),
        (
            [
                "--words-file",
                write(tmp_path / "w2", recovery.words(RECOVERY_SEED)),
                "--before",
                "2999-01-01T00:00+00:00",
            ],
            "in the future",
        ),
    ]
    for args, message in cases:
        code, out, err = await run(capsys, root, "key", "revoke", *args)
        assert code == 2, (args, out, err)
        assert message in err, err
        assert err.count("\n") == 1  # one line
        assert await key_state(root) == before


async def test_the_cli_revokes_with_three_shares_and_status_shows_the_new_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = await make_node(tmp_path / "k")
    shares = recovery.split(RECOVERY_SEED, 3, 5)
    files = [write(tmp_path / f"share{i}", s) for i, s in enumerate(shares[1:4])]
    code, out, err = await run(
        capsys, root, "key", "revoke", "--json", *[a for f in files for a in ("--share", f)]
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["action"] == "revoke"
    code, out, _ = await run(capsys, root, "key", "status", "--json")
    status = json.loads(out)
    assert status["key"] == result["new"]
    assert status["since"] == 1
    assert [e["action"] for e in status["epochs"]] == ["genesis", "revoke"]
    code, out, _ = await run(capsys, root, "key", "status")
    assert f"key in use: {result['new'][:12]}" in out
    assert (await run(capsys, root, "verify"))[0] == 0
    # and the node signs with it: a post goes through, under the new key
    code, _, err = await run(capsys, root, "key", "rotate")
    assert code == 0, err


async def test_a_rotation_past_what_documents_carry_is_refused_a_revocation_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invites, evidence and agreement records carry at most MAX_CARRIED_KEY_EVENTS of
    a club's key events (protocol.md §2.2): a rotation past it is refused, and changes
    nothing; a revocation after a seizure is never refused for it. The limit is made
    2 here (the real one, 256, would take 256 rotations)."""
    root = await make_node(tmp_path / "k")
    with mock.patch.object(node_keys, "MAX_CARRIED_KEY_EVENTS", 2):
        for _ in range(2):
            code, _, err = await run(capsys, root, "key", "rotate")
            assert code == 0, err
        before = await key_state(root)
        code, out, err = await run(capsys, root, "key", "rotate")
        assert code == 2, (out, err)
        assert "changed its key 2 times, the most its invites" in err
        assert err.count("\n") == 1
        assert await key_state(root) == before
        words = write(tmp_path / "w", recovery.words(RECOVERY_SEED))
        code, _, err = await run(capsys, root, "key", "revoke", "--words-file", words)
        assert code == 0, err


def test_a_key_event_is_never_posted_by_hand() -> None:
    with pytest.raises(UsageError):
        kind_from_name("key", postable=True)


# --- what a peer sends --------------------------------------------------------------


class KeyLogMaker:
    def __init__(self) -> None:
        self.k0 = SigningKey(canonical.sha256(b"bad input k0"))
        genesis = canonical.encode_genesis(
            canonical.Genesis(self.k0.public, canonical.sha256(RECOVERY.public), 1)
        )
        self.genesis_bytes = genesis
        self.club = canonical.club_id(genesis)
        self.log = key_log_id(self.club)

    def event(
        self,
        signer: SigningKey,
        seq: int,
        prev: bytes,
        new: SigningKey,
        revoked: SigningKey,
        action: str = "rotate",
    ) -> VerifiedEvent:
        # eight entries that are all padding: the cut names no log
        payload = make_payload(
            Kind.KEY,
            {
                "action": action,
                "key": new.public.hex(),
                "revoked": revoked.public.hex(),
                "cut": ["00" * 88] * 8,
            },
        )
        return sign_event(
            signer,
            club=self.club,
            log=self.log,
            head=None if seq == 1 else Head(seq - 1, prev),
            time_us=seq,
            kind=Kind.KEY,
            payload=payload,
        )


async def ingest_key_events(
    store: MemoryStore, maker: KeyLogMaker, events: list[VerifiedEvent]
) -> tuple[int, Exception | None]:
    genesis = {c: canonical.decode_genesis(g) for c, g in (await store.clubs()).items()}
    ingest = Ingest(store, genesis, system_clock, allow_private=True)
    await ingest.club(maker.club, maker.genesis_bytes)
    await ingest.log(maker.log, key_log_descriptor(maker.club))
    taken, error = await ingest.run(maker.log, [(e.signed, e.payload) for e in events])
    await ingest.aclose()
    return taken, error


async def current_key(store: MemoryStore, club: bytes) -> bytes:
    genesis = {c: canonical.decode_genesis(g) for c, g in (await store.clubs()).items()}
    histories = await load_histories(store, genesis)
    return histories[club].current.key if club in histories else genesis[club].key


async def test_ingest_refuses_bad_key_events_and_keeps_what_was_valid() -> None:
    m = KeyLogMaker()
    k1, k2, k3 = (SigningKey(canonical.sha256(b"bad input k%d" % i)) for i in (1, 2, 3))
    first = m.event(m.k0, 1, b"", k1, m.k0)
    second = m.event(k1, 2, first.id, k2, k1)
    cases = [
        # a revocation signed by a key that is not the recovery key (the seized one)
        ([m.event(m.k0, 1, b"", k1, m.k0, "revoke")], 0, "recovery key"),
        # a gap in the chain: seq 1, then seq 3
        ([first, m.event(k1, 3, second.id, k3, k2)], 1, "seq gap in the keys log"),
        # the old key signs again after its rotation (a replayed hand-over)
        ([first, m.event(m.k0, 2, first.id, k3, m.k0)], 1, "key in force"),
        # a rotation back to an old key
        ([first, m.event(k1, 2, first.id, m.k0, k1)], 1, "differ from every earlier key"),
    ]
    for events, kept, message in cases:
        store = MemoryStore()
        taken, error = await ingest_key_events(store, m, events)
        assert error is not None
        assert message in str(error), str(error)
        assert taken == kept
        assert len(await store.events(m.log)) == kept
        assert await current_key(store, m.club) == (k1.public if kept else m.k0.public)
    # a replay of events already held changes nothing
    store = MemoryStore()
    assert await ingest_key_events(store, m, [first, second]) == (2, None)
    assert await ingest_key_events(store, m, [first, second]) == (2, None)
    assert await current_key(store, m.club) == k2.public


async def test_a_key_event_outside_the_key_log_changes_nothing() -> None:
    m = KeyLogMaker()
    k1 = SigningKey(canonical.sha256(b"bad input k1"))
    wrong = m.event(m.k0, 1, b"", k1, m.k0)
    public = public_log(m.club)
    a = canonical.Audience("public")
    descriptor = canonical.encode_log(canonical.LogDescriptor(m.club, "public", a))
    moved = sign_event(
        m.k0,
        club=m.club,
        log=public,
        head=None,
        time_us=1,
        kind=Kind.KEY,
        payload=wrong.payload or b"",
    )
    store = MemoryStore()
    ingest = Ingest(store, {}, system_clock, allow_private=True)
    await ingest.club(m.club, m.genesis_bytes)
    await ingest.log(public, descriptor)
    assert await ingest.run(public, [(moved.signed, moved.payload)]) == (1, None)
    await ingest.aclose()
    assert await current_key(store, m.club) == m.k0.public
