"""One node, one process: the run lock on a node directory.

`federation run` holds an exclusive `flock` on `run.lock` in the node directory for
as long as it runs, with its pid written inside. A second `run` of the same
directory (on any port) is refused before it opens the store or binds a socket: two
processes serving one store would both write to it and both answer peers for the
club. Other parts ask `holder(root)`: is a node running here, and which pid.

Why flock and not a pid file alone: the kernel drops the lock when the process ends,
however it ends (a crash, `kill -9`, a power cut), so a lock file left behind by a
dead process never blocks the next start, and no pid is ever guessed alive. The
file is never deleted (deleting it would let two processes lock two different files
of the same name); on a clean stop it is emptied.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from federation.errors import StoreError

LOCK_FILE = "run.lock"
# The pid as decimal text: a pid fits in far fewer bytes; more is not a pid of ours.
MAX_LOCK_BYTES = 32

# The directories this process holds, with how many holders nest inside it (the CLI's
# `run` takes the lock before it opens the node; the service it starts takes it again).
_held: dict[str, tuple[int, int]] = {}  # real path of the directory -> (fd, depth)


def lock_path(root: Path) -> Path:
    return root / LOCK_FILE


def _key(root: Path) -> str:
    return os.path.realpath(root)


def _open(path: Path, flags: int) -> int:
    try:
        # O_NOFOLLOW: a symlink planted in the node directory must not make us lock
        # (or truncate) some other file.
        return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreError(
                f"{path} is a symbolic link; remove it (the node makes its own lock file)",
                path=str(path),
            ) from None
        raise StoreError(
            f"cannot open the run lock {path}: {exc.strerror}; check the node directory's "
            "owner and permissions",
            path=str(path),
        ) from None


def _read_holder(fd: int) -> tuple[int, str]:
    """The pid written in the lock file, and what holds it ("run", or a command such
    as "key rotate"); pid 0 when it is not (yet) readable."""
    try:
        text = os.pread(fd, MAX_LOCK_BYTES, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0, "run"
    pid, _, purpose = text.partition(" ")
    return (int(pid) if pid.isdigit() else 0), purpose or "run"


def _read_pid(fd: int) -> int:
    return _read_holder(fd)[0]


def holder(root: Path) -> int | None:
    """The pid of the process running the node in `root`, or None when none runs.
    0: one runs but has not written its pid yet (it locked a moment ago)."""
    if _key(root) in _held:
        return os.getpid()
    path = lock_path(root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # no lock file: no node ever ran here (or not one of ours)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _refusal(root: Path, pid: int, purpose: str = "run") -> StoreError:
    if purpose != "run":  # a command that changes the node (`key rotate`): never kill it
        return StoreError(
            f"`federation {purpose}` (pid {pid}) is changing the node in {root}; wait for "
            "it to finish, then try again; nothing was changed",
            path=str(lock_path(root)),
        )
    who = f"pid {pid}" if pid else "its pid not yet written"
    stop = f"`kill {pid}`" if pid else "Ctrl-C in its terminal"
    return StoreError(
        f"the node in {root} is already running ({who}); one node directory is served "
        f"by one process: use that one, or stop it first ({stop})",
        path=str(lock_path(root)),
    )


def acquire(root: Path, purpose: str = "run") -> None:
    """Take the run lock on `root` for this process (nesting if it holds it already),
    or raise StoreError naming the pid that holds it. `purpose`: what holds it, for
    whoever is refused ("run", or a command such as "key rotate")."""
    key = _key(root)
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        return
    path = lock_path(root)
    fd = _open(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(root, *_read_holder(fd)) from None
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)  # made by hand, or under an old umask: ours alone
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {purpose}\n".encode(), 0)
    except BaseException:
        os.close(fd)  # closing drops the lock, if it was taken
        raise
    _held[key] = (fd, 1)


def release(root: Path) -> None:
    """Give the lock back (the outermost holder empties the file and unlocks it)."""
    key = _key(root)
    fd, depth = _held[key]
    if depth > 1:
        _held[key] = (fd, depth - 1)
        return
    del _held[key]
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # no pid left behind to mislead a person reading the file
    os.close(fd)


@contextlib.contextmanager
def hold(root: Path) -> Iterator[None]:
    """The run lock on `root` for the duration of the block."""
    acquire(root)
    try:
        yield
    finally:
        release(root)


def refuse_running(root: Path, command: str, pid: int | None = None) -> None:
    """Raise, naming the pid, if a node runs in `root`: for a command that changes what
    a running node holds in memory (the club's signing key: `key rotate`, `key
    revoke`), which would go on signing with the key it unlocked, outside that key's
    window (protocol.md §2.2). Reads only: called before anything is asked or opened."""
    pid = holder(root) if pid is None else pid
    if pid is None:
        return
    who = f"pid {pid}" if pid else "its pid not yet written"
    stop = f"`kill {pid}`" if pid else "Ctrl-C in its terminal"
    raise StoreError(
        f"the node in {root} is running ({who}), and `federation {command}` changes the "
        f"key it signs with: stop it first ({stop}), run the command again, then start "
        "the node; nothing was changed",
        path=str(lock_path(root)),
    )


@contextlib.contextmanager
def hold_stopped(root: Path, command: str) -> Iterator[None]:
    """The run lock for such a command (`refuse_running`), held for the block so that
    no `run` starts halfway."""
    refuse_running(root, command)
    try:
        acquire(root, command)
    except StoreError:
        pid = holder(root)  # a `run` took it just now
        if pid is None:
            raise  # not a lock held: the directory's own error
        refuse_running(root, command, pid)
    try:
        yield
    finally:
        release(root)
