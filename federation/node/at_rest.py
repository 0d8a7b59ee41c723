"""Bringing a node made before encryption at rest up to it, crash-safely.

A node made by an older version has a version 1 key file (the signing secret alone)
and a plain SQLite store. At its first start with the passphrase (`Node.open`):

1. a store key is drawn and the key file is rewritten as version 2 (protocol.md
   §2.3) holding it, by an atomic replace: from then on the key is never lost;
2. the plain store is copied into a new encrypted file beside it (SQLCipher's
   export), which is fsynced, renamed over the old store, and the directory fsynced.

A crash at any instant leaves the old plain store or the new encrypted one, never
neither, and the key file always holds the key of an encrypted store: rerunning
finishes the job (`upgrade` is idempotent). Once the new file is in place the old
one is overwritten with zeros and unlinked; but a filesystem (copy-on-write, a
journal, an SSD's wear levelling) may keep its blocks, and the old WAL is only
truncated: full-disk encryption is still advised (README, "What a seized disk reveals").

A store encrypted in the earlier format (4 KiB pages, store/cipher.py) is converted
by steps 2 and 3 the same way, read with the same store key; nothing is wiped, as
its pages were never readable without the key.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from federation.errors import KeyFileError
from federation.node.keyfile import (
    Envelope,
    new_store_key,
    open_envelope,
    read_key_file,
    replace_private,
    seal_envelope,
    sync_directory,
)
from federation.store import cipher

Step = Callable[[str], None]
# The stages, in order: a test stops the upgrade after each one (a crash there).
STEPS = ("key file upgraded", "exported", "synced", "renamed", "directory synced")


def _no_step(_: str) -> None:
    pass


def upgrade(
    key_path: Path,
    store_path: Path,
    envelope: Envelope,
    club: bytes,
    passphrase: bytes | None,
    *,
    step: Step = _no_step,
) -> Envelope:
    """The envelope of a node whose key file is version 2 and whose store is encrypted
    in this format, doing whatever is not done yet (blocking file work: run it in a
    thread). One process at a time upgrades a node (the first `run` after an upgrade
    and a `status` beside it may both try): the second waits, then finds it done."""
    if not _needs_upgrade(store_path, envelope):
        return envelope
    with _one_at_a_time(store_path):
        # Read again under the lock: another process may have upgraded it meanwhile.
        envelope = open_envelope(read_key_file(key_path), club, passphrase, str(key_path))
        return _upgrade(key_path, store_path, envelope, club, passphrase, step)


def _needs_upgrade(store_path: Path, envelope: Envelope) -> bool:
    if envelope.store_key is None or cipher.is_plaintext(store_path):
        return True
    return cipher.in_earlier_format(store_path, envelope.store_key)


@contextlib.contextmanager
def _one_at_a_time(store_path: Path) -> Iterator[None]:
    """An exclusive flock on the store file as it is now (SQLite's own locks are POSIX
    record locks, which flock does not touch). Whoever waited for it checks the path
    again: after a conversion that is the new file, which needs nothing."""
    fd = os.open(store_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _upgrade(
    key_path: Path,
    store_path: Path,
    envelope: Envelope,
    club: bytes,
    passphrase: bytes | None,
    step: Step,
) -> Envelope:
    if envelope.store_key is None:
        if store_path.exists() and not cipher.is_plaintext(store_path):
            raise KeyFileError(
                f"key file {key_path} holds no store key but store {store_path} is encrypted: "
                "this key file is older than the store; restore the club.key that came with it",
                path=str(key_path),
            )
        store_key = new_store_key()
        # The key is safe on disk before any page is encrypted with it.
        replace_private(key_path, seal_envelope(envelope.key, store_key, club, passphrase))
        envelope = Envelope(envelope.key, store_key, 2, envelope.encrypted)
        step("key file upgraded")
    assert envelope.store_key is not None
    if cipher.is_plaintext(store_path):
        encrypt_store(store_path, envelope.store_key, step)
    elif cipher.in_earlier_format(store_path, envelope.store_key):
        encrypt_store(store_path, envelope.store_key, step, earlier=True)
    return envelope


# Zeros are written over the replaced plain file this much at a time.
_WIPE_CHUNK_BYTES = 1 << 20


def encrypt_store(
    store_path: Path, store_key: bytes, step: Step = _no_step, *, earlier: bool = False
) -> None:
    """Replace a plain store (or, `earlier`, one in the earlier encrypted format: its
    pages were never readable, so nothing is wiped) by an encrypted copy in this
    format: old or new at every instant."""
    temp = store_path.with_name(store_path.name + ".encrypting")
    cipher.export_copy(store_path, temp, store_key, step, earlier=earlier)
    # The plain file stays open past its rename, so that once the encrypted one is
    # durably in its place, its pages can be overwritten: never before (it would be
    # the only copy), and best effort (a filesystem may keep old blocks elsewhere).
    with store_path.open("r+b") as plain:
        os.replace(temp, store_path)
        step("renamed")
        sync_directory(store_path.parent)
        step("directory synced")
        if not earlier:
            _wipe(plain.fileno())
    cipher.remove_side_files(store_path)


def _wipe(fd: int) -> None:
    remaining = os.fstat(fd).st_size
    os.lseek(fd, 0, os.SEEK_SET)
    zeros = bytes(_WIPE_CHUNK_BYTES)
    while remaining > 0:
        remaining -= os.write(fd, zeros[: min(remaining, len(zeros))])
    os.fsync(fd)
