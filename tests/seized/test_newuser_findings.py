"""What a demanding new user (and an attacker) found trying issue 11 from a fresh clone,
each through the real CLI: a key change beside a running node, the recovery sheet read
back as it was written, shares of another set, a revocation from before the club
existed, a node without a passphrase sealing a file, a wrong FEDERATION_PASSPHRASE, a
damaged age header, a log made after a restore, an agreement record written over a
file, a node directory others can open, and a terminal that does not know its size."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federation.node import lock, recovery
from federation.node.agefile import MAGIC
from federation.node.keyfile import PASSPHRASE_ENV
from tests.seized.support import (
    CLUB_MARKER,
    LOG_MARKER,
    PASSPHRASE,
    PAYLOAD_MARKER,
    Run,
    cli,
    free_port,
    ok,
    running,
    tree,
)

OTHER_SEED = bytes(range(32))  # another club's recovery secret


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.delenv("FEDERATION_NODE", raising=False)


def new_club(capsys: pytest.CaptureFixture[str], root: Path, *init: str) -> Path:
    listen = f"127.0.0.1:{free_port()}"
    ok(cli(capsys, root, "init", "--name", CLUB_MARKER, "--plain-http", "--listen", listen, *init))
    ok(cli(capsys, root, "post", "note", "--log", LOG_MARKER, "--text", PAYLOAD_MARKER))
    return root


def refused(run: Run, code: int, *needles: str) -> str:
    """One line on stderr, the exit code, and each needle in the line."""
    assert run.code == code, (run.code, run.err)
    line = run.error_line
    assert line.startswith("federation: error: ")
    for needle in needles:
        assert needle in line, line
    return line


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode for p in root.rglob("*")}


def share_lines(sheet: Path) -> list[str]:
    return [line for line in sheet.read_text().splitlines() if line.startswith("share ")]


# --- key rotate / revoke beside a running node ------------------------------------------


def test_key_rotate_and_revoke_refuse_while_the_node_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: `key rotate` beside `run` was accepted, and a post made at once after it
    was signed with the replaced key (verify FAILED, peers hold it apart)."""
    sheet = tmp_path / "sheet"
    club = new_club(
        capsys, tmp_path / "club", "--recovery-shares", "2/3", "--recovery-out", str(sheet)
    )
    key_before = (club / "club.key").read_bytes()
    with running(club, tmp_path / "run.stderr") as process:
        for args in (("rotate",), ("revoke", "--share", str(sheet))):
            line = refused(
                cli(capsys, club, "key", *args),
                1,
                f"is running (pid {process.pid})",
                f"`federation key {args[0]}`",
                "stop it first",
                "nothing was changed",
            )
            assert str(club) in line
        # Without --share and without a terminal the words would be asked for: the
        # running node is named first, before anything is asked.
        refused(cli(capsys, club, "key", "revoke"), 1, "is running")
        assert (club / "club.key").read_bytes() == key_before
        assert ok(cli(capsys, club, "key", "status", "--json")).json()["since"] == 0
    rotated = ok(cli(capsys, club, "key", "rotate", "--json")).json()
    assert (club / "club.key").read_bytes() != key_before
    assert ok(cli(capsys, club, "key", "status", "--json")).json()["key"] == rotated["new"]
    ok(cli(capsys, club, "post", "note", "--text", "under the new key"))
    assert ok(cli(capsys, club, "verify")).out.startswith("verify ok")


def test_a_node_started_during_a_key_change_names_the_key_command_not_kill(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found by review: while `key rotate` held the run lock, `run` said the node was
    already running and offered `kill PID`, which would kill the rotation half-way.
    The lock is held here as `key rotate` holds it (lock.acquire with its command)."""
    club = new_club(capsys, tmp_path / "club")
    lock.acquire(club, "key rotate")
    try:
        started = subprocess.run(
            [sys.executable, "-m", "federation", "--node", str(club), "run"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        lock.release(club)
    assert started.returncode == 1, started.stderr
    line = started.stderr.strip()
    assert "\n" not in line
    assert f"`federation key rotate` (pid {os.getpid()}) is changing the node" in line
    assert "kill" not in line


# --- the recovery secret, read back ---------------------------------------------------


def test_shares_of_another_set_are_named_as_such_and_change_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: another club's share with the same member number as one of ours was
    called "the same member's share (typed twice?)"."""
    sheet = tmp_path / "sheet"
    club = new_club(
        capsys, tmp_path / "club", "--recovery-shares", "3/5", "--recovery-out", str(sheet)
    )
    ours = share_lines(sheet)
    theirs = recovery.split(OTHER_SEED, 3, 5)
    files = []
    for i, text in enumerate([ours[0], ours[1], theirs[0]]):  # theirs[0]: member 1 too
        files += ["--share", str(tmp_path / f"s{i}")]
        (tmp_path / f"s{i}").write_text(text + "\n")
    before, before_modes = tree(club), modes(club)
    line = refused(
        cli(capsys, club, "key", "revoke", *files), 2, "shares 1 and 3", "different sets"
    )
    assert "typed twice" not in line
    assert tree(club) == before
    assert modes(club) == before_modes


def test_the_recovery_sheet_is_read_back_as_it_was_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: `key revoke --words-file` refused the very file `init --recovery-out`
    wrote ("82 were given"), and a share line copied with its label was not a share."""
    words_sheet, shares_sheet = tmp_path / "words", tmp_path / "shares"
    worded = new_club(capsys, tmp_path / "worded", "--recovery-out", str(words_sheet))
    shared = new_club(
        capsys, tmp_path / "shared", "--recovery-shares", "3/5", "--recovery-out", str(shares_sheet)
    )
    # The wrong kind of sheet is named, and nothing changes.
    before = tree(worded), tree(shared)
    refused(
        cli(capsys, worded, "key", "revoke", "--share", str(words_sheet)),
        2,
        "these are the 24 recovery words, not a share",
        "--words-file",
    )
    refused(
        cli(capsys, shared, "key", "revoke", "--words-file", str(shares_sheet)),
        2,
        "these are recovery shares",
        "--share",
    )
    assert (tree(worded), tree(shared)) == before

    ok(cli(capsys, worded, "key", "revoke", "--words-file", str(words_sheet)))
    # Three members each copied their own line of the sheet, label and all.
    files = []
    for i, line in enumerate(share_lines(shares_sheet)[1:4]):
        (tmp_path / f"member{i}").write_text(line + "\n")
        files += ["--share", str(tmp_path / f"member{i}")]
    ok(cli(capsys, shared, "key", "revoke", *files))
    for club in (worded, shared):
        status = ok(cli(capsys, club, "key", "status", "--json")).json()
        assert [e["action"] for e in status["epochs"]] == ["genesis", "revoke"]


def test_a_revocation_from_before_the_club_existed_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: `--before 2000-01-01` (a mistyped year) was accepted and held apart every
    event the club ever signed, for good, on every peer."""
    sheet = tmp_path / "sheet"
    club = new_club(capsys, tmp_path / "club", "--recovery-out", str(sheet))
    before, before_modes = tree(club), modes(club)
    refused(
        cli(
            capsys,
            club,
            "key",
            "revoke",
            "--words-file",
            str(sheet),
            "--before",
            "2000-01-01T00:00+00:00",
        ),
        2,
        "is before the club was created",
        "nothing was changed",
    )
    assert tree(club) == before  # not even the run lock file
    assert modes(club) == before_modes


# --- passphrases ----------------------------------------------------------------------


def test_a_node_without_a_passphrase_seals_files_with_one_of_their_own(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found: on a `--no-passphrase` node, backup and export said "the key is encrypted
    and there is no terminal", and at a terminal asked once for "Club key passphrase"."""
    monkeypatch.delenv(PASSPHRASE_ENV)
    club = new_club(capsys, tmp_path / "club", "--no-passphrase")
    before = tree(tmp_path)
    for args in (
        ("backup", "-o", str(tmp_path / "club.backup")),
        ("export", "-o", str(tmp_path / "club.export")),
    ):
        refused(
            cli(capsys, club, *args),
            2,
            "this node has no passphrase",
            PASSPHRASE_ENV,
            "--to",
            "nothing was written",
        )
    assert tree(tmp_path) == before

    monkeypatch.setenv(PASSPHRASE_ENV, "a passphrase for the backup file")
    ok(cli(capsys, club, "backup", "-o", str(tmp_path / "club.backup")))
    ok(cli(capsys, club, "export", "-o", str(tmp_path / "club.export")))
    ok(cli(capsys, club, "export", "--plain", "-o", str(tmp_path / "plain.export")))
    assert LOG_MARKER.encode() in (tmp_path / "plain.export").read_bytes()  # the control
    for sealed in ("club.backup", "club.export"):
        data = (tmp_path / sealed).read_bytes()
        assert (tmp_path / sealed).stat().st_mode & 0o777 == 0o600
        for marker in (PAYLOAD_MARKER, LOG_MARKER, CLUB_MARKER):
            assert marker.encode() not in data
            assert marker.encode().hex().encode() not in data
    ok(cli(capsys, None, "restore", str(tmp_path / "club.backup"), str(tmp_path / "back")))
    assert ok(cli(capsys, tmp_path / "back", "verify")).out.startswith("verify ok")

    # Opening such a file without the passphrase: one line that points to the way in
    # (found by review: it said "--to", an option of sealing, not of import).
    monkeypatch.delenv(PASSPHRASE_ENV)
    other = new_club(capsys, tmp_path / "other", "--no-passphrase")
    before = tree(tmp_path / "other")
    refused(
        cli(capsys, other, "import", str(tmp_path / "club.export")),
        2,
        "this node has no passphrase",
        PASSPHRASE_ENV,
        "--identity FILE",
    )
    assert tree(tmp_path / "other") == before


def test_a_wrong_passphrase_from_the_environment_says_where_it_came_from(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found: "wrong passphrase ...; try again" when FEDERATION_PASSPHRASE was wrong:
    trying again gives the same passphrase again."""
    club = new_club(capsys, tmp_path / "club")
    ok(cli(capsys, club, "backup", "-o", str(tmp_path / "club.backup")))
    before = tree(tmp_path)
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase at all")
    for args, node in (
        (("status",), club),
        (("restore", str(tmp_path / "club.backup"), str(tmp_path / "back")), None),
    ):
        line = refused(cli(capsys, node, *args), 1, "wrong passphrase for", PASSPHRASE_ENV)
        assert "try again" not in line
    assert tree(tmp_path) == before


def test_a_wrong_passphrase_from_the_passphrase_file_names_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left by the pass above, mended after: a wrong passphrase in key.passphrase_file
    ended "try again", which reads the same file again."""
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    secret = tmp_path / "passphrase"
    secret.write_text("the right passphrase for this node\n")
    secret.chmod(0o600)
    club = new_club(capsys, tmp_path / "club", "--passphrase-file", str(secret))
    ok(cli(capsys, club, "status"))
    secret.write_text("not the passphrase at all\n")
    before = tree(club)
    line = refused(cli(capsys, club, "status"), 1, "wrong passphrase for", f"one in {secret}")
    assert "try again" not in line
    assert tree(club) == before


def test_a_damaged_backup_header_is_one_plain_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: the age library's own text ran over two lines, with an upgrade hint."""
    club = new_club(capsys, tmp_path / "club")
    backup = tmp_path / "club.backup"
    ok(cli(capsys, club, "backup", "-o", str(backup)))
    data = bytearray(backup.read_bytes())
    data[len(MAGIC)] ^= 0x01  # the first stanza's arrow, right after the magic line
    backup.write_bytes(bytes(data))
    line = refused(
        cli(capsys, None, "restore", str(backup), str(tmp_path / "back")),
        1,
        "is truncated or was altered",
        "use another copy",
    )
    assert "upgrading" not in line
    assert not (tmp_path / "back").exists()


# --- after a restore ------------------------------------------------------------------


def test_a_post_into_a_new_log_after_a_restore_says_what_releases_it_and_makes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: a post into a new log after a restore pointed at `declare-no-copies LOG`,
    which then said "nothing named was held back", exit 0, and the post stayed refused;
    and the refused post had made the log all the same. The refusal now names
    `declare-no-copies --all` and makes nothing."""
    club = new_club(capsys, tmp_path / "club")
    ok(cli(capsys, club, "backup", "-o", str(tmp_path / "club.backup")))
    back = tmp_path / "back"
    ok(cli(capsys, None, "restore", str(tmp_path / "club.backup"), str(back)))
    before = ok(cli(capsys, back, "status", "--json")).json()["logs"]
    refused(
        cli(capsys, back, "post", "note", "--log", "made-later", "--text", "x"),
        2,
        "may not be written yet",
        "declare-no-copies --all",
    )
    assert ok(cli(capsys, back, "status", "--json")).json()["logs"] == before
    refused(
        cli(capsys, back, "declare-no-copies", "made-later"),
        2,
        "no log 'made-later' of this club",
    )
    ok(cli(capsys, back, "declare-no-copies", "--all"))
    ok(cli(capsys, back, "post", "note", "--log", "made-later", "--text", "x"))
    assert len(ok(cli(capsys, back, "status", "--json")).json()["logs"]) == len(before) + 1


# --- files written and files found ----------------------------------------------------


def test_proposal_export_never_writes_over_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: `proposal export ID -o FILE` wrote over any file, club.key included."""
    club = new_club(capsys, tmp_path / "club")
    before = tree(club)
    refused(
        cli(capsys, club, "proposal", "export", "abcdef123456", "-o", str(club / "club.key")),
        2,
        "already exists and proposal export never overwrites",
    )
    assert tree(club) == before


def test_status_warns_of_a_node_directory_others_can_open(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: a node directory copied without its modes (0755, files 0644: a FAT stick,
    rsync without -p) was used without a word; only the store tightens its own files."""
    club = new_club(capsys, tmp_path / "club")
    assert ok(cli(capsys, club, "status", "--json")).json()["loose_modes"] == []
    os.chmod(club, 0o755)
    for name in ("club.key", "tls.key", "config.toml"):
        os.chmod(club / name, 0o644)
    shown = " ".join(ok(cli(capsys, club, "status")).out.split())  # unwrapped
    assert f"warning: {club} is open to other users (mode 755): chmod 700 {club}" in shown
    assert f"(mode 644): chmod 600 {club / 'tls.key'}" in shown
    loose = ok(cli(capsys, club, "status", "--json")).json()["loose_modes"]
    assert {entry["path"] for entry in loose} == {
        str(club),
        str(club / "club.key"),
        str(club / "tls.key"),
        str(club / "config.toml"),
    }


def test_a_terminal_that_does_not_know_its_size_gets_80_columns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: on a terminal reporting 0 columns (a pty nobody sized, a serial console)
    every table was cut to 20 columns."""
    club = new_club(capsys, tmp_path / "club")
    club_id = ok(cli(capsys, club, "status", "--json")).json()["club"]
    controller, terminal = pty.openpty()  # never sized: 0 columns
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    errors = tmp_path / "stderr"
    try:
        with errors.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "federation", "--node", str(club), "status"],
                stdin=terminal,
                stdout=terminal,
                stderr=stderr,
                env=env,
            )
        os.close(terminal)
        shown = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the process closed its end
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        assert process.wait(timeout=30) == 0, errors.read_text()
    finally:
        os.close(controller)
    text = shown.decode()
    assert f"id       {club_id}" in text  # 73 columns: uncut
    assert json.dumps(CLUB_MARKER)[1:-1] in text


def test_init_refuses_a_directory_that_holds_other_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found: `federation init` without --node, in a home directory, made the node there
    among the user's files and turned the directory 0700."""
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "notes.txt").write_text("the user's own file\n")
    os.chmod(home, 0o755)
    monkeypatch.chdir(home)
    before, before_modes = tree(home), modes(home)
    home_mode = home.stat().st_mode
    refused(
        cli(capsys, None, "init", "--name", CLUB_MARKER, "--plain-http"),
        2,
        "is not empty (it holds 'notes.txt')",
        "give --node NEWDIR",
    )
    assert (tree(home), modes(home), home.stat().st_mode) == (before, before_modes, home_mode)
    # A directory init cannot read: one line, not a traceback (found by review, with a
    # directory of mode 000 read by another user; a symlink to itself fails so for root
    # too).
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    refused(
        cli(capsys, loop, "init", "--name", CLUB_MARKER),
        2,
        "cannot read",
        "Too many levels of symbolic links",
    )
    # A new or empty directory is what init is for.
    (tmp_path / "empty").mkdir()
    for node in (tmp_path / "empty", tmp_path / "new"):
        ok(cli(capsys, node, "init", "--name", CLUB_MARKER, "--plain-http"))
        assert node.stat().st_mode & 0o777 == 0o700


def test_another_clubs_sealed_export_says_how_to_open_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a new user: importing another club's export, sealed with that club's
    passphrase, into a node whose passphrase comes from its file said "wrong passphrase
    ...; try again", and trying again read the same file."""
    sender = new_club(capsys, tmp_path / "sender")
    export = tmp_path / "sender.export"
    ok(cli(capsys, sender, "post", "note", "--text", "for the other club"))
    ok(cli(capsys, sender, "export", "-o", str(export)))
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    secret = tmp_path / "passphrase"
    secret.write_text("the other club's own passphrase\n")
    secret.chmod(0o600)
    other = new_club(capsys, tmp_path / "other", "--passphrase-file", str(secret))
    before = tree(other)
    line = refused(
        cli(capsys, other, "import", str(export)),
        1,
        f"wrong passphrase for {export}: the one in {secret} does not open it",
        "sealed with that node's passphrase",
        PASSPHRASE_ENV,
        "--identity FILE",
    )
    assert "try again" not in line
    assert tree(other) == before
