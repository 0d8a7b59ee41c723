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
(`federation recovery move-off`). The file is written whole or not at all, and what a
backup killed midway left (its snapshot, its file cut short) is removed by the next
(node/leftover.py).

Restoring checks everything before it writes anything: age authenticates the whole
file (a truncated or altered backup does not open), then every file's hash, the
club (against the manifest, the directory and `--club`), and the store is verified
with every signature. Anyone can seal a file to a member's age key, so what is
inside is read as hostile (`read_backup`): a strict reader of the tar `backup_bytes`
writes, and only the five files of a node directory, named by bare names. It is
written into a 0700 staging directory beside the target, locked while the restore
works, and renamed into place at the end; one a killed restore left is removed by
the next (`sweep_staging`). The restored node then holds back every log of the
club's own (store/meta.py `mark_restored`) until a peer shows it that log's head, or
the operator declares there is no other copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import shutil
import ssl
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

import msgspec

from federation.core.config import CONFIG_FILE, parse_config
from federation.errors import ConfigError, FederationError, KeyFileError, StoreError, UsageError
from federation.node import audit, leftover
from federation.node.keyfile import sync_directory, write_private
from federation.node.node import Node, NodePaths
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
# What a backup's tar may hold (`_entries`): the manifest and the five files of a node
# directory; the small ones (all but the store) are a few KiB each.
MAX_ENTRIES = 6
MAX_SMALL_FILE_BYTES = 1024**2
_BLOCK = 512  # a tar block
_ZERO_BLOCK = bytes(_BLOCK)
_NAME_MAX_BYTES = 100  # a ustar header's name field: `backup_bytes` writes no other
# A restore stages beside its target, as `.TARGET.restoring-XXXXXXXX` (`restore`,
# NodePaths.restore_staging).
_STAGING_NAME = re.compile(r"\..+\.restoring-[0-9a-f]{8}")
# A backup snapshots the store in `.backup-XXXXXXXXXXXXXXXX/` in the node directory.
_SNAPSHOT_PREFIX = ".backup-"
_SNAPSHOT_NAME = re.compile(r"\.backup-[0-9a-f]{16}")


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
    if not _bare_name(setting) or setting in (MANIFEST, CONFIG_FILE, *_TLS_FILES):
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
    if not isinstance(node.store, SqliteStore):
        raise StoreError("only a SQLite store can be backed up")
    # The snapshot is written beside the store, never to /tmp: in a 0700 directory of
    # its own, locked while the backup works, so that one a killed backup left (a
    # copy of the store, which would outlive an erasure) is known and removed by the
    # next (`sweep_snapshots`).
    work = paths.root / f"{_SNAPSHOT_PREFIX}{random_bytes(8).hex()}"
    held = leftover.locked_directory(work)
    try:
        snapshot = work / "store.sqlite"
        await node.store.snapshot(snapshot)
        files[store_name] = snapshot.read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(held)
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
    # ustar: no extended headers, which `_entries` refuses (names are bare and short).
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
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
    """Write the sealed backup 0600, never over an existing file, whole or not at all
    (through a locked partial file beside it: node/leftover.py `write_new`)."""
    leftover.write_new(path, sealed, command="backup", option="-o")


def read_backup(plain: bytes, what: str) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and files of a decrypted backup, every hash checked.

    The bytes come from a file anyone can seal to a member's age key (`backup --to`),
    so they are read as hostile: by `_entries`, a strict reader of exactly the tar
    `backup_bytes` writes (plain files with bare names, nothing else), and then checked
    against the manifest and the config, before any of them is written anywhere."""

    def bad(reason: str) -> UsageError:
        return UsageError(f"{what} is not a federation backup ({reason}); use another copy")

    return _check_backup(_entries(plain, bad), bad)


def _bare_name(name: str) -> bool:
    """A file name in the node directory: no directory part, no '..', nothing hidden
    in it (a control character, a NUL), short enough for a ustar header."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and name.isprintable()
        and len(name.encode()) <= _NAME_MAX_BYTES
    )


def _octal(field: bytes) -> int | None:
    digits = field.rstrip(b"\0 ").lstrip(b" ")
    if not digits or digits.strip(b"01234567"):
        return None  # empty, or not octal (base-256 sizes too: no backup needs them)
    return int(digits, 8)


def _entries(plain: bytes, bad: Callable[[str], UsageError]) -> dict[str, bytes]:
    """The files of a backup's tar, read as `backup_bytes` writes it: 512-byte ustar
    headers, each a plain file with a bare name, its bytes, zeros to the end.

    Python's tarfile is not used to read: it follows links, directories and devices,
    expands sparse entries (a few bytes claiming a terabyte), takes paths from
    extended headers, quietly stops at a damaged header, and (before Python 3.11.10)
    parses those headers with a backtracking regular expression. Here every length
    and count is bounded before it is used, and anything else is refused by name."""
    files: dict[str, bytes] = {}
    at = 0
    while True:
        header = plain[at : at + _BLOCK]
        if len(header) < _BLOCK:
            raise bad("cut short: the archive has no end")
        if header == _ZERO_BLOCK:
            break
        if len(files) == MAX_ENTRIES:
            raise bad(f"more than {MAX_ENTRIES} entries")
        stored = _octal(header[148:156])
        if stored is None or stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise bad(f"a damaged entry header at byte {at}")
        try:
            name = header[:100].split(b"\0", 1)[0].decode()
        except UnicodeDecodeError:
            raise bad(f"an entry name at byte {at} is not UTF-8") from None
        if header[156:157] not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise bad(
                f"entry {name!r} is not a plain file (a link, a directory, a device, or an "
                "extended header)"
            )
        if header[345:500].strip(b"\0") or not _bare_name(name):
            raise bad(f"entry {name!r} is not a file name: a backup holds no paths")
        if name in files:
            raise bad(f"{name!r} appears twice")
        size = _octal(header[124:136])
        at += _BLOCK
        if size is None or size > len(plain) - at:
            raise bad(f"{name!r} is cut short")
        files[name] = plain[at : at + size]
        at += -(-size // _BLOCK) * _BLOCK
    if plain.count(0, at) != len(plain) - at:  # counted in place: no copy of the rest
        raise bad("bytes after the end of the archive")
    return files


def _check_backup(
    files: dict[str, bytes], bad: Callable[[str], UsageError]
) -> tuple[Manifest, dict[str, bytes]]:
    if MANIFEST not in files:
        raise bad("no manifest")
    raw = files.pop(MANIFEST)
    if len(raw) > MAX_SMALL_FILE_BYTES:
        raise bad(f"its manifest is over {MAX_SMALL_FILE_BYTES} bytes")
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as exc:
        raise bad(f"manifest: {exc}") from None
    odd = [name for name in manifest.files if not _bare_name(name)]
    if odd:
        raise bad(f"its manifest lists {odd[0]!r}, not a file name")
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
    if config.club.id != manifest.club or config.club.name != manifest.name:
        raise bad("its config names another club than its manifest")
    # The config says where the store and the key are; restore opens them there. Each
    # must be a file of the backup, in the new directory: never a path outside it.
    named = {"node.store": config.node.store, "key.file": config.key.file}
    for what, setting in named.items():
        if not _bare_name(setting):
            raise bad(
                f"its config names {setting!r} as {what}, not a file name in the node directory"
            )
    expected = {CONFIG_FILE, *_TLS_FILES, *named.values()}
    if len(expected) != 3 + len(named) or MANIFEST in expected:
        raise bad("its config names one file for two (node.store, key.file, the TLS files)")
    if set(files) != expected:
        holds = ", ".join(sorted(expected))
        raise bad(f"its files are not the ones a node directory holds ({holds})")
    big = [n for n in expected - {config.node.store} if len(files[n]) > MAX_SMALL_FILE_BYTES]
    if big:
        raise bad(f"{big[0]} is over {MAX_SMALL_FILE_BYTES} bytes")
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
    what: str = "the backup",
) -> audit.VerifyReport:
    """Write a checked backup into the new directory `target` (see the module doc)."""
    check_target(target)
    target = NodePaths(target).absolute  # `.` names its own directory
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"{parent} does not exist; create it first")
    staging = parent / f"{NodePaths(target).restore_staging}{random_bytes(4).hex()}"
    held = leftover.locked_directory(staging)
    try:
        for name, data in files.items():
            write_private(staging / name, data)
        _check_tls(staging, what)
        try:
            report = asyncio.run(_prepare(staging, manifest, passphrase))
        except FederationError as exc:
            raise _not_restored(exc, staging, what) from None
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()  # empty, checked above
        os.rename(staging, target)
        sync_directory(parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        os.close(held)
    return report


def sweep_staging(parent: Path) -> list[Path]:
    """Remove what restores killed midway left in `parent`, and name it.

    A restore writes the backup's files (the key envelope, the TLS key, the store)
    into a 0700 staging directory beside its target, and renames it into place at the
    end; killed before that, the directory stays, and nothing else would tell the
    operator."""
    return leftover.sweep(parent, _STAGING_NAME, directories=True)


def sweep_snapshots(root: Path) -> list[Path]:
    """Remove the store snapshots backups killed midway left in the node directory
    `root` (`backup_bytes`), and name them."""
    return leftover.sweep(root, _SNAPSHOT_NAME, directories=True)


def _check_tls(staging: Path, what: str) -> None:
    """The TLS certificate and key load, as a pair: `run` needs them (service.py), and
    their loss is found here rather than at the restored node's first start."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(staging / _TLS_FILES[0], staging / _TLS_FILES[1])
    except (OSError, ssl.SSLError) as exc:
        reason = (str(exc).splitlines() or ["unreadable"])[0]
        raise UsageError(
            f"the TLS certificate and key in {what} do not load ({reason}); nothing was "
            "restored: use another copy"
        ) from None


def _not_restored(exc: FederationError, staging: Path, what: str) -> FederationError:
    """An error opening the node a backup holds, said of the backup: the staging
    directory it names is gone, and "restore it from your backup" is no advice here."""
    text = str(exc).replace(f"{staging}{os.sep}", "").replace(str(staging), "it")
    if "nothing was restored" in text:
        return exc  # _prepare's own, said of the backup already
    if text.startswith("wrong passphrase"):  # the node's passphrase, not the backup's
        return KeyFileError(f"{text}; nothing was restored")
    head = text.split("; ", 1)[0]
    return UsageError(
        f"the node in {what} does not open ({head}); nothing was restored: use another copy"
    )


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
