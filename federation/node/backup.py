"""Backups of a node, and restoring one without forking the club's logs (protocol.md §3.6).

A backup is one age file (node/agefile.py: to the node's passphrase or to members'
age keys) holding a tar of the node directory: `manifest.json` first (the club id
and name, when, each file's sha256, the heads of the club's own logs), then
`config.toml`, the key envelope, the TLS certificate and key, and a snapshot of the
store. The snapshot is taken through the store's own connection, in one read
transaction (`SqliteStore.snapshot`), so it is consistent while `federation run`
writes; it stays encrypted with the store's key (SQLCipher), and age is the layer
that keeps the whole backup file unreadable without the passphrase (tests/seized/).
A node's `recovery.key`, if it still has one, is left out: it belongs off the node
(`federation recovery move-off`).

Restoring checks everything before it writes anything: age authenticates the whole
file (a truncated or altered backup does not open), then every file's hash, the
club (against the manifest, the directory and `--club`), and the store is verified
with every signature. It is written into a temporary directory beside the target
and renamed into place at the end. The restored node then holds back every log of
the club's own (store/meta.py `mark_restored`) until a peer shows it that log's
head, or the operator declares there is no other copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

import msgspec

from federation.core.config import CONFIG_FILE, parse_config
from federation.errors import ConfigError, FederationError, StoreError, UsageError
from federation.node import audit
from federation.node.keyfile import write_private
from federation.node.node import Node
from federation.node.system import Clock, random_bytes, system_clock
from federation.store.meta import mark_restored
from federation.store.sqlite import SqliteStore

MANIFEST = "manifest.json"
FORMAT: Final = "federation-backup"
# A backup is built and read in memory, so it is bounded: a busy club's store after
# years (a million events is ~1 GiB) fits; `backup` refuses to write a larger one,
# and `restore` to read one, before reading it.
MAX_BACKUP_BYTES = 2 * 1024**3
_TLS_FILES = ("tls.crt", "tls.key")


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: Literal["federation-backup"]
    version: Literal[1]
    club: str
    name: str
    created_us: int
    files: dict[str, str]  # name in the node directory -> sha256, hex
    heads: dict[str, int]  # the club's own logs (id, hex) -> head seq when taken


def _local_name(setting: str, what: str) -> str:
    """A file the config names, which must sit in the node directory to be backed up."""
    path = Path(setting)
    if path.is_absolute() or len(path.parts) != 1 or setting in (MANIFEST, CONFIG_FILE):
        raise UsageError(
            f"{what} is {setting!r}, not a file name in the node directory; backup takes "
            "the node directory only: move the file there and set its name in config.toml"
        )
    return setting


async def backup_bytes(node: Node, clock: Clock = system_clock) -> tuple[bytes, Manifest]:
    """The tar of the node directory (not yet encrypted) and its manifest."""
    paths = node.paths
    store_name = _local_name(node.config.node.store, "node.store")
    key_name = _local_name(node.config.key.file, "key.file")
    files: dict[str, bytes] = {CONFIG_FILE: paths.config.read_bytes()}
    for name in (key_name, *_TLS_FILES):
        files[name] = (paths.root / name).read_bytes()
    # The snapshot is written beside the store (a 0700 directory), never to /tmp.
    snapshot = paths.root / f".backup-{random_bytes(8).hex()}.sqlite"
    try:
        if not isinstance(node.store, SqliteStore):
            raise StoreError("only a SQLite store can be backed up")
        await node.store.snapshot(snapshot)
        files[store_name] = snapshot.read_bytes()
    finally:
        for leftover in (snapshot, snapshot.with_name(snapshot.name + "-journal")):
            leftover.unlink(missing_ok=True)
    size = sum(len(data) for data in files.values())
    if size > MAX_BACKUP_BYTES:
        raise StoreError(
            f"the node holds {size} bytes, over the {MAX_BACKUP_BYTES} one backup file may "
            "hold; back up the node directory while it is stopped instead"
        )
    heads = {
        r.id.hex(): r.head.seq if r.head else 0
        for r in await node.store.logs()
        if r.club == node.club
    }
    manifest = Manifest(
        FORMAT,
        1,
        node.club.hex(),
        node.config.club.name,
        clock(),
        {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        heads,
    )
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(MANIFEST, msgspec.json.encode(manifest)), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            info.mtime = manifest.created_us // 1_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue(), manifest


def check_size(path: Path) -> None:
    """Refuse, before reading it, a file larger than any backup can be."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if size > MAX_BACKUP_BYTES + 1024**2:  # age adds 16 bytes a 64 KiB chunk, and a header
        raise UsageError(f"{path} is {size} bytes, larger than any backup; it is not one")


def write_backup_file(path: Path, sealed: bytes) -> None:
    """Write the sealed backup 0600, never over an existing file, whole or not at all."""
    if path.exists():
        raise UsageError(f"{path} already exists and backup never overwrites; choose another -o")
    partial = path.with_name(f".{path.name}.partial-{random_bytes(4).hex()}")
    try:
        write_private(partial, sealed)
        if path.exists():
            raise UsageError(f"{path} appeared meanwhile; choose another -o")
        os.rename(partial, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)


def read_backup(plain: bytes, what: str) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and files of a decrypted backup, every hash checked."""

    def bad(reason: str) -> UsageError:
        return UsageError(f"{what} is not a federation backup ({reason}); use another copy")

    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
            return _check_backup(tar, bad)
    except tarfile.TarError as exc:
        raise bad(f"unreadable archive: {exc}") from None


def _check_backup(
    tar: tarfile.TarFile, bad: Callable[[str], UsageError]
) -> tuple[Manifest, dict[str, bytes]]:
    files: dict[str, bytes] = {}
    for member in tar.getmembers():
        name = member.name
        if not member.isfile() or Path(name).name != name or name in ("", ".", ".."):
            raise bad(f"unexpected entry {name!r}")
        if name in files:
            raise bad(f"{name!r} appears twice")
        extracted = tar.extractfile(member)
        assert extracted is not None  # a regular file
        files[name] = extracted.read()
    if MANIFEST not in files:
        raise bad("no manifest")
    try:
        manifest = msgspec.json.decode(files.pop(MANIFEST), type=Manifest)
    except msgspec.DecodeError as exc:
        raise bad(f"manifest: {exc}") from None
    if set(files) != set(manifest.files):
        raise bad("its files are not the ones its manifest lists")
    for name, data in files.items():
        if hashlib.sha256(data).hexdigest() != manifest.files[name]:
            raise bad(f"{name} does not match its hash in the manifest")
    if CONFIG_FILE not in files:
        raise bad(f"no {CONFIG_FILE}")
    try:
        config = parse_config(files[CONFIG_FILE].decode(), CONFIG_FILE)
    except (ConfigError, UnicodeDecodeError) as exc:
        raise bad(f"{CONFIG_FILE}: {exc}") from None
    if config.club.id != manifest.club:
        raise bad("its config names another club than its manifest")
    return manifest, files


def check_target(target: Path) -> None:
    """Refuse a target directory that holds anything, saying what it holds."""
    if not target.exists():
        return
    if not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory; restore into a new directory")
    if any(target.iterdir()):
        raise UsageError(
            f"{target} is not empty; restore into a new directory (restore never "
            "overwrites a node: move the old one aside first if you mean to replace it)"
        )


def held_club(target: Path) -> str | None:
    """The club id of the node in `target`, if there is one."""
    try:
        return parse_config((target / CONFIG_FILE).read_text(encoding="utf-8")).club.id
    except (OSError, UnicodeDecodeError, FederationError):
        return None


def check_club(manifest: Manifest, *, expect: str | None, target: Path) -> None:
    """A backup of another club than the one named is refused (`--club`, or the node
    already in the target directory)."""
    there = held_club(target)
    if there is not None and there != manifest.club:
        raise UsageError(
            f"this is a backup of club {manifest.name!r} ({manifest.club[:12]}…), but "
            f"{target} holds club {there[:12]}…; restore into a new directory, and check "
            "you have the right backup"
        )
    if expect is not None and not manifest.club.startswith(expect.lower()):
        raise UsageError(
            f"this is a backup of club {manifest.name!r} ({manifest.club[:12]}…), not of "
            f"club {expect}; check you have the right backup"
        )


def restore(
    manifest: Manifest,
    files: dict[str, bytes],
    target: Path,
    *,
    passphrase: bytes | None = None,
) -> audit.VerifyReport:
    """Write a checked backup into the new directory `target` (see the module doc)."""
    check_target(target)
    parent = target.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"{parent} does not exist; create it first")
    staging = parent / f".{target.name}.restoring-{random_bytes(4).hex()}"
    try:
        staging.mkdir(mode=0o700)
        for name, data in files.items():
            write_private(staging / name, data)
        report = asyncio.run(_prepare(staging, manifest, passphrase))
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()  # empty, checked above
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return report


async def _prepare(
    staging: Path, manifest: Manifest, passphrase: bytes | None
) -> audit.VerifyReport:
    """Verify the restored store, and hold back the club's own logs (protocol.md §3.6)."""
    async with await Node.open(staging, passphrase=passphrase) as node:
        report = await audit.verify_store(node.store, node.authorized)
        if not report.ok:
            raise StoreError(
                f"the store in this backup does not verify ({report.problems[0]}); "
                "nothing was restored: use another backup"
            )
        own = {
            r.id: r.head.seq if r.head else 0
            for r in await node.store.logs()
            if r.club == node.club
        }
        if {log.hex(): seq for log, seq in own.items()} != manifest.heads:
            raise UsageError(
                "the store in this backup does not hold the heads its manifest lists; "
                "nothing was restored: use another backup"
            )
        await mark_restored(node.store, own)
        for peer in await node.store.peers():
            # The next round gets a full frontier (§6.5): that is where a peer shows
            # the heads that let the restored logs be written again (§3.6).
            status = msgspec.structs.replace(peer.status, known=None)
            await node.store.set_peer_status(peer.club, status)
    return report
