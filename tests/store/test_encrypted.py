"""Nothing readable at rest (issue 11, DESIGN 21): the encrypted store and the key envelope.

Checked at the boundary, in the bytes on disk and on the terminal: a real node's
store file, its WAL and its SHM hold none of the node's payloads, log names or peer
names (with a positive control: the same bytes decrypted, and a plain store, hold
them all); the store opens with its key only; the CLI needs the passphrase and says
so in one line; files are 0600; a plain store made before encryption is migrated in
place, crash-safely at every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlcipher3 import dbapi2 as sqlcipher

from federation.core.canonical import Kind
from federation.core.log import parse_audience
from federation.errors import KeyFileError, StoreError
from federation.node import at_rest, audit
from federation.node.keyfile import (
    PASSPHRASE_ENV,
    open_envelope,
    read_key_file,
    seal_key,
)
from federation.node.node import Node, init_node
from federation.store import cipher
from federation.store.sqlite import SqliteStore
from tests.harness import Federation
from tests.store_access import node_store_key

PASSPHRASE = b"a passphrase for the seized laptop"
PAYLOAD_MARKER = b"mrkpayloadq7"
LOG_MARKER = b"mrklognameq7"
PEER_MARKER = b"mrkpeerzq7"  # the peer's club is named "Club mrkpeerzq7"
MARKERS = (PAYLOAD_MARKER, LOG_MARKER, PEER_MARKER)
STORE_FILES = ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm")


def store_bytes(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in STORE_FILES if (root / name).exists()}


def store_bytes_named(root: Path, names: tuple[str, ...]) -> list[bytes]:
    return [(root / name).read_bytes() for name in names if (root / name).exists()]


def found(data: dict[str, bytes]) -> set[bytes]:
    return {m for m in MARKERS if any(m in b for b in data.values())}


def decrypted_copy(root: Path, to: Path) -> Path:
    """The node's store as plain SQLite (SQLCipher's export to an unkeyed file)."""
    key = node_store_key(root)
    assert key is not None
    with contextlib.closing(cipher.connect(root / "store.sqlite", key)) as db:
        db.execute("ATTACH DATABASE ? AS plain KEY ''", (str(to),))
        db.execute("SELECT sqlcipher_export('plain')")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute(f"PRAGMA plain.user_version = {version}")
        db.execute("DETACH DATABASE plain")
    return to


# --- a seized disk: the bytes of a running node's store ---------------------------------


async def test_store_wal_and_shm_hold_no_payload_log_or_peer_name(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["owner", PEER_MARKER.decode()]) as fed:
        owner, peer = fed["owner"], fed[PEER_MARKER.decode()]
        await fed.federate("owner", PEER_MARKER.decode())
        report = {"member": "ana", "period": "2026-11", "text": f"{PAYLOAD_MARKER.decode()}"}
        await owner.post(Kind.REPORT, report, "private")
        note = {"text": f"shared {PAYLOAD_MARKER.decode()}"}
        shared = await owner.post(Kind.NOTE, note, "federation", LOG_MARKER.decode())

        async def arrived() -> bool:
            return bool(await peer.node.store.events_by_id_prefix(shared.id[:8]))

        await fed.wait_for(arrived, what="the shared note reaches the peer")
        for member in (owner, peer):
            # Taken while the node runs: the WAL holds the latest commits (not checkpointed).
            on_disk = store_bytes(member.root)
            assert len(on_disk.get("store.sqlite-wal", b"")) > 0, "the WAL is in use"
            assert found(on_disk) == set(), f"{member.name}: markers readable at rest"
            assert not on_disk["store.sqlite"].startswith(cipher.PLAINTEXT_HEADER)
        # Positive control: the same store, decrypted, holds every marker; so the check
        # above looks at bytes that do carry them.
        plain = decrypted_copy(owner.root, tmp_path / "owner-plain.sqlite")
        assert found({"plain": plain.read_bytes()}) == set(MARKERS)


async def test_a_plain_store_shows_them_all(tmp_path: Path) -> None:
    """The positive control on the old code path: the store opened without a key, as
    every store was before encryption, keeps the markers readable."""
    root = tmp_path / "old"
    await old_node(root, passphrase=None)
    assert found(store_bytes(root)) >= {PAYLOAD_MARKER, LOG_MARKER}


async def test_the_store_opens_with_its_key_only(tmp_path: Path) -> None:
    root = tmp_path / "node"
    await init_node(root, name="Club A", listen="127.0.0.1:0", passphrase=None)
    path = root / "store.sqlite"
    with pytest.raises(StoreError, match=r"not a readable SQLite database with the store key"):
        await SqliteStore.open(path, key=bytes(32))
    with pytest.raises(StoreError, match="it is encrypted"):
        await SqliteStore.open(path)
    with contextlib.closing(sqlite3.connect(path)) as db, pytest.raises(sqlite3.DatabaseError):
        db.execute("SELECT * FROM sqlite_master").fetchall()
    key = node_store_key(root)
    async with await SqliteStore.open(path, key=key) as store:
        assert len(await store.logs()) == 3


# --- the CLI: the passphrase, once, and one line when it is wrong or missing -------------


def run_cli(root: Path, *args: str, passphrase: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
    if passphrase is not None:
        env[PASSPHRASE_ENV] = passphrase
    return subprocess.run(
        [sys.executable, "-m", "federation", "--node", str(root), *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def sealed_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sealed") / "node"
    made = run_cli(root, "init", "--name", "Club A", passphrase=PASSPHRASE.decode())
    assert made.returncode == 0, made.stderr
    return root


@pytest.mark.parametrize("command", [["status"], ["log"], ["verify"], ["export", "--plain"]])
def test_reading_needs_the_passphrase(sealed_node: Path, command: list[str]) -> None:
    missing = run_cli(sealed_node, *command, passphrase=None)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1, missing.stderr  # one line, no traceback or log
    assert "no terminal to ask for its passphrase" in missing.stderr
    assert missing.stdout == ""
    wrong = run_cli(sealed_node, *command, passphrase="not the passphrase")
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") == 1, wrong.stderr
    assert "wrong passphrase" in wrong.stderr


def test_status_with_the_passphrase_says_what_is_sealed(sealed_node: Path) -> None:
    done = run_cli(sealed_node, "status", passphrase=PASSPHRASE.decode())
    assert done.returncode == 0, done.stderr
    assert "store key sealed with the passphrase" in done.stdout


def test_no_passphrase_says_what_it_gives_up(tmp_path: Path) -> None:
    root = tmp_path / "node"
    made = run_cli(root, "init", "--name", "Club A", "--no-passphrase", passphrase=None)
    assert made.returncode == 0
    assert "store key will be stored UNENCRYPTED" in made.stderr
    assert "read every log" in made.stderr
    status = run_cli(root, "status", passphrase=None)
    assert "UNENCRYPTED on disk: club.key holds the store key" in status.stdout
    # Still SQLCipher: the store file alone (without club.key) reveals nothing.
    assert not (root / "store.sqlite").read_bytes().startswith(cipher.PLAINTEXT_HEADER)


# --- 0600 everywhere, and a passphrase file others can read is refused -------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_the_node_writes_is_private(tmp_path: Path) -> None:
    root = tmp_path / "node"
    old = os.umask(0o022)  # a usual shell's umask: the CLI must not rely on the caller's
    try:
        assert run_cli(root, "init", "--name", "Club A", "--no-passphrase", passphrase=None)
        posted = run_cli(root, "post", "note", "--text", "hello", passphrase=None)
        assert posted.returncode == 0, posted.stderr
        exported = run_cli(
            root, "export", "--plain", "-o", str(root / "out.jsonl"), passphrase=None
        )
        assert exported.returncode == 0, exported.stderr
    finally:
        os.umask(old)
    assert mode(root) == 0o700
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {"store.sqlite", "club.key", "tls.key", "tls.crt", "config.toml", "out.jsonl"} <= {
        p.name for p in files
    }
    assert {p.name: oct(mode(p)) for p in files if mode(p) != 0o600} == {}


async def test_an_old_store_mode_is_fixed_on_open(tmp_path: Path) -> None:
    root = tmp_path / "node"
    await init_node(root, name="Club A", listen="127.0.0.1:0", passphrase=None)
    os.chmod(root / "store.sqlite", 0o644)
    async with await Node.open(root):
        assert mode(root / "store.sqlite") == 0o600
        assert mode(root / "store.sqlite-wal") == 0o600


def test_a_passphrase_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_bytes(PASSPHRASE + b"\n")
    os.chmod(secret, 0o644)
    root = tmp_path / "node"
    refused = run_cli(
        root, "init", "--name", "Club A", "--passphrase-file", str(secret), passphrase=None
    )
    assert refused.returncode == 1
    assert refused.stderr == (
        f"federation: error: passphrase file {secret} is readable by others: chmod 600 {secret}\n"
    )
    assert not root.exists(), "nothing is written"
    os.chmod(secret, 0o600)
    made = run_cli(
        root, "init", "--name", "Club A", "--passphrase-file", str(secret), passphrase=None
    )
    assert made.returncode == 0, made.stderr
    assert run_cli(root, "status", passphrase=None).returncode == 0
    os.chmod(secret, 0o640)  # later made readable: the node refuses to start with it
    later = run_cli(root, "status", passphrase=None)
    assert later.returncode == 1
    assert f"passphrase file {secret} is readable by others: chmod 600 {secret}" in later.stderr


# --- migration of a store made before encryption ----------------------------------------


async def old_node(root: Path, passphrase: bytes | None) -> list[bytes]:
    """A node as an older version left it: a version 1 key file and a plain store (of
    today's schema), holding a private report, a named log and a peer. Returns the ids
    of its own events."""
    await init_node(root, name="Club A", listen="127.0.0.1:0", passphrase=passphrase)
    ids = []
    async with await Node.open(root, passphrase=passphrase) as node:
        report: dict[str, object] = {"member": "ana", "period": "2026-11"}
        report["text"] = PAYLOAD_MARKER.decode()
        for i in range(3):
            _, event = await node.post(
                Kind.REPORT, report | {"member": f"m{i}"}, parse_audience("private"), checked=False
            )
            ids.append(event.id)
        _, event = await node.post(
            Kind.NOTE,
            {"text": "n"},
            parse_audience("federation"),
            LOG_MARKER.decode(),
            checked=False,
        )
        ids.append(event.id)
        key = node.unlock()
    plain = decrypted_copy_with(root, passphrase, root / "plain.sqlite")
    for side in ("-wal", "-shm"):
        (root / ("store.sqlite" + side)).unlink(missing_ok=True)
    os.replace(plain, root / "store.sqlite")
    os.chmod(root / "store.sqlite", 0o644)  # as SQLite made it then
    club = bytes.fromhex(json.loads((root / "club.key").read_text())["club"])
    (root / "club.key").write_bytes(seal_key(key, club, passphrase))
    assert (root / "store.sqlite").read_bytes().startswith(cipher.PLAINTEXT_HEADER)
    return ids


def decrypted_copy_with(root: Path, passphrase: bytes | None, to: Path) -> Path:
    key = node_store_key(root, passphrase)
    assert key is not None
    db = cipher.connect(root / "store.sqlite", key)
    with contextlib.closing(db):
        db.execute("ATTACH DATABASE ? AS plain KEY ''", (str(to),))
        db.execute("SELECT sqlcipher_export('plain')")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute(f"PRAGMA plain.user_version = {version}")
        db.execute("DETACH DATABASE plain")
    return to


async def check_whole(root: Path, ids: list[bytes], passphrase: bytes | None) -> None:
    """The node opens, its key file is version 2, its store encrypted, every event
    there, and everything verifies."""
    async with await Node.open(root, passphrase=passphrase) as node:
        for event_id in ids:
            assert await node.store.events_by_id_prefix(event_id[:8]), "an event was lost"
        report = await audit.verify_store(node.store, node.authorized)
        assert report.ok, report.problems
        node.unlock()
    data = read_key_file(root / "club.key")
    club = bytes.fromhex(json.loads(data)["club"])
    envelope = open_envelope(data, club, passphrase, "club.key")
    assert envelope.version == 2
    assert envelope.store_key is not None
    on_disk = store_bytes(root)
    assert not on_disk["store.sqlite"].startswith(cipher.PLAINTEXT_HEADER)
    assert found(on_disk) == set()
    assert mode(root / "store.sqlite") == 0o600
    assert not (root / "store.sqlite.encrypting").exists()
    assert not cipher.in_earlier_format(root / "store.sqlite", envelope.store_key)


@pytest.mark.parametrize("passphrase", [PASSPHRASE, None], ids=["passphrase", "no-passphrase"])
async def test_a_plain_store_is_encrypted_in_place(
    tmp_path: Path, passphrase: bytes | None
) -> None:
    root = tmp_path / "node"
    ids = await old_node(root, passphrase)
    assert found(store_bytes(root)) >= {PAYLOAD_MARKER, LOG_MARKER}  # the control
    # A second name for the plain file shows what becomes of its pages once replaced.
    os.link(root / "store.sqlite", tmp_path / "old-store")
    await check_whole(root, ids, passphrase)
    old = (tmp_path / "old-store").read_bytes()
    assert old == bytes(len(old)), "the replaced plain file is overwritten with zeros"


class Crash(Exception):
    """The process died here (the upgrade's injected failure point)."""


@contextlib.contextmanager
def crash_at(where: str) -> Iterator[at_rest.Step]:
    def step(name: str) -> None:
        if name == where:
            raise Crash(name)

    yield step


@pytest.mark.parametrize("where", at_rest.STEPS)
async def test_a_crash_at_any_step_of_the_migration_loses_nothing(
    tmp_path: Path, where: str
) -> None:
    root = tmp_path / "node"
    ids = await old_node(root, PASSPHRASE)
    data = read_key_file(root / "club.key")
    club = bytes.fromhex(json.loads(data)["club"])
    envelope = open_envelope(data, club, PASSPHRASE, "club.key")
    with crash_at(where) as step, pytest.raises(Crash):
        at_rest.upgrade(
            root / "club.key", root / "store.sqlite", envelope, club, PASSPHRASE, step=step
        )
    # After the crash: the old plain store, or the new encrypted one whose key the key
    # file already holds; never neither.
    store = root / "store.sqlite"
    after = open_envelope(read_key_file(root / "club.key"), club, PASSPHRASE, "club.key")
    if cipher.is_plaintext(store):
        assert where in ("key file upgraded", "exported", "synced")
    else:
        assert after.store_key is not None
        with contextlib.closing(cipher.connect(store, after.store_key)) as db:
            assert db.execute("SELECT count(*) FROM event").fetchone()[0] >= len(ids)
    await check_whole(root, ids, PASSPHRASE)  # the next start finishes the job


async def test_an_old_key_file_with_an_encrypted_store_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "node"
    await init_node(root, name="Club A", listen="127.0.0.1:0", passphrase=None)
    async with await Node.open(root) as node:
        key = node.unlock()
    club = bytes.fromhex(json.loads((root / "club.key").read_text())["club"])
    (root / "club.key").write_bytes(seal_key(key, club, None))
    before = (root / "store.sqlite").read_bytes()
    with pytest.raises(KeyFileError, match=r"holds no store key but store .* is encrypted"):
        await Node.open(root)
    assert (root / "store.sqlite").read_bytes() == before


async def test_a_plain_store_in_use_elsewhere_is_not_migrated(tmp_path: Path) -> None:
    root = tmp_path / "node"
    ids = await old_node(root, None)
    other = sqlcipher.connect(str(root / "store.sqlite"), isolation_level=None)
    try:
        other.execute("PRAGMA journal_mode = WAL")
        other.execute("BEGIN")
        other.execute("SELECT count(*) FROM event").fetchall()  # holds a read lock
        with pytest.raises(StoreError, match="in use by another process"):
            await Node.open(root)
    finally:
        other.close()
    assert cipher.is_plaintext(root / "store.sqlite")
    await check_whole(root, ids, None)


async def test_an_erased_payload_leaves_no_freed_page_behind(tmp_path: Path) -> None:
    """secure_delete is set on every store: an erased payload's pages are zeroed before
    SQLCipher encrypts them, so even the store key does not bring it back. Shown on a
    plain store, whose bytes can be read as they are."""
    root = tmp_path / "node"
    await init_node(root, name="Club A", listen="127.0.0.1:0", passphrase=None)
    secret = "a member's address, 14 Weir Court " * 40  # spans pages of its own
    async with await Node.open(root) as node:
        _, event = await node.post(Kind.NOTE, {"text": secret}, parse_audience("private"))
    plain = decrypted_copy_with(root, None, tmp_path / "plain.sqlite")
    assert secret.encode() in plain.read_bytes()  # the control
    async with await SqliteStore.open(plain, key=None) as store:
        assert await store.erase(event.id)
    names = ("plain.sqlite", "plain.sqlite-wal", "plain.sqlite-shm")
    on_disk = b"".join(store_bytes_named(tmp_path, names))
    assert secret.encode()[:64] not in on_disk
    assert event.signed in on_disk  # the signed header stays


_DIE_AT = """
import json, os, sys
from pathlib import Path
from federation.node import at_rest
from federation.node.keyfile import open_envelope
root, where, passphrase = Path(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
data = (root / "club.key").read_bytes()
club = bytes.fromhex(json.loads(data)["club"])
envelope = open_envelope(data, club, passphrase, "club.key")

def step(name: str) -> None:
    if name == where:
        os._exit(9)  # as a kill -9: no cleanup, no finally, nothing flushed by Python

at_rest.upgrade(root / "club.key", root / "store.sqlite", envelope, club, passphrase, step=step)
"""


@pytest.mark.parametrize("where", at_rest.STEPS)
async def test_a_process_killed_at_any_step_of_the_migration_loses_nothing(
    tmp_path: Path, where: str
) -> None:
    """The same as above, with the process dying at once (os._exit) at each step."""
    root = tmp_path / "node"
    ids = await old_node(root, PASSPHRASE)
    died = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DIE_AT,
        str(root),
        where,
        PASSPHRASE.decode(),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(died.communicate(), 60)
    assert died.returncode == 9, err.decode()
    await check_whole(root, ids, PASSPHRASE)


# --- a store of the earlier encrypted format (4 KiB pages) ------------------------------


async def earlier_node(root: Path, passphrase: bytes | None) -> list[bytes]:
    """A node as the first encrypted version left it: its store encrypted with the same
    store key, in the earlier format (cipher.EARLIER_SETTINGS). Returns its own ids."""
    ids = await old_node(root, passphrase)
    await check_whole(root, ids, passphrase)  # made current by the first start
    key = node_store_key(root, passphrase)
    assert key is not None
    store, earlier = root / "store.sqlite", root / "earlier.sqlite"
    with contextlib.closing(cipher.connect(store, key)) as db:
        db.execute("ATTACH DATABASE ? AS earlier", (str(earlier),))
        for pragma in cipher.EARLIER_SETTINGS:
            db.execute(pragma.replace("PRAGMA ", "PRAGMA earlier.", 1))
        db.execute("SELECT sqlcipher_export('earlier')")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute(f"PRAGMA earlier.user_version = {version}")
        db.execute("DETACH DATABASE earlier")
    os.replace(earlier, store)
    cipher.remove_side_files(store)
    assert cipher.in_earlier_format(store, key)  # the control: it is the earlier format
    with pytest.raises(StoreError):
        cipher.connect(store, key).close()
    return ids


async def test_a_store_of_the_earlier_format_is_converted_at_the_next_start(
    tmp_path: Path,
) -> None:
    root = tmp_path / "node"
    ids = await earlier_node(root, PASSPHRASE)
    await check_whole(root, ids, PASSPHRASE)
    key = node_store_key(root, PASSPHRASE)
    assert key is not None
    with contextlib.closing(cipher.connect(root / "store.sqlite", key)) as db:
        assert int(db.execute("PRAGMA page_size").fetchone()[0]) == cipher.PAGE_BYTES


@pytest.mark.parametrize("where", at_rest.STEPS[1:])  # its key file is version 2 already
async def test_a_crash_at_any_step_of_the_conversion_loses_nothing(
    tmp_path: Path, where: str
) -> None:
    root = tmp_path / "node"
    ids = await earlier_node(root, PASSPHRASE)
    data = read_key_file(root / "club.key")
    club = bytes.fromhex(json.loads(data)["club"])
    envelope = open_envelope(data, club, PASSPHRASE, "club.key")
    assert envelope.store_key is not None
    with crash_at(where) as step, pytest.raises(Crash):
        at_rest.upgrade(
            root / "club.key", root / "store.sqlite", envelope, club, PASSPHRASE, step=step
        )
    # After the crash: the old store in the earlier format, or the new one; both open.
    earlier = cipher.in_earlier_format(root / "store.sqlite", envelope.store_key)
    assert earlier == (where in ("exported", "synced"))
    settings = cipher.EARLIER_SETTINGS if earlier else cipher.CIPHER_SETTINGS
    with contextlib.closing(
        cipher.connect(root / "store.sqlite", envelope.store_key, settings=settings)
    ) as db:
        assert db.execute("SELECT count(*) FROM event").fetchone()[0] >= len(ids)
    await check_whole(root, ids, PASSPHRASE)  # the next start finishes the job


@pytest.mark.parametrize("made", ["plain", "earlier"])
async def test_two_processes_upgrading_one_node_at_once_lose_nothing(
    tmp_path: Path, made: str
) -> None:
    """Found by review: the first `run` after an upgrade and a `status` beside it both
    converted the store, each unlinking the other's half-written copy (and, from a
    plain store, one could draw a second store key). One waits for the other now. The
    first is held just after its export until the second has started and is waiting
    (threads: each opens the store file itself, as a process would)."""
    root = tmp_path / "node"
    ids = await (old_node if made == "plain" else earlier_node)(root, PASSPHRASE)
    data = read_key_file(root / "club.key")
    club = bytes.fromhex(json.loads(data)["club"])
    first_in, second_started, release = threading.Event(), threading.Event(), threading.Event()

    def held(name: str) -> None:
        if name == "exported":
            first_in.set()
            assert second_started.wait(10)
            time.sleep(0.3)  # the second is now past its first look, at the lock
            release.set()

    def upgrade(step: at_rest.Step) -> bytes | None:
        envelope = open_envelope(data, club, PASSPHRASE, "club.key")
        return at_rest.upgrade(
            root / "club.key", root / "store.sqlite", envelope, club, PASSPHRASE, step=step
        ).store_key

    def second() -> bytes | None:
        second_started.set()
        return upgrade(lambda _: None)

    first = asyncio.ensure_future(asyncio.to_thread(upgrade, held))
    assert await asyncio.to_thread(first_in.wait, 10)  # the first is converting
    keys = await asyncio.gather(first, asyncio.to_thread(second))
    assert release.is_set()
    assert keys[0] == keys[1] == node_store_key(root, PASSPHRASE)  # one store key
    await check_whole(root, ids, PASSPHRASE)
