"""A restore or a key revocation cut off midway leaves nothing behind that the operator
does not know of, and running the command again finishes the job (issue 11).

A restore is killed for real: a `federation restore` process gets SIGKILL once its
staging directory holds the backup's files, found by watching the file system (a
restore that finished first is tried again, a bounded number of times). A revocation
is cut between its writes by running its steps (node/keys.py `revocation_steps`, the
very functions `key revoke` runs) up to a point against a real node directory, the
process going no further; then `federation key revoke` is run again. And a `key
revoke` process is killed for real while its staged key is on disk, wherever that
finds it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest

from federation.core import canonical
from federation.core.canonical import Audience, Kind
from federation.core.crypto import SigningKey
from federation.core.events import sign_event
from federation.core.keys import CUT_ENTRY_BYTES, CutMark, padding_entries, seal_cut
from federation.core.payloads import make_payload
from federation.node import keys as node_keys
from federation.node import recovery
from federation.node.keyfile import PASSPHRASE_ENV
from federation.node.node import Node, init_node
from tests.keys.support import RECOVERY_SEED, public_log
from tests.seized.support import (
    PASSPHRASE,
    Run,
    cli,
    cli_environment,
    cli_quiet,
    init_quiet,
    member_identity,
    ok,
)

# A restore of the small node below runs for about a second; the staging directory
# holds the files for the last few tenths of it (opening and verifying the store).
KILL_ATTEMPTS = 5
RESTORE_S = 30.0
POLL_S = 0.002


@dataclass(frozen=True)
class Backed:
    root: Path
    node: Path
    backup: Path  # sealed to the member's age key: it opens in a millisecond
    identity: Path


@pytest.fixture(scope="module")
def backed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backed]:
    with cli_environment():
        root = tmp_path_factory.mktemp("interrupted")
        node = root / "club"
        init_quiet(node, "Cut Short")
        for i in range(20):
            ok(cli_quiet(node, "post", "note", "--log", "minutes", "--text", f"minute {i}"))
        member, identity = member_identity(root)
        backup = root / "club.backup"
        ok(cli_quiet(node, "backup", "-o", str(backup), "--to", str(member.to_public())))
        yield Backed(root, node, backup, identity)


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.delenv("FEDERATION_NODE", raising=False)


def staging_dirs(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if ".restoring-" in p.name)


def kill_a_restore_midway(backed: Backed, parent: Path, target: Path) -> Path:
    """Run `federation restore` in a process and SIGKILL it once its staging directory
    holds the store; returns that directory. A restore that finished before it was
    seen is undone and tried again."""
    command = [sys.executable, "-m", "federation", "restore", str(backed.backup), str(target)]
    command += ["--identity", str(backed.identity)]
    for _ in range(KILL_ATTEMPTS):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + RESTORE_S
        try:
            while process.poll() is None and time.monotonic() < deadline:
                found = staging_dirs(parent)
                if found and (found[0] / "store.sqlite").exists():
                    process.send_signal(signal.SIGKILL)
                    break
                time.sleep(POLL_S)
        finally:
            if process.poll() is None and time.monotonic() >= deadline:
                process.kill()
            _, err = process.communicate(timeout=RESTORE_S)
        left = staging_dirs(parent)
        if process.returncode == -signal.SIGKILL and left:
            assert len(left) == 1
            return left[0]
        # Finished first (or killed only after its rename): undo it and try again.
        assert process.returncode in (0, -signal.SIGKILL), err.decode()
        shutil.rmtree(target, ignore_errors=True)
    pytest.fail(f"every one of {KILL_ATTEMPTS} restores finished before it could be killed")


def test_a_restore_killed_midway_is_cleaned_up_by_the_next(
    backed: Backed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "restored"
    staging = kill_a_restore_midway(backed, tmp_path, target)
    # What the crash left: a 0700 directory with the backup's secrets, and no node.
    assert not target.exists()
    assert (staging / "tls.key").exists()
    assert oct(staging.stat().st_mode & 0o777) == oct(0o700)
    # Starting the node that is not there says what happened, and what to run.
    started = cli(capsys, target, "status")
    assert started.code == 2
    assert started.err == (
        f"federation: error: no node at {target}: a restore into it was cut off and left "
        f"{staging}; run `federation restore` again (it removes what was left)\n"
    )
    run = ok(
        cli(
            capsys,
            None,
            "restore",
            str(backed.backup),
            str(target),
            "--identity",
            str(backed.identity),
        )
    )
    said = [line for line in run.err.splitlines() if "interrupted" in line]
    assert said == [
        f"federation: removed {staging}: a restore that was interrupted left it there "
        "(a copy of a node's key envelope, TLS key and store)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restored"]
    assert ok(cli(capsys, target, "verify", "--json")).json()["ok"] is True


def test_a_restore_at_work_is_left_alone(
    backed: Backed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Another restore's staging directory, locked as a restore at work holds it; and
    # things that only look like one: a file, a link, a name of another shape.
    busy = tmp_path / ".other.restoring-0123abcd"
    busy.mkdir(mode=0o700)
    (busy / "tls.key").write_bytes(b"secret")
    (tmp_path / ".a-file.restoring-0123abcd").write_bytes(b"mine")
    (tmp_path / ".a-link.restoring-0123abcd").symlink_to(busy)
    (tmp_path / ".short.restoring-01").mkdir()
    # An empty one just made: its restore may be between its mkdir and its lock.
    (tmp_path / ".fresh.restoring-89abcdef").mkdir()
    kept = sorted(p.name for p in tmp_path.iterdir())
    fd = os.open(busy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        target = tmp_path / "restored"
        run = ok(
            cli(
                capsys,
                None,
                "restore",
                str(backed.backup),
                str(target),
                "--identity",
                str(backed.identity),
            )
        )
        assert "interrupted" not in run.err
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "restored"])
    finally:
        os.close(fd)
    # Unlocked, it is a leftover: the next restore beside it removes it, and says so.
    run = ok(
        cli(
            capsys,
            None,
            "restore",
            str(backed.backup),
            str(tmp_path / "again"),
            "--identity",
            str(backed.identity),
        )
    )
    assert f"removed {busy}: a restore that was interrupted" in run.err
    assert not busy.exists()
    assert (tmp_path / ".fresh.restoring-89abcdef").exists()


# --- a key revocation cut off between its writes ------------------------------------------

LATE = 2  # notes posted after the point the revocation names: held apart by it


@dataclass(frozen=True)
class Club:
    root: Path
    words: Path  # the recovery words, as the operator keeps them
    before: str  # --before: after the first notes, before the LATE ones


def revoke(club: Club, capsys: pytest.CaptureFixture[str], *more: str) -> Run:
    """`key revoke` with the club's recovery words, from the point it names: it exits 0."""
    words = ("--words-file", str(club.words), "--before", club.before)
    return ok(cli(capsys, club.root, "key", "revoke", *words, *more))


def make_club(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Club:
    root = tmp_path / "club"
    asyncio.run(
        init_node(
            root,
            name="Seized",
            listen="127.0.0.1:0",
            passphrase=None,
            plain_http=True,
            recovery_seed=RECOVERY_SEED,
        )
    )
    for i in range(3):
        ok(cli(capsys, root, "post", "note", "--log", "minutes", "--text", f"kept {i}"))
    time.sleep(0.01)
    before = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(0.01)
    for i in range(LATE):
        ok(cli(capsys, root, "post", "note", "--log", "minutes", "--text", f"late {i}"))
    words = tmp_path / "words.txt"
    words.write_text(recovery.words(RECOVERY_SEED))
    return Club(root, words, before)


def cut_off(club: Club, steps_done: int) -> list[str]:
    """Run the first `steps_done` of `key revoke`'s writes, in this process, and stop
    there as a crash would (what was committed stays, nothing after it happens)."""

    async def go() -> list[str]:
        before_us = int(dt.datetime.fromisoformat(club.before).timestamp() * 1_000_000)
        async with await Node.open(club.root) as node:
            steps, _ = await node_keys.revocation_steps(
                node, SigningKey(RECOVERY_SEED), before_us=before_us
            )
            for step in steps[:steps_done]:
                await step.run()
            return [step.name for step in steps]

    return asyncio.run(go())


def check_revoked_once(club: Club, capsys: pytest.CaptureFixture[str], held: int = LATE) -> None:
    """The state a whole `key revoke` leaves, and only one revocation made: `held`
    events of ours held apart (those after --before, and any seizer's key event)."""
    assert not (club.root / "club.key.next").exists()
    status = ok(cli(capsys, club.root, "key", "status", "--json")).json()
    assert [e["action"] for e in status["epochs"]] == ["genesis", "revoke"]
    events = f"{held} event" + ("" if held == 1 else "s")
    assert f"{events} of ours held apart" in ok(cli(capsys, club.root, "key", "status")).out
    assert ok(cli(capsys, club.root, "verify", "--json")).json()["ok"] is True
    # The node signs with the new key, after the kept notes.
    posted = ok(cli(capsys, club.root, "post", "note", "--log", "minutes", "--text", "on"))
    assert " #4 " in posted.out, posted.out
    assert ok(cli(capsys, club.root, "key", "status", "--json")).json()["key"] == status["key"]


STEPS = 5  # node/keys.py key_change_steps; checked below


@pytest.mark.parametrize("steps_done", range(1, STEPS))
def test_a_revocation_cut_off_is_finished_by_running_it_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], steps_done: int
) -> None:
    club = make_club(tmp_path, capsys)
    names = cut_off(club, steps_done)
    assert len(names) == STEPS
    assert (club.root / "club.key.next").exists()  # the crash left the change half made
    run = revoke(club, capsys, "--json")
    appended = names.index("append the key event") < steps_done
    assert run.json().get("finished", False) is appended, (names[:steps_done], run.out)
    check_revoked_once(club, capsys)


def test_a_revocation_cut_off_after_its_event_is_finished_by_the_next_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    club = make_club(tmp_path, capsys)
    names = cut_off(club, 3)
    assert names[2] == "append the key event"
    # Any command that opens the node finishes it: the windows, then the key file.
    ok(cli(capsys, club.root, "status"))
    check_revoked_once(club, capsys)


def test_a_revoke_process_killed_midway_is_finished_by_running_it_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same for real: `key revoke` in its own process, SIGKILLed while its staged
    key is on disk (between its first write and its last), wherever that finds it."""
    for attempt in range(KILL_ATTEMPTS):
        club = make_club(tmp_path / str(attempt), capsys)
        command = [sys.executable, "-m", "federation", "--node", str(club.root), "key"]
        command += ["revoke", "--words-file", str(club.words), "--before", club.before]
        staged = club.root / "club.key.next"
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + RESTORE_S
        while process.poll() is None and time.monotonic() < deadline:
            if staged.exists():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(POLL_S / 10)
        if process.poll() is None and time.monotonic() >= deadline:
            process.kill()
        _, err = process.communicate(timeout=RESTORE_S)
        if process.returncode == -signal.SIGKILL and staged.exists():
            break  # cut off between its writes
        assert process.returncode in (0, -signal.SIGKILL), err.decode()
    else:
        pytest.fail(f"every one of {KILL_ATTEMPTS} revocations ended before it was killed")
    run = revoke(club, capsys)
    assert "revoke" in run.out or "revocation" in run.out
    check_revoked_once(club, capsys)


def test_a_staged_key_torn_by_a_crash_is_dropped_at_the_next_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a kill while the staged key was written could leave before it was written
    # whole (node.py writes it to a temporary file and renames it now): a start drops
    # it, since its key event cannot have followed, and the revocation runs as asked.
    club = make_club(tmp_path, capsys)
    cut_off(club, 1)
    staged = club.root / "club.key.next"
    staged.write_bytes(staged.read_bytes()[:40])
    ok(cli(capsys, club.root, "status"))
    assert not staged.exists()
    run = revoke(club, capsys, "--json")
    assert "finished" not in run.json()
    check_revoked_once(club, capsys)


def seizer_rotates(root: Path) -> None:
    """What a seizer signs with the copied key and a sync brings here: a rotation to a
    key of its own, in the club's keys log (as tests/keys/test_revoke_after_seizer_
    rotation.py makes it). The node's key is then no longer in force."""

    async def go() -> None:
        async with await Node.open(root) as node:
            seized = node.unlock()
            _, first = await node.post(Kind.NOTE, {"text": "legit"}, Audience("public"))
            keys_log = await node.own_log(Audience("public"), "keys")
            theirs = SigningKey(canonical.sha256(b"the seizer's own key"))
            mark = CutMark(public_log(node.club), first.id, 1, first.id)
            cut = seal_cut(1, [mark], bytes(padding_entries(1) * CUT_ENTRY_BYTES))
            fields: dict[str, object] = {"action": "rotate", "key": theirs.public.hex()}
            fields |= {"revoked": seized.public.hex(), "cut": [e.hex() for e in cut]}
            rotation = sign_event(
                seized,
                club=node.club,
                log=keys_log.id,
                head=None,
                time_us=node.clock(),
                kind=Kind.KEY,
                payload=make_payload(Kind.KEY, fields),
            )
            await node.store.append([rotation])

    asyncio.run(go())


def test_a_revocation_cut_off_after_replacing_the_seizers_rotation_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    club = make_club(tmp_path, capsys)
    seizer_rotates(club.root)
    names = cut_off(club, 2)
    assert names[1] == "hold apart the seizer's key events"
    # The seized key is in force here again (the seizer's rotation is held apart) and
    # the revocation is not written: a start that would sign refuses, saying what to run.
    refused = cli(capsys, club.root, "post", "note", "--log", "minutes", "--text", "x")
    assert refused.code != 0
    assert refused.err == (
        "federation: error: a `federation key revoke` was cut off before its key event "
        "was written: run it again to finish it (this node signs nothing until then)\n"
    )
    ok(cli(capsys, club.root, "status"))  # reading is fine
    run = revoke(club, capsys, "--json")
    assert run.json()["seq"] == 1  # in the seizer's place
    # Held apart: the late notes, the note posted before the seizure, its rotation.
    check_revoked_once(club, capsys, held=LATE + 2)


def test_a_restore_into_the_current_directory(backed: Backed, tmp_path: Path) -> None:
    # `restore FILE .` in an empty directory: its staging directory goes beside it
    # under its own name, and the rename lands on it (was: rmdir('.'), a traceback).
    here = tmp_path / "here"
    here.mkdir()
    command = [sys.executable, "-m", "federation", "restore", str(backed.backup), "."]
    command += ["--identity", str(backed.identity)]
    done = subprocess.run(command, cwd=here, capture_output=True, timeout=RESTORE_S)
    assert done.returncode == 0, done.stderr.decode()
    assert (here / "config.toml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_a_backup_killed_midway_is_cleaned_up_by_the_next(
    backed: Backed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`federation backup` snapshots the store into a directory of its own in the node
    directory; killed while that holds the snapshot (a copy of the store, which would
    outlive an erasure), the next backup removes it and says so."""
    member = pyrage.x25519.Identity.from_str(backed.identity.read_text().strip())
    recipient = str(member.to_public())
    for attempt in range(KILL_ATTEMPTS):
        out = tmp_path / f"{attempt}.backup"
        command = [sys.executable, "-m", "federation", "--node", str(backed.node), "backup"]
        command += ["-o", str(out), "--to", recipient]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + RESTORE_S
        while process.poll() is None and time.monotonic() < deadline:
            if any((p / "store.sqlite").exists() for p in backed.node.glob(".backup-*")):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(POLL_S / 10)
        if process.poll() is None and time.monotonic() >= deadline:
            process.kill()
        _, err = process.communicate(timeout=RESTORE_S)
        left = sorted(backed.node.glob(".backup-*"))
        if process.returncode == -signal.SIGKILL and left:
            break
        assert process.returncode in (0, -signal.SIGKILL), err.decode()
    else:
        pytest.fail(f"every one of {KILL_ATTEMPTS} backups ended before it was killed")
    assert len(left) == 1
    assert oct(left[0].stat().st_mode & 0o777) == oct(0o700)
    after = tmp_path / "after.backup"
    run = ok(cli(capsys, backed.node, "backup", "-o", str(after), "--to", recipient))
    said = [line for line in run.err.splitlines() if "interrupted" in line]
    assert said == [
        f"federation: removed {left[0]}: a backup that was interrupted left it there "
        "(a copy of the store)"
    ]
    assert list(backed.node.glob(".backup-*")) == []
    assert after.exists()
