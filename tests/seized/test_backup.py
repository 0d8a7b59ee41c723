"""`federation backup` and `restore` (node/backup.py): a backup of a running node is one
age file showing nothing in the clear; it restores into a new directory with the same
heads and verifies; every bad input is one line and writes nothing."""

from __future__ import annotations

import base64
import io
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest

from federation.node.keyfile import PASSPHRASE_ENV
from tests.seized.support import (
    CLUB_MARKER,
    LOG_MARKER,
    PASSPHRASE,
    PAYLOAD_MARKER,
    PEER_MARKER,
    Run,
    cli,
    cli_quiet,
    free_port,
    ok,
    running,
    tree,
)


@dataclass(frozen=True)
class Backed:
    root: Path
    club: Path  # the node that was backed up
    peer: Path  # another club's node (its name is a marker)
    backup: Path
    status: dict[str, object]  # the club's `status --json` when it was backed up


@pytest.fixture(scope="module")
def backed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backed]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PASSPHRASE_ENV, PASSPHRASE)
        mp.delenv("FEDERATION_NODE", raising=False)
        root = tmp_path_factory.mktemp("backed")
        club, peer = root / "club", root / "peer"
        for node, name in ((club, CLUB_MARKER), (peer, PEER_MARKER)):
            listen = f"127.0.0.1:{free_port()}"
            ok(cli_quiet(node, "init", "--name", name, "--plain-http", "--listen", listen))
        invite = ok(cli_quiet(peer, "invite", "--json")).json()["invite"]
        ok(cli_quiet(club, "peers", "add", invite))
        ok(cli_quiet(club, "post", "note", "--log", LOG_MARKER, "--text", PAYLOAD_MARKER))
        ok(cli_quiet(club, "post", "note", "--audience", "public", "--text", "public note"))
        backup = root / "club.backup"
        with running(club, root / "run.stderr"):
            # Written while `run` holds the store (WAL): the snapshot is consistent.
            ok(cli_quiet(club, "post", "note", "--audience", "federation", "--text", "live"))
            ok(cli_quiet(club, "backup", "-o", str(backup)))
            status = ok(cli_quiet(club, "status", "--json")).json()
        yield Backed(root, club, peer, backup, status)


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)


def own_heads(status: dict[str, object]) -> dict[str, tuple[int, object]]:
    logs = status["logs"]
    assert isinstance(logs, list)
    return {log["id"]: (log["head_seq"], log["head"]) for log in logs if log["own"]}


def test_a_backup_shows_nothing_in_the_clear(backed: Backed) -> None:
    data = backed.backup.read_bytes()
    assert stat.S_IMODE(backed.backup.stat().st_mode) == 0o600
    # The snapshot was taken beside the store and is gone: no copy left on the node.
    assert [p.name for p in backed.club.iterdir() if p.name.startswith(".backup-")] == []
    assert data.startswith(b"age-encryption.org/v1\n")
    markers = [PAYLOAD_MARKER, LOG_MARKER, CLUB_MARKER, PEER_MARKER]
    for marker in markers:
        raw = marker.encode()
        for form in (raw, raw.hex().encode(), base64.b64encode(raw)[:24]):
            assert form not in data, marker
    # Positive control: under the age layer the backup holds the club (its config names
    # it) and, restored below, the payload, the log and the peer.
    plain = pyrage.passphrase.decrypt(data, PASSPHRASE)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        # The store's snapshot keeps the store's own encryption (SQLCipher) beneath age.
        store = tar.extractfile("store.sqlite")
        assert store is not None
        snapshot = store.read()
        assert not snapshot.startswith(b"SQLite format 3")
        assert PAYLOAD_MARKER.encode() not in snapshot
        config = tar.extractfile("config.toml")
        assert config is not None
        assert CLUB_MARKER.encode() in config.read()
    # Without the passphrase it does not open.
    with pytest.raises(pyrage.DecryptError):
        pyrage.passphrase.decrypt(data, "not the passphrase")


def test_restore_round_trip(
    backed: Backed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "restored"
    run = ok(cli(capsys, None, "restore", str(backed.backup), str(target), "--json"))
    assert run.json()["club"] == backed.status["club"]
    assert ok(cli(capsys, target, "verify", "--json")).json()["ok"] is True
    status = ok(cli(capsys, target, "status", "--json")).json()
    assert own_heads(status) == own_heads(backed.status)
    assert {p.name for p in target.iterdir()} >= {"config.toml", "club.key", "store.sqlite"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in target.iterdir())
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    # What was hidden from the backup's bytes is all there.
    texts = [e["payload"].get("text") for e in ok(cli(capsys, target, "log", "--json")).json()]
    assert PAYLOAD_MARKER in texts
    assert "live" in texts
    assert PEER_MARKER in ok(cli(capsys, target, "peers", "list")).out
    assert LOG_MARKER in ok(cli(capsys, target, "status")).out
    # Every log of its own is held back until a peer shows its head (protocol.md §3.6).
    assert {w["name"] for w in status["restored_waiting"]} == {
        log["name"] for log in status["logs"] if log["own"]
    }
    refused = cli(capsys, target, "post", "note", "--audience", "public", "--text", "x")
    assert refused.code == 2
    assert "run `federation sync` first" in refused.error_line


def reseal(data: bytes, change: dict[str, bytes]) -> bytes:
    """The backup with some files' bytes changed inside, sealed again with the
    passphrase: age opens it, and only the manifest's hashes can tell."""
    plain = pyrage.passphrase.decrypt(data, PASSPHRASE)
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(plain)) as old, tarfile.open(fileobj=out, mode="w") as new:
        for member in old.getmembers():
            extracted = old.extractfile(member)
            assert extracted is not None
            body = change.get(member.name, extracted.read())
            member.size = len(body)
            new.addfile(member, io.BytesIO(body))
    return bytes(pyrage.passphrase.encrypt(out.getvalue(), PASSPHRASE))


@pytest.mark.parametrize(
    "case",
    [
        "wrong passphrase",
        "truncated",
        "tampered",
        "edited inside",
        "not a backup",
        "non-empty dir",
        "another club's dir",
        "another club named",
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    backed: Backed,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    data = backed.backup.read_bytes()
    file = tmp_path / "given.backup"
    target = tmp_path / "restored"
    extra: list[str] = []
    expected = {
        "wrong passphrase": "wrong passphrase for",
        "truncated": "is truncated or was altered",
        "tampered": "is truncated or was altered",
        "edited inside": "store.sqlite does not match its hash in the manifest",
        "not a backup": "is not a federation backup",
        "non-empty dir": "is not empty; restore into a new directory",
        "another club's dir": "holds club",
        "another club named": "not of club",
    }[case]
    file.write_bytes(data)
    if case == "wrong passphrase":
        monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    elif case == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif case == "tampered":
        middle = len(data) // 2
        file.write_bytes(data[:middle] + bytes([data[middle] ^ 0x40]) + data[middle + 1 :])
    elif case == "edited inside":
        file.write_bytes(reseal(data, {"store.sqlite": b"SQLite format 3\0" + bytes(4080)}))
    elif case == "not a backup":
        file.write_bytes(b'{"type":"club"}\n')
    elif case == "non-empty dir":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    elif case == "another club's dir":
        ok(cli(capsys, None, "restore", str(backed.backup), str(tmp_path / "scratch")))
        (tmp_path / "scratch").rename(target)
        config = target / "config.toml"
        peer_config = (backed.peer / "config.toml").read_text()
        config.chmod(0o600)
        config.write_text(peer_config)
    else:
        extra = ["--club", "00ff00ff"]
    before = tree(tmp_path)
    run: Run = cli(capsys, None, "restore", str(file), str(target), *extra)
    assert run.code != 0
    assert expected in run.error_line
    assert tree(tmp_path) == before  # nothing written, no staging directory left


def test_a_backup_to_members_age_keys_restores_with_an_identity(
    backed: Backed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    member = pyrage.x25519.Identity.generate()
    identity = tmp_path / "member.key"
    identity.write_text(f"{member}\n")
    file = tmp_path / "to-member.backup"
    ok(cli(capsys, backed.club, "backup", "-o", str(file), "--to", str(member.to_public())))
    with pytest.raises(pyrage.DecryptError):
        pyrage.passphrase.decrypt(file.read_bytes(), PASSPHRASE)  # not sealed to it
    refused = cli(capsys, None, "restore", str(file), str(tmp_path / "x"))
    assert refused.code != 0
    assert "give --identity FILE" in refused.error_line
    club = str(backed.status["club"])
    target = tmp_path / "restored"
    ok(
        cli(
            capsys,
            None,
            "restore",
            str(file),
            str(target),
            "--identity",
            str(identity),
            "--club",
            club[:8],
        )
    )
    assert own_heads(ok(cli(capsys, target, "status", "--json")).json()) == own_heads(backed.status)


def test_declare_no_copies(
    backed: Backed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "restored"
    ok(cli(capsys, None, "restore", str(backed.backup), str(target)))
    for args, expected in [
        ([], "name the logs no other node holds (LOG ...), or give --all"),
        (["private", "--all"], "name the logs no other node holds"),
        (["no-such-log"], "no log 'no-such-log' of this club"),
    ]:
        run = cli(capsys, target, "declare-no-copies", *args)
        assert run.code == 2
        assert expected in run.error_line
    ok(cli(capsys, target, "declare-no-copies", LOG_MARKER))
    ok(cli(capsys, target, "post", "note", "--log", LOG_MARKER, "--text", "again"))
    held = ok(cli(capsys, target, "status", "--json")).json()["restored_waiting"]
    assert LOG_MARKER not in {w["name"] for w in held}
    assert "HELD BACK after a restore" in ok(cli(capsys, target, "status")).out
    ok(cli(capsys, target, "declare-no-copies", "--all"))
    assert ok(cli(capsys, target, "status", "--json")).json()["restored_waiting"] == []
    ok(cli(capsys, target, "post", "note", "--audience", "public", "--text", "free"))
    done = ok(cli(capsys, target, "declare-no-copies", "--all"))
    assert "no log is held back" in done.out
