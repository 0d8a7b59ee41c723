"""A `backup -o FILE` or `export -o FILE` killed while it writes FILE leaves no copy of
the club behind for good (node/leftover.py).

The file is written as `.FILE.partial-XXXXXXXX` beside FILE, locked (flock) while
written, and renamed into place whole. A real `federation backup` or `export` process
gets SIGKILL once its partial file holds bytes, found by watching the file system (one
that finished first is tried again, a bounded number of times): the partial stays,
sealed, a copy of the store that would outlive every erasure made after it. The next
backup or export writing into that directory removes it and says so; a partial whose
writer is alive (the lock held, here by the test) is never touched.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest

from federation.node.agefile import MAGIC
from federation.node.keyfile import PASSPHRASE_ENV
from tests.seized.support import (
    PASSPHRASE,
    PAYLOAD_MARKER,
    cli,
    cli_environment,
    cli_quiet,
    init_quiet,
    member_identity,
    ok,
)

KILL_ATTEMPTS = 8
COMMAND_S = 30.0
POLL_S = 0.0002
NOTES = 40
# What the CLI says when it removes one (federation/cli/safety.py `sweep_partials_beside`).
REMOVED = (
    "federation: removed {}: a command writing a file there was interrupted and left "
    "it (the file it was writing, cut short)"
)


@dataclass(frozen=True)
class Club:
    node: Path
    identity: Path
    recipient: str  # the member's age key: sealing to it costs no scrypt


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    with cli_environment():
        root = tmp_path_factory.mktemp("partial")
        node = root / "club"
        init_quiet(node, "Cut Short")
        for i in range(NOTES):
            text = f"{PAYLOAD_MARKER} {i} " + "x" * 4000
            ok(cli_quiet(node, "post", "note", "--log", "minutes", "--text", text))
        member, identity = member_identity(root)
        yield Club(node, identity, str(member.to_public()))


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.delenv("FEDERATION_NODE", raising=False)


def partials(out: Path) -> list[Path]:
    """The partial files of `out`, by the exact name `write_new` gives them."""
    shape = re.compile(re.escape(f".{out.name}.partial-") + "[0-9a-f]{8}")
    return sorted(p for p in out.parent.iterdir() if shape.fullmatch(p.name))


def catch_writing(
    club: Club, command: str, directory: Path, signum: signal.Signals
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Run `federation COMMAND -o FILE --to MEMBER` in a process and send it `signum`
    (SIGKILL, or SIGSTOP to hold it still) once its partial file holds bytes; returns
    the process, FILE and the partial. One that finished first is tried again."""
    for attempt in range(KILL_ATTEMPTS):
        out = directory / f"{attempt}.{command}"
        argv = [sys.executable, "-m", "federation", "--node", str(club.node), command]
        argv += ["-o", str(out), "--to", club.recipient]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + COMMAND_S
        while process.poll() is None and time.monotonic() < deadline:
            if any(size(p) > 0 for p in partials(out)):
                process.send_signal(signum)
                break
            time.sleep(POLL_S)
        if signum == signal.SIGSTOP:
            wait_stopped(process, deadline)
        elif process.poll() is None and time.monotonic() >= deadline:
            process.kill()
        left = partials(out)
        if process.poll() in (None, -signal.SIGKILL) and left:
            assert len(left) == 1
            return process, out, left[0]
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
        _, err = process.communicate(timeout=COMMAND_S)
        assert process.returncode in (0, -signal.SIGKILL), err.decode()
    pytest.fail(f"every one of {KILL_ATTEMPTS} {command} runs finished before it was caught")


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0  # renamed into place meanwhile


def wait_stopped(process: subprocess.Popen[bytes], deadline: float) -> None:
    """Until `process` is stopped (SIGSTOP is delivered asynchronously) or has ended."""
    stat = Path(f"/proc/{process.pid}/stat")
    while process.poll() is None and time.monotonic() < deadline:
        # The state follows the command name, which is in parentheses.
        if stat.read_text().rpartition(")")[2].split()[0] in ("T", "t"):
            return
        time.sleep(POLL_S)


def kill_while_writing(club: Club, command: str, directory: Path) -> tuple[Path, Path]:
    """FILE and the partial a `COMMAND -o FILE` killed while it wrote FILE left."""
    process, out, partial = catch_writing(club, command, directory, signal.SIGKILL)
    _, err = process.communicate(timeout=COMMAND_S)
    assert process.returncode == -signal.SIGKILL, err.decode()
    return out, partial


def removed_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "interrupted" in line]


def check_left_by_the_kill(out: Path, partial: Path) -> None:
    """What the kill left (the positive control for the sweep): no FILE, and beside it a
    hidden 0600 file with the start of an age file: the club, sealed."""
    assert not out.exists()
    assert partial.read_bytes().startswith(MAGIC)
    assert oct(partial.stat().st_mode & 0o777) == oct(0o600)


def test_a_backup_killed_while_writing_its_file_is_removed_by_the_next(
    club: Club, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out, partial = kill_while_writing(club, "backup", tmp_path)
    check_left_by_the_kill(out, partial)
    # The next backup to the same file removes it, says so in one line, and writes.
    run = ok(cli(capsys, club.node, "backup", "-o", str(out), "--to", club.recipient))
    assert removed_lines(run.err) == [REMOVED.format(partial)]
    assert not partial.exists()
    # Nothing else in the directory: only whole files (earlier tries finished whole).
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    target = tmp_path / "restored"
    ok(cli(capsys, None, "restore", str(out), str(target), "--identity", str(club.identity)))
    assert ok(cli(capsys, target, "verify", "--json")).json()["ok"] is True


def test_an_export_killed_while_writing_its_file_is_removed_by_the_next(
    club: Club, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out, partial = kill_while_writing(club, "export", tmp_path)
    check_left_by_the_kill(out, partial)
    # An export elsewhere in the directory is what sweeps it (any -o there does).
    other = tmp_path / "other.export"
    run = ok(cli(capsys, club.node, "export", "-o", str(other), "--to", club.recipient))
    assert removed_lines(run.err) == [REMOVED.format(partial)]
    assert not partial.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # The export written is whole: it opens with the member's key and holds every note.
    member = pyrage.x25519.Identity.from_str(club.identity.read_text().strip())
    lines = pyrage.decrypt(other.read_bytes(), [member]).splitlines()
    note = base64.b64encode(b'{"text":"' + PAYLOAD_MARKER.encode())[:40]  # as payloads go
    assert sum(note in line for line in lines) == NOTES


def test_a_partial_being_written_is_left_alone(
    club: Club, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A partial whose writer is alive: it holds the lock, as `write_new` does.
    busy = tmp_path / ".busy.backup.partial-0123abcd"
    busy.write_bytes(MAGIC + b"sealed bytes")
    busy.chmod(0o600)
    # Just made, empty: its writer may be between creating it and locking it.
    fresh = tmp_path / ".fresh.backup.partial-89abcdef"
    fresh.touch(mode=0o600)
    # Only alike: other shapes of name, a link, a directory. Never ours to remove.
    (tmp_path / ".short.backup.partial-0123abc").write_bytes(b"mine")
    (tmp_path / ".upper.backup.partial-0123ABCD").write_bytes(b"mine")
    (tmp_path / "visible.partial-0123abcd").write_bytes(b"mine")
    (tmp_path / ".link.backup.partial-0123abcd").symlink_to(busy)
    (tmp_path / ".dir.backup.partial-0123abcd").mkdir()
    kept = sorted(p.name for p in tmp_path.iterdir())
    fd = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = tmp_path / "busy.backup"
        run = ok(cli(capsys, club.node, "backup", "-o", str(out), "--to", club.recipient))
        assert removed_lines(run.err) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, out.name])
    finally:
        os.close(fd)
    # Unlocked, it is a leftover: the next backup beside it removes it, and says so; an
    # empty one a minute old is one too (its writer died before it wrote a byte).
    an_hour_ago = time.time() - 3600
    os.utime(fresh, (an_hour_ago, an_hour_ago))
    run = ok(cli(capsys, club.node, "export", "-o", str(tmp_path / "e"), "--to", club.recipient))
    assert sorted(removed_lines(run.err)) == sorted(REMOVED.format(p) for p in (busy, fresh))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {*kept, out.name, "e"} - {busy.name, fresh.name}
    )


def test_a_backup_at_work_keeps_its_partial_and_finishes(
    club: Club, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A live writer for real: a `backup` process stopped (SIGSTOP) while its partial
    holds bytes, and another backup into the same directory meanwhile."""
    process, out, partial = catch_writing(club, "backup", tmp_path, signal.SIGSTOP)
    try:
        assert partial.read_bytes().startswith(MAGIC)
        other = tmp_path / "other.backup"
        run = ok(cli(capsys, club.node, "backup", "-o", str(other), "--to", club.recipient))
        assert removed_lines(run.err) == []
        assert partial.exists()
    finally:
        process.send_signal(signal.SIGCONT)
        _, err = process.communicate(timeout=COMMAND_S)
    assert process.returncode == 0, err.decode()
    assert not partial.exists()
    target = tmp_path / "restored"
    ok(cli(capsys, None, "restore", str(out), str(target), "--identity", str(club.identity)))
    assert ok(cli(capsys, target, "verify", "--json")).json()["ok"] is True


def test_every_new_file_a_command_writes_sweeps_what_a_killed_one_left(
    club: Club, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`calendar --ics` writes its new file as backup and export do (cli/safety.py
    `write_new_file`, used by `proposal export -o` and `--recovery-out` too): a
    leftover beside it goes, with its line; the file itself is whole and 0600."""
    stale = tmp_path / ".cal.ics.partial-00ff00ff"
    stale.write_bytes(b"BEGIN:VCALENDAR cut short")
    stale.chmod(0o600)
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    target = tmp_path / "cal.ics"
    run = ok(cli(capsys, club.node, "calendar", "--ics", str(target)))
    assert removed_lines(run.err) == [REMOVED.format(stale)]
    assert not stale.exists()
    assert target.read_bytes().startswith(b"BEGIN:VCALENDAR")
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_file_made_while_the_new_one_is_written_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`write_new` checks that FILE is new before it writes; another program may make
    FILE while it writes. The partial goes into place by a hard link, which fails where
    a rename would have replaced that file."""
    from federation.errors import UsageError
    from federation.node import leftover

    target = tmp_path / "club.backup"
    real_fsync = os.fsync

    def someone_else_writes(fd: int) -> None:
        real_fsync(fd)
        if not target.exists():
            target.write_bytes(b"another program's file")

    monkeypatch.setattr(os, "fsync", someone_else_writes)
    with pytest.raises(UsageError, match="appeared meanwhile; choose another -o"):
        leftover.write_new(target, b"our backup", command="backup", option="-o")
    assert target.read_bytes() == b"another program's file"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no partial left
    target.unlink()
    monkeypatch.setattr(os, "fsync", real_fsync)
    leftover.write_new(target, b"our backup", command="backup", option="-o")  # control
    assert target.read_bytes() == b"our backup"
    assert target.stat().st_mode & 0o777 == 0o600
