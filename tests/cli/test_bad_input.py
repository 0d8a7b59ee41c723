"""Bad input gets a clear one-line error, a meaningful exit code, and changes nothing.

DESIGN principle 14. Every test here snapshots the node directory (every file's
bytes and the store's event count) before the bad command and compares after; an
import may keep only the valid prefix before the first bad line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federation.core import canonical
from federation.core.config import parse_config
from federation.errors import ConfigError
from federation.node.keyfile import PASSPHRASE_ENV
from tests.cli.test_cli import cli, cli_quiet, copy_node, ok
from tests.cli.test_cli import passphrase_env as passphrase_env  # the same autouse fixture

State = tuple[dict[str, bytes], int]
EVENTS_IN_FEDERATION = 6


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node with six notes in its federation log and an action in its public log."""
    root = tmp_path_factory.mktemp("base") / "node"
    ok(cli_quiet(root, "init", "--name", "Club A"))
    for i in range(EVENTS_IN_FEDERATION):
        ok(cli_quiet(root, "post", "note", "--audience", "federation", "--text", f"note {i}"))
    when = "2026-12-01T18:00+00:00"
    ok(
        cli_quiet(
            root, "post", "action", "--audience", "public", "--what", "Picket", "--starts", when
        )
    )
    return root


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another club's empty node: where exports are imported."""
    root = tmp_path_factory.mktemp("target") / "node"
    ok(cli_quiet(root, "init", "--name", "Club B"))
    return root


@pytest.fixture
def node(tmp_path: Path, base: Path) -> Path:
    return copy_node(base, tmp_path / "node")


def event_count(root: Path) -> int:
    db = root / "store.sqlite"
    if not db.exists():
        return -1
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return int(conn.execute("SELECT count(*) FROM event").fetchone()[0])
    except sqlite3.DatabaseError:
        return -2  # not a store at all; the file bytes are compared anyway


def state(root: Path) -> State:
    """Every file's bytes (taken first: counting opens the store), then the event count."""
    files = {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
    return files, event_count(root)


def refused(capsys: pytest.CaptureFixture[str], node: Path | None, *args: str, code: int) -> str:
    """Run a command that must fail with `code`, print one line, and change nothing."""
    before = state(node) if node is not None and node.exists() else None
    run = cli(capsys, node, *args)
    assert run.code == code, f"exit {run.code}, expected {code}: {run.err}"
    assert run.out == ""
    line = run.error_line
    assert line.startswith("federation: error: ")
    assert "Traceback" not in run.err
    if before is not None:
        assert node is not None
        assert state(node) == before
    return line


# --- the key file -----------------------------------------------------------------------


def test_wrong_passphrase(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, node: Path
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    line = refused(capsys, node, "post", "note", "--text", "x", code=1)
    assert line == (
        f"federation: error: wrong passphrase for {node / 'club.key'} (or the file was altered): "
        f"it is the one in {PASSPHRASE_ENV}; set that to the right passphrase, or unset it "
        "to be asked; if the passphrase is right, restore it from your backup"
    )


def test_missing_key_file(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    (node / "club.key").unlink()
    line = refused(capsys, node, "post", "note", "--text", "x", code=1)
    assert f"key file {node / 'club.key'} is missing" in line
    assert "restore it from your backup" in line


def _edit_key(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        fields = json.loads(data)
        edit(fields)
        return json.dumps(fields).encode()

    return apply


def _flip_hex(field: str) -> Callable[[dict[str, Any]], None]:
    def edit(fields: dict[str, Any]) -> None:
        value = fields[field]
        fields[field] = ("0" if value[0] != "0" else "1") + value[1:]

    return edit


CORRUPT_KEYS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda data: data[: len(data) // 2], "is corrupt"),
    "not json": (lambda data: b"\x00\xffnot a key file", "is corrupt"),
    "empty": (lambda data: b"", "is corrupt"),
    "unknown field": (_edit_key(lambda f: f.update(colour="red")), "is corrupt"),
    "salt not hex": (_edit_key(lambda f: f.update(salt="zz")), "is corrupt"),
    "wrong kdf": (_edit_key(lambda f: f.update(kdf="argon9")), "is corrupt"),
    "bad scrypt n": (_edit_key(lambda f: f.update(n=2**40)), "unusable scrypt parameters"),
    "ciphertext altered": (_edit_key(_flip_hex("ciphertext")), "or the file was altered"),
    "another club's": (_edit_key(lambda f: f.update(club="ab" * 32)), "belongs to club abababab"),
}


@pytest.mark.parametrize("case", CORRUPT_KEYS)
def test_corrupt_key_file(capsys: pytest.CaptureFixture[str], node: Path, case: str) -> None:
    corrupt, message = CORRUPT_KEYS[case]
    key = node / "club.key"
    key.write_bytes(corrupt(key.read_bytes()))
    line = refused(capsys, node, "post", "note", "--text", "x", code=1)
    assert str(key) in line
    assert message in line
    # What to do: restore from a backup, check the config, or retry the passphrase.
    assert any(
        hint in line for hint in ("restore it from your backup", "check key.file", "try again")
    )


# --- the config -------------------------------------------------------------------------

CONFIG_CASES: dict[str, tuple[tuple[str, str], str, list[str]]] = {
    # case: ((text replaced, replacement), field, fragments of the message)
    "listen is a number": (
        ('listen = "127.0.0.1:8401"', "listen = 5"),
        "node.listen",
        ["Expected `str`, got `int`", "`$.node.listen`", "fix that field"],
    ),
    "unknown field": (
        ("[node]\n", '[node]\ncolour = "red"\n'),
        "node",
        ["unknown field `colour`", "`$.node`", "fix that field"],
    ),
    "unknown section": (
        ("[key]\n", "[keys]\n"),
        "",
        ["unknown field `keys`", "fix that field"],
    ),
    "not TOML": (("[node]\n", "[node\n"), "", ["not valid TOML", "fix the file"]),
    "listen is not host:port": (
        ('listen = "127.0.0.1:8401"', 'listen = "nowhere"'),
        "node.listen",
        ["node.listen must be host:port", "got 'nowhere'"],
    ),
    "plain http off loopback": (
        ('listen = "127.0.0.1:8401"\n', 'listen = "0.0.0.0:8401"\nplain_http = true\n'),
        "node.plain_http",
        ["node.plain_http is allowed only", "remove plain_http"],
    ),
    "club id not hex": (
        ('id = "', 'id = "xyz'),
        "club.id",
        ["`$.club.id`", "fix that field"],
    ),
    "passphrase kind": (
        ('passphrase = "prompt"', 'passphrase = "ask"'),
        "key.passphrase",
        ["`$.key.passphrase`", "fix that field"],
    ),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_malformed_config(capsys: pytest.CaptureFixture[str], node: Path, case: str) -> None:
    (old, new), field, fragments = CONFIG_CASES[case]
    config = node / "config.toml"
    text = config.read_text()
    if case == "plain http off loopback":
        text = text.replace("plain_http = false\n", "")
    assert old in text
    config.write_text(text.replace(old, new, 1))
    line = refused(capsys, node, "post", "note", "--text", "x", code=2)
    assert line.startswith(f"federation: error: {config}: ")  # names the file
    for fragment in fragments:
        assert fragment in line
    with pytest.raises(ConfigError) as raised:
        parse_config(config.read_text(), str(config))
    assert raised.value.field == field


def test_config_of_another_club(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    config = node / "config.toml"
    text = config.read_text()
    club = text.split('id = "')[1][:64]
    config.write_text(text.replace(club, "ab" * 32))
    # The store opens with its own key file only: the two files disagree, and the
    # message names both (the key file is read before the store it unlocks).
    line = refused(capsys, node, "status", code=1)
    assert "not club abababababab named in config.toml" in line
    assert "restore the club.key and config.toml that came with this store" in line


# --- posting --------------------------------------------------------------------------


def test_unknown_kind(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    line = refused(capsys, node, "post", "leaflet", "--text", "x", code=2)
    assert line.startswith("federation: error: unknown kind 'leaflet'; use one of: note, action")
    assert "unknown kind 'leaflet'" in refused(capsys, node, "log", "--kind", "leaflet", code=2)


TEXT_OVER_64_KIB = "a" * (64 * 1024 + 1)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["note", "--text", TEXT_OVER_64_KIB],
            ["invalid note payload", "length <= 16000", "`$.text`", "fix that option"],
        ),
        (
            ["campaign", "--campaign", "rent", "--op", "created", "--text", TEXT_OVER_64_KIB],
            ["payload is 65", "over the limit of 65536", "shorten"],
        ),
        (
            ["action", "--what", "x", "--starts", "2026-12-01T18:00Z", "--where", TEXT_OVER_64_KIB],
            ["over the limit of 65536", "shorten"],
        ),
    ],
    ids=["note", "campaign", "action"],
)
def test_oversize_payload(
    capsys: pytest.CaptureFixture[str], node: Path, args: list[str], fragments: list[str]
) -> None:
    line = refused(capsys, node, "post", *args, "--audience", "public", code=2)
    for fragment in fragments:
        assert fragment in line
    assert len(line) < 300  # the message does not repeat the text


@pytest.mark.parametrize(
    ("audience", "fragment"),
    [
        ("everyone", "invalid audience 'everyone'; use private, federation, public or clubs:ID"),
        ("Public", "invalid audience 'Public'"),
        ("clubs:", "audience clubs: needs at least one club, e.g. clubs:NAME,NAME"),
        ("clubs:abc", "no club 'abc' here (an id prefix needs at least 6 hex digits)"),
        ("clubs:" + "g" * 64, "no club 'gggg"),
        ("clubs:" + "a" * 64, "none of the clubs named (aaaaaaaaaaaa) is known to this node"),
    ],
)
def test_invalid_audience(
    capsys: pytest.CaptureFixture[str], node: Path, audience: str, fragment: str
) -> None:
    line = refused(capsys, node, "post", "note", "--text", "x", "--audience", audience, code=2)
    assert fragment in line


def test_a_log_keeps_its_audience(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    args = ["post", "note", "--text", "x", "--log", "public", "--audience", "private"]
    line = refused(capsys, node, *args, code=2)
    assert "log 'public' has audience public, not private" in line
    assert "choose another --log" in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frob"], "invalid choice: 'frob'"),
        (["log", "--limit", "x"], "argument --limit: invalid int value: 'x'"),
        (["log", "--limit", "0"], "--limit must be at least 1"),
        (["log", "--log", "nosuch"], "no log 'nosuch'; see the logs in `federation status`"),
        (["init"], "the following arguments are required: --name"),
        (["show"], "the following arguments are required: EVENT"),
        (["show", "xyz"], "EVENT must be an event id or a prefix of at least 6 hex digits"),
        (["show", "00000000"], "no event '00000000' in this node"),
        (["erase", "00000000"], "no event '00000000' in this node"),
        (["status", "--colour"], "unrecognized arguments: --colour"),
        (["post", "note", "--text", "x", "--what", "y"], "--what does not apply to note"),
        (["post", "note"], "Object missing required field `text`"),
        (["post", "action", "--what", "x", "--starts", "soon"], "--starts 'soon' is not a date"),
        (["post", "action", "--what", "x", "--starts", "2026-12-01T18:00"], "needs a time zone"),
        (
            [
                "post",
                "action",
                "--what",
                "x",
                "--starts",
                "2026-12-01T18:00Z",
                "--participants",
                "-1",
            ],
            "`$.participants`",
        ),
        (["post", "report", "--member", "a", "--period", "2026-13", "--text", "t"], "`$.period`"),
        (["post", "campaign", "--campaign", "Rent!", "--op", "created"], "`$.campaign`"),
        (["post", "campaign", "--campaign", "rent", "--op", "won"], "Invalid enum value 'won'"),
        (["post", "note", "--text", "x", "--log", "l" * 65], "log name must be 1-64 bytes"),
    ],
)
def test_bad_cli_argument(
    capsys: pytest.CaptureFixture[str], node: Path, args: list[str], fragment: str
) -> None:
    line = refused(capsys, node, *args, code=2)
    assert fragment in line


def test_export_never_overwrites(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, node: Path
) -> None:
    existing = tmp_path / "existing.jsonl"
    existing.write_bytes(b"precious\n")
    line = refused(capsys, node, "export", "-o", str(existing), code=2)
    assert line == (
        f"federation: error: {existing} already exists and export never overwrites; "
        "choose another --output"
    )
    assert existing.read_bytes() == b"precious\n"
    nowhere = tmp_path / "no" / "such" / "dir.jsonl"
    line = refused(capsys, node, "export", "-o", str(nowhere), code=2)
    assert line == f"federation: error: cannot write {nowhere}: No such file or directory"


def test_init_never_overwrites_an_unfinished_node(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = tmp_path / "half"
    root.mkdir()
    (root / "club.key").write_bytes(b"a key from an init that did not finish")
    line = refused(capsys, root, "init", "--name", "Club C", code=2)
    assert line == (
        f"federation: error: {root} already holds a node (club.key exists); "
        "choose another directory"
    )
    assert [p.name for p in root.iterdir()] == ["club.key"]


# --- the node directory -----------------------------------------------------------------


def test_nonexistent_node(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path("/nonexistent")
    if root.exists():
        pytest.skip("/nonexistent exists on this machine")
    line = refused(capsys, root, "status", code=2)
    assert line == (
        "federation: error: no node at /nonexistent (/nonexistent/config.toml is missing); "
        "create one with `federation init` or pass --node DIR"
    )
    assert not root.exists()


def test_a_directory_that_is_not_a_node(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = refused(capsys, tmp_path, "log", code=2)
    assert f"no node at {tmp_path}" in line
    assert list(tmp_path.iterdir()) == []


def test_missing_store(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    (node / "store.sqlite").unlink()
    line = refused(capsys, node, "status", code=1)
    assert f"no store at {node / 'store.sqlite'}" in line
    assert "`federation init` makes one" in line
    assert not (node / "store.sqlite").exists()


def test_a_store_that_is_not_sqlite(capsys: pytest.CaptureFixture[str], node: Path) -> None:
    (node / "store.sqlite").write_bytes(b"this is not a database" * 100)
    line = refused(capsys, node, "status", code=1)
    assert "is not a readable SQLite database" in line
    assert "restore it from a backup" in line


# --- import -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_lines(base: Path, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The base node's federation log: line 1 club, 2 log, 3-8 events seq 1-6."""
    path = tmp_path_factory.mktemp("export") / "federation.jsonl"
    ok(cli_quiet(base, "export", "--plain", "--log", "federation", "-o", str(path)))
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["club", "log"] + ["event"] * 6
    return lines


TAMPERED_LINE = 5  # seq 3, in the middle
TAMPERED_SEQ = 3

# Offsets into a signed header (protocol.md §3.1): tag 0-15, version 16, club 17-48,
# log 49-80, seq 81-88, prev 89-120, time 121-128, kind 129-130, payload hash 131-162,
# payload size 163-166, key 167-198, signature 199-262.
HEADER_FLIPS: dict[str, tuple[int, str]] = {
    "tag": (3, "not an event: wrong protocol tag"),
    "version": (16, "unsupported event version"),
    "club": (30, "not authorised for this club"),
    "log": (60, "event belongs to another log"),
    "seq": (88, "seq gap: expected seq 3"),
    "prev": (100, "previous-hash link broken"),
    "time": (125, "bad signature"),
    "kind": (130, "unknown event kind"),
    "payload hash": (140, "does not match the hash in the signed header"),
    "payload size": (166, "but the header says"),
    "key": (180, "not authorised for this club"),
    "signature": (230, "bad signature"),
}


def _flip_signed(offset: int, *, fix_id: bool = True) -> Callable[[dict[str, Any]], None]:
    """Flip one bit of the signed header; with fix_id, as a forger would, also the id field."""

    def edit(line: dict[str, Any]) -> None:
        signed = bytearray.fromhex(line["signed"])
        signed[offset] ^= 0x01
        line["signed"] = signed.hex()
        if fix_id:
            line["id"] = canonical.event_id(bytes(signed)).hex()

    return edit


def _flip_payload(line: dict[str, Any]) -> None:
    payload = bytearray(base64.b64decode(line["payload"]))
    payload[-3] ^= 0x01  # inside the note's text: same length, different bytes
    line["payload"] = base64.b64encode(payload).decode()


TAMPERS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    **{f"header {name}": (_flip_signed(at), reason) for name, (at, reason) in HEADER_FLIPS.items()},
    "header, id not updated": (
        _flip_signed(125, fix_id=False),
        "id field does not match the signed header",
    ),
    "payload byte": (_flip_payload, "payload does not match the hash in the signed header"),
    "payload replaced": (
        lambda line: line.update(payload=base64.b64encode(b'{"text":"forged!"}').decode()),
        "payload is 18 bytes but the header says 17",
    ),
    "payload not base64": (lambda line: line.update(payload="***"), "line 5: "),
    "id field": (
        lambda line: line.update(id="00" * 32),
        "id field does not match the signed header",
    ),
}


def _import_state(
    capsys: pytest.CaptureFixture[str], node: Path, log: str
) -> tuple[int, list[str]]:
    status = ok(cli(capsys, node, "status", "--json")).json()
    ids = [e["id"] for e in ok(cli(capsys, node, "log", "--json", "--log", log)).json()]
    return status["events"], ids


@pytest.mark.parametrize("case", TAMPERS)
def test_import_of_a_tampered_export_keeps_the_valid_prefix(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    target: Path,
    export_lines: list[bytes],
    case: str,
) -> None:
    tamper, reason = TAMPERS[case]
    lines = list(export_lines)
    line = json.loads(lines[TAMPERED_LINE - 1])
    tamper(line)
    lines[TAMPERED_LINE - 1] = json.dumps(line, separators=(",", ":")).encode()
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"\n".join(lines) + b"\n")
    intact = tmp_path / "intact.jsonl"
    intact.write_bytes(b"\n".join(export_lines) + b"\n")
    log = json.loads(export_lines[1])["id"]
    source_ids = [json.loads(raw)["id"] for raw in export_lines[2:]]

    node = copy_node(target, tmp_path / "node")
    run = cli(capsys, node, "import", str(tampered))
    assert run.code == 1
    assert run.out == ""
    message = run.error_line
    assert message.startswith(f"federation: error: line {TAMPERED_LINE}: ")
    assert reason in message
    assert message.endswith("; nothing after the valid prefix was stored")
    if case in ("header tag", "header version", "header, id not updated"):
        pass  # found before the header is read: the line number is the place
    elif case == "header seq":
        assert "seq gap: expected seq 3, got 2" in message
    elif case.startswith(("header", "payload b", "payload r")):
        assert f" seq {TAMPERED_SEQ}: " in message  # names club, log and seq
        assert f"log {line['log'][:16]} seq" in message
    # Exactly the valid prefix before the tampered line is held, and it verifies.
    assert _import_state(capsys, node, log) == (TAMPERED_SEQ - 1, source_ids[: TAMPERED_SEQ - 1])
    assert ok(cli(capsys, node, "verify", "--json")).json()["ok"] is True

    # The same file again changes nothing; the intact export then completes the log.
    before = state(node)
    assert cli(capsys, node, "import", str(tampered)).code == 1
    assert state(node) == before
    resumed = ok(cli(capsys, node, "import", str(intact), "--json")).json()
    assert resumed["added"] == EVENTS_IN_FEDERATION - (TAMPERED_SEQ - 1)
    assert resumed["already"] == TAMPERED_SEQ - 1
    assert _import_state(capsys, node, log) == (EVENTS_IN_FEDERATION, source_ids)


def test_import_of_a_file_that_is_not_an_export(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, target: Path
) -> None:
    node = copy_node(target, tmp_path / "node")
    for content, fragment in [
        (b"\xff\xfe not json\n", "line 1: JSON is malformed"),
        (b"[1, 2]\n", "line 1: Expected `object`, got `array`"),
        (b'\n\n{"type": "roster"}\n', "line 3: Invalid value 'roster'"),
        (
            b'{"type": "event", "log": "zz", "seq": 1, "id": "", "signed": "", "payload": null}\n',
            "line 1: log is not hex",
        ),
    ]:
        path = tmp_path / "bad.jsonl"
        path.write_bytes(content)
        line = refused(capsys, node, "import", str(path), code=1)
        assert line.startswith(f"federation: error: {fragment}")
    line = refused(capsys, node, "import", str(tmp_path / "missing.jsonl"), code=2)
    assert (
        line
        == f"federation: error: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory"
    )
