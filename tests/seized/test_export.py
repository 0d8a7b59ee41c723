"""Encrypted exports (protocol.md §8, node/agefile.py): an export holding any non-public
log is an age file that shows none of the node's payloads, log names or club names,
and opens only with the passphrase or the member's age key; `--plain` writes JSON
lines and says so (the positive control). Files are created 0600."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest

from federation.node.agefile import MAGIC
from federation.node.keyfile import PASSPHRASE_ENV
from tests.seized.support import (
    CLUB_MARKER,
    LOG_MARKER,
    PASSPHRASE,
    PAYLOAD_MARKER,
    Run,
    cli,
    ok,
)


@dataclass(frozen=True)
class Club:
    root: Path
    payload: bytes  # the exact payload bytes of the marked private event


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)


@pytest.fixture
def club(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Club:
    root = tmp_path / "club"
    ok(cli(capsys, root, "init", "--name", CLUB_MARKER, "--plain-http"))
    posted = ok(
        cli(capsys, root, "post", "note", "--log", LOG_MARKER, "--text", PAYLOAD_MARKER, "--json")
    ).json()
    ok(cli(capsys, root, "post", "note", "--audience", "public", "--text", "public note"))
    payload = json.dumps(posted["payload"], separators=(",", ":")).encode()
    return Club(root, payload)


def secrets_in(data: bytes, club: Club) -> list[str]:
    """Which markers `data` shows in the clear (raw, or base64 as an export writes)."""
    found = []
    for marker in (PAYLOAD_MARKER, LOG_MARKER, CLUB_MARKER):
        if marker.encode() in data:
            found.append(marker)
    encoded = base64.b64encode(b'{"text":"' + PAYLOAD_MARKER.encode() + b'"}')
    if encoded[:40] in data or PAYLOAD_MARKER.encode().hex().encode() in data:
        found.append("payload, encoded")
    return found


def test_an_export_with_private_logs_is_sealed_and_plain_is_the_control(
    capsys: pytest.CaptureFixture[str], club: Club, tmp_path: Path
) -> None:
    sealed, plain = tmp_path / "export.age", tmp_path / "export.jsonl"
    ok(cli(capsys, club.root, "export", "-o", str(sealed)))
    data = sealed.read_bytes()
    assert data.startswith(MAGIC)
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    assert secrets_in(data, club) == []

    run = ok(cli(capsys, club.root, "export", "--plain", "-o", str(plain)))
    assert "UNENCRYPTED" in run.err
    assert LOG_MARKER in run.err
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    # The positive control: the same export, unsealed, shows the log name and payload.
    assert LOG_MARKER in secrets_in(plain.read_bytes(), club)
    assert "payload, encoded" in secrets_in(plain.read_bytes(), club)
    # ...and the sealed one is exactly that, under age.
    assert pyrage.passphrase.decrypt(data, PASSPHRASE) == plain.read_bytes()


def test_a_public_only_export_stays_plain_json_lines(
    capsys: pytest.CaptureFixture[str], club: Club, tmp_path: Path
) -> None:
    out = tmp_path / "public.jsonl"
    ok(cli(capsys, club.root, "export", "--audience", "public", "-o", str(out)))
    lines = out.read_bytes().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["club", "log", "event"]


def test_a_sealed_export_imports_with_the_passphrase(
    capsys: pytest.CaptureFixture[str], club: Club, tmp_path: Path
) -> None:
    sealed = tmp_path / "export.age"
    ok(cli(capsys, club.root, "export", "-o", str(sealed)))
    other = tmp_path / "other"
    ok(cli(capsys, other, "init", "--name", "Other", "--plain-http"))
    run = ok(cli(capsys, other, "import", str(sealed), "--json")).json()
    assert run["added"] == 2
    texts = [e["payload"]["text"] for e in ok(cli(capsys, other, "log", "--json")).json()]
    assert PAYLOAD_MARKER in texts


def imported_count(capsys: pytest.CaptureFixture[str], node: Path) -> int:
    return len(ok(cli(capsys, node, "log", "--json")).json())


def test_a_sealed_export_does_not_open_without_its_secret(
    capsys: pytest.CaptureFixture[str],
    club: Club,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sealed = tmp_path / "export.age"
    ok(cli(capsys, club.root, "export", "-o", str(sealed)))
    data = sealed.read_bytes()
    # A node with no passphrase of its own: the export's is asked for (here: the env).
    other = tmp_path / "other"
    ok(cli(capsys, other, "init", "--name", "Other", "--plain-http", "--no-passphrase"))
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase at all")

    def refused(path: Path, *extra: str) -> Run:
        run = cli(capsys, other, "import", str(path), *extra)
        assert run.code != 0
        assert imported_count(capsys, other) == 0  # nothing was imported
        return run

    assert f"wrong passphrase for {sealed}" in refused(sealed).error_line
    truncated = tmp_path / "truncated.age"
    truncated.write_bytes(data[: len(data) - 20])
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    assert "is truncated or was altered" in refused(truncated).error_line
    tampered = tmp_path / "tampered.age"
    middle = len(data) - 40
    tampered.write_bytes(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :])
    assert "is truncated or was altered" in refused(tampered).error_line


def test_an_export_to_a_members_age_key(
    capsys: pytest.CaptureFixture[str], club: Club, tmp_path: Path
) -> None:
    member = pyrage.x25519.Identity.generate()
    identity = tmp_path / "member.key"
    identity.write_text(f"# a member's age key\n{member}\n")
    sealed = tmp_path / "for-member.age"
    ok(cli(capsys, club.root, "export", "--to", str(member.to_public()), "-o", str(sealed)))
    assert secrets_in(sealed.read_bytes(), club) == []
    other = tmp_path / "other"
    ok(cli(capsys, other, "init", "--name", "Other", "--plain-http"))
    run = cli(capsys, other, "import", str(sealed))
    assert run.code != 0
    assert "give --identity FILE" in run.error_line
    ok(cli(capsys, other, "import", str(sealed), "--identity", str(identity)))
    assert imported_count(capsys, other) == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--to", "age1notakey"], "is not an age public key"),
        (["--plain", "--to", "age1x"], "--plain and --to contradict each other"),
    ],
)
def test_bad_export_arguments_write_nothing(
    capsys: pytest.CaptureFixture[str], club: Club, tmp_path: Path, args: list[str], expected: str
) -> None:
    out = tmp_path / "out.age"
    run = cli(capsys, club.root, "export", *args, "-o", str(out))
    assert run.code == 2
    assert expected in run.error_line
    assert not out.exists()


def test_an_export_never_overwrites(
    capsys: pytest.CaptureFixture[str], club: Club, tmp_path: Path
) -> None:
    out = tmp_path / "out.age"
    out.write_bytes(b"keep")
    run = cli(capsys, club.root, "export", "-o", str(out))
    assert run.code == 2
    assert "already exists" in run.error_line
    assert out.read_bytes() == b"keep"
