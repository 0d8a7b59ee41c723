"""What a command writes before it is whole, and what a killed one left of it.

A command that writes a file the user named (`backup -o`, `export -o`, `proposal
export -o`, `calendar --ics`, `--recovery-out`: cli/safety.py), a restore's
new node directory, or a backup's snapshot of the store first writes it under a
hidden name of its own shape, beside where it goes:

- `.NAME.partial-XXXXXXXX`, beside such a file NAME (`write_new`): the file, cut
  short (a backup or export sealed with age, unless an export was asked for
  `--plain`; the others as they are written);
- `.DIR.restoring-XXXXXXXX/`, beside a restore's new node directory DIR
  (node/backup.py): the key envelope, the TLS key and the store;
- `.backup-XXXXXXXXXXXXXXXX/`, in the node directory, a backup's snapshot of the
  store (node/backup.py).

The process that makes one holds an exclusive flock on it from before anything is
written in it until it is renamed into place or removed; the lock goes with the
process, however it ends (SIGKILL, a power cut). So one nobody holds locked was left
by a command that was killed, and would stay for good: a copy of the store that
outlives the erasures made after it. The next command that writes there removes it
(`sweep`) and the CLI says so in one line. One whose lock is held is another
process at work, and is never touched.

Other files written beside their place and renamed into it have a fixed name, which
the next write of the same file removes first: `club.key.tmp` and `club.key.next.tmp`
(node/keyfile.py `replace_private`: an envelope under the node's own passphrase), and
the store's `.encrypting` copy while a plain store is encrypted (node/at_rest.py: a
killed upgrade is run again at the next start).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
from pathlib import Path

from federation.errors import UsageError
from federation.node.keyfile import sync_directory
from federation.node.system import random_bytes, system_clock

# `write_new`'s partial file beside `-o NAME`: NAME, then 8 hex digits.
PARTIAL_NAME = re.compile(r"\..+\.partial-[0-9a-f]{8}")
# An empty one younger than this may be just made, between its creation and its lock.
YOUNG_S = 60.0


def write_new(path: Path, data: bytes, *, command: str, option: str) -> None:
    """Write `data` to the new file `path`, 0600, whole or not at all, never over a file.

    It is written to `.NAME.partial-XXXXXXXX` beside `path`, locked while written,
    fsynced, and linked into place: a `path` that exists is whole. Killed before that,
    the partial is left locked by nobody, and `sweep_partials` removes it."""
    if os.path.lexists(path):
        raise UsageError(
            f"{path} already exists and {command} never overwrites; choose another {option}"
        )
    partial = path.with_name(f".{path.name}.partial-{random_bytes(4).hex()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(partial, flags, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # before any byte: see `sweep`
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        _link_new(partial, path, option)
        sync_directory(path.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):  # gone once renamed into place
            os.unlink(partial)  # still locked here: no sweep takes it for a leftover
        os.close(fd)


def _link_new(partial: Path, path: Path, option: str) -> None:
    """`partial` in place as `path`, never over a file, even one made a moment ago: a
    hard link fails if `path` exists, where a rename would replace it. (The partial's
    own name goes when `write_new` unlinks it.)"""
    try:
        os.link(partial, path)
    except FileExistsError:
        raise UsageError(f"{path} appeared meanwhile; choose another {option}") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV):
            raise
        # A file system without hard links: the check, then the rename.
        if os.path.lexists(path):
            raise UsageError(f"{path} appeared meanwhile; choose another {option}") from None
        os.rename(partial, path)


def locked_directory(path: Path) -> int:
    """Make `path`, 0700, and lock it; the descriptor holds the lock until closed (or
    the process ends, however it ends). Nothing is written in it before the lock, so
    `sweep` takes one that holds anything and is not locked for a leftover."""
    try:
        path.mkdir(mode=0o700)
    except OSError as exc:
        raise UsageError(
            f"cannot write in {path.parent}: {exc.strerror}; check its owner and permissions"
        ) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        path.rmdir()
        raise UsageError(
            f"cannot open {path}: {exc.strerror}; check its owner and permissions"
        ) from None
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def sweep_partials(directory: Path) -> list[Path]:
    """Remove the partial files killed backups and exports left in `directory` (where
    `-o` writes), and name them."""
    return sweep(directory, PARTIAL_NAME, directories=False)


def sweep(parent: Path, pattern: re.Pattern[str], *, directories: bool) -> list[Path]:
    """What of ours in `parent` is named by `pattern` (our uid; a directory, or with
    `directories` false a regular file; never a link) and nobody holds locked: removed,
    and named. An empty one younger than a minute may be between its creation and its
    lock: left for next time."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed  # the directory's own error comes from the command itself
    kind = stat.S_ISDIR if directories else stat.S_ISREG
    # O_NONBLOCK: a FIFO put in a file's place meanwhile does not hang the open.
    flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if directories else os.O_NONBLOCK)
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not kind(st.st_mode) or st.st_uid != os.getuid():
                continue
            fd = os.open(entry.path, flags)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                continue  # replaced since it was looked at: not the one checked
            empty = not os.listdir(fd) if directories else now.st_size == 0
            if empty and system_clock() / 1e6 - now.st_mtime < YOUNG_S:
                continue
            if directories:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue  # locked: a command at work there; or it went meanwhile
        finally:
            os.close(fd)
    return removed
