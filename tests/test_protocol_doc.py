"""Every example in protocol.md decodes and verifies (HOUSE_STYLE, Tests).

The ```vector blocks of protocol.md are parsed strictly (tests.protocol_vectors),
then each is checked two ways: recomputed from its own inputs (seeds, fields) with
hashlib, a small MessagePack encoder written from the spec and the layout tables of
the document, and decoded and verified with federation (core, sync, archive). A
malformed block, a missing vector type or a value that does not recompute fails the
test. The tables of limits (§6.4) and error codes (§7) are checked against the code.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import itertools
import json
import re
import struct
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from federation import archive, ingest, runtime, service, syncer
from federation.core import canonical, invite, selection
from federation.core.canonical import Genesis, Header, Kind, LogDescriptor, RequestToken
from federation.core.crypto import SigningKey, derive_key, open_sealed, verify_signature
from federation.core.events import Head, KeyCheck, verify_event, verify_run
from federation.core.log import fork_between, format_audience, parse_audience
from federation.core.payloads import PAYLOAD_TYPES
from federation.errors import ForkError, InvalidEventError, RemoteProtocolError, UsageError
from federation.keyfile import open_key, seal_key
from federation.store.memory import MemoryStore
from federation.sync import auth, messages, serve
from federation.sync.messages import Batch, FrameReader, Frontier, LogHead, Want, WantLog
from federation.sync.session import Session, State
from federation.web import client, peer_api
from tests.protocol_vectors import (
    CERTIFICATE_STAND_IN,
    REQUIRED,
    Block,
    VectorFormatError,
    build,
    check_hex,
    parse_blocks,
    rewrite,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "protocol.md"

# Byte fields of each vector type and their sizes (None: any length).
HEX_FIELDS: dict[str, dict[str, int | None]] = {
    "genesis": {
        "secret": 32,
        "key": 32,
        "recovery_key": 32,
        "recovery": 32,
        "genesis": canonical.GENESIS_BYTES,
        "club": 32,
    },
    "log": {"club": 32, "descriptor": None, "log": 32},
    "event": {
        "club": 32,
        "log": 32,
        "prev": 32,
        "payload_hash": 32,
        "key": 32,
        "header": canonical.HEADER_BYTES,
        "signature": canonical.SIGNATURE_BYTES,
        "signed_header": canonical.SIGNED_HEADER_BYTES,
        "id": 32,
        "payload": None,
    },
    "fork": {
        "club": 32,
        "log": 32,
        "ours": canonical.SIGNED_HEADER_BYTES,
        "ours_id": 32,
        "theirs": canonical.SIGNED_HEADER_BYTES,
        "theirs_id": 32,
        "theirs_payload": None,
    },
    "keyfile": {"club": 32, "secret": 32, "salt": 16, "nonce": 12, "ciphertext": 48},
    "invite": {
        "club": 32,
        "fingerprint": 32,
        "genesis": canonical.GENESIS_BYTES,
        "signed": None,
        "signature": canonical.SIGNATURE_BYTES,
    },
    "request": {
        "sender": 32,
        "recipient": 32,
        "nonce": canonical.REQUEST_NONCE_BYTES,
        "body_hash": 32,
        "key": 32,
        "body": None,
        "signed": None,
        "signature": canonical.SIGNATURE_BYTES,
    },
    "frontier": {"digest": 32, "known": 32, "message": None},
    "want": {"message": None},
    "batch": {"log": 32, "message": None, "frame_header": 4},
    "export": {"log": 32},
}
INT_FIELDS: dict[str, tuple[str, ...]] = {
    "genesis": ("time_us",),
    "log": ("audience_code",),
    "event": ("seq", "time_us", "kind", "payload_size"),
    "fork": ("seq",),
    "keyfile": ("n", "r", "p"),
    "invite": (),
    "request": ("time_us", "now_us"),
    "frontier": (),
    "want": (),
    "batch": ("count",),
    "export": (),
}


def load(text: str) -> list[Block]:
    """The vector blocks of a document; fails if there are none or one is malformed."""
    found = [block for _, block in parse_blocks(text)]
    if not found:
        raise VectorFormatError("no ```vector blocks found")
    labels = [b.label for b in found]
    if len(set(labels)) != len(labels):
        raise VectorFormatError(f"vector labels repeat: {sorted(labels)}")
    for block in found:
        for key, size in HEX_FIELDS[block.type].items():
            if block.has(key):
                check_hex(block, key, size)
        for key in INT_FIELDS[block.type]:
            if block.has(key) and not re.fullmatch(r"-?[0-9]+", block.get(key)):
                raise VectorFormatError(f"vector {block.label!r}: {key} is not an integer")
    return found


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    return load(DOC.read_text(encoding="utf-8"))


def of_type(blocks: list[Block], kind: str) -> list[Block]:
    found = [b for b in blocks if b.type == kind]
    assert found, f"protocol.md has no vector {kind}"
    return found


def authorised(blocks: list[Block]) -> KeyCheck:
    """Version 1 (protocol.md §2.2): the genesis key, and only it, signs for a club."""
    keys = {b.hex("club"): b.hex("key") for b in of_type(blocks, "genesis")}

    def check(club: bytes, key: bytes) -> bool:
        return keys.get(club) == key

    return check


# --- the parser is strict ------------------------------------------------------------

H32 = "ab" * 32
GOOD = f"```vector log\nlabel: x\nclub: {H32}\nname: n\naudience: public\naudience_code: 2\n"
GOOD += f"descriptor: ab\nlog: {H32}\n```\n"


def test_parser_accepts_a_good_block() -> None:
    (block,) = [b for _, b in parse_blocks("text\n\n" + GOOD)]
    assert block.type == "log"
    assert block.get("audience") == "public"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("no vectors here\n```python\nx = 1\n```\n", "no ```vector blocks"),
        (GOOD.replace("vector log", "vector logs"), "not 'vector <type>'"),
        (GOOD.replace("vector log", "vectors log"), "not 'vector <type>'"),
        (GOOD.replace("name: n\n", "name n\n"), "expected 'key: value'"),
        (GOOD.replace("name: n\n", "name: n\n\n"), "blank line"),
        (GOOD.replace("name: n\n", "name: n\nname: m\n"), "appears twice"),
        (GOOD.replace("name: n\n", "name: n\ncolour: red\n"), "unknown key"),
        (GOOD.replace("name: n\n", ""), "lacks ['name']"),
        (GOOD.replace("\n```\n", "\n"), "never closed"),
        (GOOD.replace(f"log: {H32}", f"log: {H32.upper()}"), "not lowercase hex"),
        (GOOD.replace(f"club: {H32}", f"club: {H32}a"), "not lowercase hex"),
        (GOOD.replace(f"club: {H32}", "club: abab"), "2 bytes, expected 32"),
        (GOOD.replace("audience_code: 2", "audience_code: two"), "not an integer"),
        (GOOD + GOOD, "labels repeat"),
    ],
)
def test_parser_rejects(text: str, why: str) -> None:
    with pytest.raises(VectorFormatError, match=re.escape(why)):
        load(text)


def test_hex_sizes_are_checked() -> None:
    block = Block("log", (("label", "x"), ("log", "aa")))
    with pytest.raises(VectorFormatError, match="1 bytes, expected 32"):
        check_hex(block, "log", 32)


# --- the document ----------------------------------------------------------------------


def test_every_vector_type_is_shown(blocks: list[Block]) -> None:
    assert {b.type for b in blocks} == set(REQUIRED)
    audiences = {b.get("audience").split(":")[0] for b in of_type(blocks, "log")}
    assert audiences == {"private", "federation", "public", "clubs"}
    kinds = {b.get("kind_name") for b in of_type(blocks, "event")}
    assert {"note", "action"} <= kinds
    assert {b.get("kdf") for b in of_type(blocks, "keyfile")} == {"scrypt", "none"}


def test_document_matches_the_generator(blocks: list[Block]) -> None:
    # The doc is regenerated with `python -m tests.protocol_vectors --write protocol.md`.
    built = {b.label: b for b in build()}
    assert {b.label for b in blocks} == set(built)
    for block in blocks:
        assert block == built[block.label], f"vector {block.label!r} is out of date"
    text = DOC.read_text(encoding="utf-8")
    assert rewrite(text, build()) == text


def _headings() -> set[str]:
    """Section numbers of protocol.md: "## 5. Peering" -> "5", "### 5.1 Invites" -> "5.1"."""
    text = DOC.read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)*)\.? ", text, re.MULTILINE))


def test_sync_sections_are_written() -> None:
    assert "<!-- sync sections follow -->" not in DOC.read_text(encoding="utf-8")
    wanted = (
        {"5", "6", "7", "8"} | {f"5.{i}" for i in range(1, 6)} | {f"6.{i}" for i in range(1, 8)}
    )
    assert wanted <= _headings()


_CITATION = re.compile(r"(RFC\s+\d+\s+)?§(\d+(?:\.\d+)*)")


def test_every_cited_section_exists() -> None:
    # Within protocol.md (RFC sections aside) and wherever code cites "protocol.md §n".
    headings = _headings()
    text = DOC.read_text(encoding="utf-8")
    cited = {(m.group(2), "protocol.md") for m in _CITATION.finditer(text) if not m.group(1)}
    for folder in ("federation", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            for m in re.finditer(r"protocol\.md ((?:§[\d.]+(?:, | and )?)+)", source):
                cited |= {
                    (ref.rstrip("."), str(path.relative_to(ROOT)))
                    for ref in re.findall(r"§([\d.]+)", m.group(1))
                }
    missing = sorted((ref, where) for ref, where in cited if ref not in headings)
    assert not missing, f"cited sections that protocol.md does not have: {missing}"


def test_genesis(blocks: list[Block]) -> None:
    for b in of_type(blocks, "genesis"):
        secret = b.hex("secret")
        assert secret == hashlib.sha256(b.get("seed").encode()).digest()
        key = SigningKey(secret).public
        assert key == b.hex("key")
        if b.has("recovery_seed"):
            recovery_key = SigningKey(hashlib.sha256(b.get("recovery_seed").encode()).digest())
            assert recovery_key.public == b.hex("recovery_key")
            assert b.hex("recovery") == hashlib.sha256(recovery_key.public).digest()
        else:
            assert not b.has("recovery_key")
            assert b.hex("recovery") == bytes(32)
        genesis = b.hex("genesis")
        assert canonical.decode_genesis(genesis) == Genesis(
            key, b.hex("recovery"), b.int("time_us")
        )
        assert canonical.encode_genesis(canonical.decode_genesis(genesis)) == genesis
        assert b.hex("club") == hashlib.sha256(genesis).digest() == canonical.club_id(genesis)


def test_keyfile(blocks: list[Block]) -> None:
    keys = {b.hex("club"): b.hex("key") for b in of_type(blocks, "genesis")}
    for b in of_type(blocks, "keyfile"):
        club = b.hex("club")
        file = json.loads(b.get("json"))
        assert file["version"] == 1
        assert file["club"] == b.get("club")
        assert file["kdf"] == b.get("kdf")
        if b.get("kdf") == "none":
            assert set(file) == {"version", "club", "kdf", "secret"}
            secret = bytes.fromhex(file["secret"])
        else:
            assert b.get("kdf") == "scrypt"
            assert set(file) == {"version", "club", "kdf", "n", "r", "p"} | {
                "salt",
                "nonce",
                "ciphertext",
            }
            for field in ("n", "r", "p"):
                assert file[field] == b.int(field)
            for field in ("salt", "nonce", "ciphertext"):
                assert file[field] == b.get(field)
            assert (file["n"], file["r"], file["p"]) == (2**15, 8, 1)
            kek = derive_key(
                b.get("passphrase").encode(),
                b.hex("salt"),
                n=b.int("n"),
                r=b.int("r"),
                p=b.int("p"),
            )
            opened = open_sealed(kek, b.hex("nonce"), b.hex("ciphertext"), club)
            assert opened is not None, "the key file does not open with its passphrase"
            secret = opened
            # The club id is the associated data: any other club id fails to open it.
            assert open_sealed(kek, b.hex("nonce"), b.hex("ciphertext"), bytes(32)) is None
        assert secret == b.hex("secret")
        assert SigningKey(secret).public == keys[club], "the secret is not the club's key"


def test_log(blocks: list[Block]) -> None:
    clubs = {b.hex("club") for b in of_type(blocks, "genesis")}
    for b in of_type(blocks, "log"):
        descriptor = b.hex("descriptor")
        decoded = canonical.decode_log(descriptor)
        audience = parse_audience(b.get("audience"))
        assert decoded == LogDescriptor(b.hex("club"), b.get("name"), audience)
        assert format_audience(decoded.audience) == b.get("audience")
        assert canonical.encode_log(decoded) == descriptor
        assert b.hex("club") in clubs
        assert all(c in clubs for c in audience.clubs)
        # The layout of protocol.md §3.3, recomputed by hand.
        name = b.get("name").encode()
        assert descriptor == b"".join(
            (
                b"federation/log\x00\x00",
                b"\x01",
                b.hex("club"),
                bytes([len(name)]),
                name,
                bytes([b.int("audience_code")]),
                len(audience.clubs).to_bytes(2, "big"),
                *audience.clubs,
            )
        )
        assert b.hex("log") == hashlib.sha256(descriptor).digest() == canonical.log_id(descriptor)


def test_event(blocks: list[Block]) -> None:
    check = authorised(blocks)
    logs = {b.hex("log"): b.hex("club") for b in of_type(blocks, "log")}
    for b in of_type(blocks, "event"):
        signed = b.hex("signed_header")
        assert signed == b.hex("header") + b.hex("signature")
        payload = b.hex("payload")
        assert payload == b.get("payload_json").encode()
        header = Header(
            club=b.hex("club"),
            log=b.hex("log"),
            seq=b.int("seq"),
            prev=b.hex("prev"),
            time_us=b.int("time_us"),
            kind=b.int("kind"),
            payload_hash=b.hex("payload_hash"),
            payload_size=b.int("payload_size"),
            key=b.hex("key"),
        )
        assert canonical.decode_header(signed) == header
        assert canonical.encode_header(header) == b.hex("header")
        assert Kind(header.kind).name.lower() == b.get("kind_name")
        assert header.payload_hash == hashlib.sha256(payload).digest()
        assert header.payload_size == len(payload)
        assert b.hex("id") == hashlib.sha256(signed).digest() == canonical.event_id(signed)
        assert logs[header.log] == header.club, "the event's club does not own its log (§4.3)"
        # The payload is what its kind expects, read strictly.
        msgspec.json.decode(payload, type=PAYLOAD_TYPES[Kind(header.kind)])

        event = verify_event(signed, payload, check)
        assert (event.id, event.header, event.signed, event.payload) == (
            b.hex("id"),
            header,
            signed,
            payload,
        )
        erased = verify_event(signed, None, check)  # §3.5: erased events still verify
        assert erased.erased
        assert erased.id == event.id
        with pytest.raises(InvalidEventError, match="altered payload"):
            verify_event(signed, payload[:-1] + b" ", check)


def _runs(blocks: list[Block]) -> dict[bytes, list[Block]]:
    runs: dict[bytes, list[Block]] = {}
    for b in of_type(blocks, "event"):
        runs.setdefault(b.hex("log"), []).append(b)
    for run in runs.values():
        run.sort(key=lambda b: b.int("seq"))
        assert [b.int("seq") for b in run] == list(range(1, len(run) + 1)), "seq has gaps"
    return runs


def test_runs_verify(blocks: list[Block]) -> None:
    check = authorised(blocks)
    for log, run in _runs(blocks).items():
        assert run[0].hex("prev") == bytes(32)
        for before, after in itertools.pairwise(run):
            assert after.hex("prev") == before.hex("id")
        items = [(b.hex("signed_header"), b.hex("payload")) for b in run]
        for every in (False, True):
            out, error = verify_run(log, None, items, check, every_signature=every)
            assert error is None
            assert list(out.ids) == [b.hex("id") for b in run]
        # Erasing the first payload changes no id and breaks no link (§3.5).
        erased = [(items[0][0], None), *items[1:]]
        out, error = verify_run(log, None, erased, check)
        assert error is None
        assert list(out.ids) == [b.hex("id") for b in run]
        # A run may follow a trusted head (§4.2).
        first = Head(1, run[0].hex("id"))
        out, error = verify_run(log, first, items[1:], check)
        assert error is None
        assert len(out) == len(run) - 1


def _flip(signed: bytes, index: int) -> bytes:
    return signed[:index] + bytes([signed[index] ^ 1]) + signed[index + 1 :]


def test_run_shortcut_keeps_the_valid_prefix(blocks: list[Block]) -> None:
    check = authorised(blocks)
    for log, run in _runs(blocks).items():
        if len(run) < 2:
            continue
        items = [(b.hex("signed_header"), b.hex("payload")) for b in run]
        # A bad last signature: the fallback checks one by one and keeps the rest (§4.4).
        last = len(items) - 1
        bad_last = [*items[:last], (_flip(items[last][0], 230), items[last][1])]
        out, error = verify_run(log, None, bad_last, check)
        assert list(out.ids) == [b.hex("id") for b in run[:last]]
        assert error is not None
        assert "bad signature" in error.reason
        # A bad earlier signature changes that event's id: the next link breaks (§4.4, 2).
        bad_first = [(_flip(items[0][0], 230), items[0][1]), *items[1:]]
        out, error = verify_run(log, None, bad_first, check)
        assert len(out) == 0
        assert error is not None


def test_fork(blocks: list[Block]) -> None:
    check = authorised(blocks)
    held = {b.hex("id"): b for b in of_type(blocks, "event")}
    for b in of_type(blocks, "fork"):
        ours, theirs = b.hex("ours"), b.hex("theirs")
        assert ours != theirs
        assert b.hex("ours_id") == hashlib.sha256(ours).digest()
        assert b.hex("theirs_id") == hashlib.sha256(theirs).digest()
        assert held[b.hex("ours_id")].hex("signed_header") == ours
        # Evidence stands alone: each header verifies on its own, payload or not (§3.6).
        mine = verify_event(ours, None, check)
        other = verify_event(theirs, b.hex("theirs_payload"), check)
        for header in (mine.header, other.header):
            assert (header.club, header.log, header.seq) == (
                b.hex("club"),
                b.hex("log"),
                b.int("seq"),
            )
        fork = fork_between(mine, other)
        assert isinstance(fork, ForkError)
        assert (fork.ours, fork.theirs) == (ours, theirs)
        assert fork_between(mine, mine) is None


def _table(marker: str) -> list[list[str]]:
    """The cells of the markdown table right after `<!-- marker -->`, without its heading."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    assert f"<!-- {marker} -->" in lines, f"protocol.md has no <!-- {marker} --> table"
    start = lines.index(f"<!-- {marker} -->") + 3  # marker, heading, rule
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    assert rows, f"table {marker}: no rows"
    return rows


# --- the layout tables of protocol.md --------------------------------------------------

_INTS: dict[str, tuple[int, bool]] = {
    "u8": (1, False),
    "u16": (2, False),
    "u32": (4, False),
    "u64": (8, False),
    "i64": (8, True),
}


def layout(name: str) -> list[tuple[int, int, str, str]]:
    """The rows (offset, size, field, type) of the table after `<!-- layout name -->`."""
    rows = []
    for cells in _table(f"layout {name}"):
        assert len(cells) == 5, f"layout {name}: malformed row {cells}"
        offset, size, field, kind, _ = cells
        assert (offset + size).isdigit(), f"layout {name}: malformed row {cells}"
        rows.append((int(offset), int(size), field, kind))
    return rows


def _check_layout(name: str, data: bytes, tag: bytes, block: Block, total: int) -> None:
    rows = layout(name)
    offset = 0
    for at, size, field, kind in rows:
        assert at == offset, f"layout {name}: {field} should start at {offset}"
        assert size == _size_of(kind), f"layout {name}: {field} is {kind}, not {size} bytes"
        value = data[at : at + size]
        if field == "tag":
            assert value == tag
        elif field == "version":
            assert value == bytes([canonical.VERSION])
        elif kind in _INTS:
            assert int.from_bytes(value, "big", signed=_INTS[kind][1]) == block.int(field)
        else:
            assert value == block.hex(field)
        offset += size
    assert offset == total == len(data)


def _size_of(kind: str) -> int:
    if kind in _INTS:
        return _INTS[kind][0]
    m = re.fullmatch(r"bytes\[(\d+)\]", kind)
    assert m, f"unknown field type {kind!r}"
    return int(m.group(1))


def test_genesis_layout_table(blocks: list[Block]) -> None:
    for b in of_type(blocks, "genesis"):
        _check_layout("genesis", b.hex("genesis"), canonical.CLUB_TAG, b, canonical.GENESIS_BYTES)


def test_event_header_layout_table(blocks: list[Block]) -> None:
    for b in of_type(blocks, "event"):
        _check_layout(
            "event-header", b.hex("header"), canonical.EVENT_TAG, b, canonical.HEADER_BYTES
        )


def test_kinds_table_is_complete() -> None:
    # A node rejects kinds it does not know (§4.1): a second implementation needs them all.
    table = {int(code): name for code, name, _ in _table("kinds")}
    assert table == {int(k): k.name.lower() for k in Kind}


def test_payload_tables_match_the_payload_types() -> None:
    for kind, struct_type in PAYLOAD_TYPES.items():
        rows = _table(f"payload {kind.name.lower()}")
        documented = [(row[0].strip("`"), row[-1] == "required") for row in rows]
        actual = [(f.name, f.required) for f in msgspec.structs.fields(struct_type)]
        assert documented == actual, f"§3.2 table for {kind.name.lower()} is out of date"


def test_key_files_open_with_the_reference_reader(blocks: list[Block]) -> None:
    for b in of_type(blocks, "keyfile"):
        passphrase = b.get("passphrase").encode() if b.has("passphrase") else None
        key = open_key(b.get("json").encode(), b.hex("club"), passphrase, "protocol.md")
        assert key.secret_bytes() == b.hex("secret")


@pytest.mark.parametrize("passphrase", [b"correct horse battery staple", None])
def test_reference_key_files_have_the_documented_fields(passphrase: bytes | None) -> None:
    written = json.loads(seal_key(SigningKey(bytes(32)), bytes(32), passphrase))
    used = {k for k, v in written.items() if v not in ("", 0)}
    if passphrase is None:
        assert used == {"version", "club", "kdf", "secret"}
    else:
        assert used == {"version", "club", "kdf", "n", "r", "p", "salt", "nonce", "ciphertext"}


_STRUCT_CODES = {"B": "u8", "H": "u16", "I": "u32", "Q": "u64", "q": "i64"}


@pytest.mark.parametrize(
    ("name", "layout_struct"),
    [
        ("genesis", canonical._GENESIS),
        ("event-header", canonical._HEADER),
        ("request", canonical._REQUEST),
    ],
)
def test_layout_types_match_the_struct(name: str, layout_struct: struct.Struct) -> None:
    # Small vector values cannot tell u64 from i64: compare with the encoder's format.
    codes = re.findall(r"(\d*)([a-zA-Z])", layout_struct.format.lstrip(">"))
    expected = [f"bytes[{n}]" if c == "s" else _STRUCT_CODES[c] for n, c in codes]
    assert [kind for _, _, _, kind in layout(name)] == expected


# --- §5-§8: invites, request tokens, selection, messages, limits, errors, export ---------


def mp(value: object) -> bytes:
    """A minimal MessagePack encoder, shortest forms, written from the spec (§6.7)."""
    if value is None:
        return b"\xc0"
    if value is False:
        return b"\xc2"
    if value is True:
        return b"\xc3"
    if isinstance(value, int):
        assert 0 <= value < 1 << 64
        if value < 128:
            return bytes([value])
        code, size = next(
            (c, s) for c, s in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)) if value < 1 << 8 * s
        )
        return bytes([code]) + value.to_bytes(size, "big")
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) < 32:
            return bytes([0xA0 | len(raw)]) + raw
        return _sized(len(raw), (0xD9, 1), (0xDA, 2), (0xDB, 4)) + raw
    if isinstance(value, bytes):
        return _sized(len(value), (0xC4, 1), (0xC5, 2), (0xC6, 4)) + value
    if isinstance(value, list):
        head = (
            bytes([0x90 | len(value)])
            if len(value) < 16
            else _sized(len(value), (0xDC, 2), (0xDD, 4))
        )
        return head + b"".join(mp(v) for v in value)
    if isinstance(value, dict):
        head = (
            bytes([0x80 | len(value)])
            if len(value) < 16
            else _sized(len(value), (0xDE, 2), (0xDF, 4))
        )
        return head + b"".join(mp(k) + mp(v) for k, v in value.items())
    raise TypeError(f"mp cannot encode {type(value).__name__}")


def _sized(n: int, *forms: tuple[int, int]) -> bytes:
    code, size = next((c, s) for c, s in forms if n < 1 << 8 * s)
    return bytes([code]) + n.to_bytes(size, "big")


def _club_a(blocks: list[Block]) -> Block:
    return next(b for b in of_type(blocks, "genesis") if b.label == "club A")


def _by_label(blocks: list[Block], kind: str, label: str) -> Block:
    found = [b for b in of_type(blocks, kind) if b.label == label]
    assert len(found) == 1, f"protocol.md has no vector {kind} {label!r}"
    return found[0]


def test_invite(blocks: list[Block]) -> None:
    geneses = {b.hex("club"): b for b in of_type(blocks, "genesis")}
    for b in of_type(blocks, "invite"):
        text = b.get("text")
        found = invite.read_invite(text)  # decodes and checks everything (§5.1)
        assert (found.genesis, found.name, found.url, found.fingerprint, found.signature) == (
            b.get("genesis"),
            b.get("name"),
            b.get("url"),
            b.get("fingerprint"),
            b.get("signature"),
        )
        club = b.hex("club")
        assert found.club == club == hashlib.sha256(b.hex("genesis")).digest()
        genesis = geneses[club]
        assert genesis.hex("genesis") == b.hex("genesis")
        assert b.hex("fingerprint") == hashlib.sha256(CERTIFICATE_STAND_IN).digest()
        # The text: the prefix, then base64url of the JSON object without padding.
        assert text.startswith("fedinvite1:")
        body = text.removeprefix("fedinvite1:")
        assert "=" not in body
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert raw == b.get("json").encode()
        assert list(json.loads(raw)) == ["genesis", "name", "url", "fingerprint", "signature"]
        # The signed invite bytes, by the layout of §5.1.
        name, url, fingerprint = b.get("name").encode(), b.get("url").encode(), b.hex("fingerprint")
        signed = b"".join(
            (
                b"federation/invit",
                b"\x01",
                club,
                bytes([len(name)]),
                name,
                len(url).to_bytes(2, "big"),
                url,
                bytes([len(fingerprint)]),
                fingerprint,
            )
        )
        assert signed == b.hex("signed")
        assert canonical.encode_invite(club, b.get("name"), b.get("url"), fingerprint) == signed
        assert verify_signature(genesis.hex("key"), b.hex("signature"), signed)
        # Signing is deterministic: the reference writer makes the same text.
        key = SigningKey(hashlib.sha256(genesis.get("seed").encode()).digest())
        made = invite.make_invite(key, b.hex("genesis"), b.get("name"), b.get("url"), fingerprint)
        assert made == text
        # Another address under the same signature is refused (§5.1, step 5).
        moved = json.loads(raw)
        moved["url"] = "https://elsewhere.example:8401"
        forged = base64.urlsafe_b64encode(json.dumps(moved).encode()).decode().rstrip("=")
        with pytest.raises(UsageError, match="does not verify"):
            invite.read_invite("fedinvite1:" + forged)


def test_request(blocks: list[Block]) -> None:
    check = authorised(blocks)
    for b in of_type(blocks, "request"):
        body = b.hex("body") if b.has("body") else b""
        assert b.hex("body_hash") == hashlib.sha256(body).digest()
        scheme, space, value = b.get("authorization").partition(" ")
        assert (scheme, space) == ("Federation", " ")
        raw = base64.urlsafe_b64decode(value)
        assert base64.urlsafe_b64encode(raw).decode() == value, "base64url with its padding"
        assert raw == b.hex("signed") + b.hex("signature")
        token, signed, signature = canonical.decode_request(raw)
        assert token == RequestToken(
            sender=b.hex("sender"),
            recipient=b.hex("recipient"),
            time_us=b.int("time_us"),
            nonce=b.hex("nonce"),
            body_hash=b.hex("body_hash"),
            key=b.hex("key"),
            method=b.get("method"),
            target=b.get("target"),
        )
        assert (signed, signature) == (b.hex("signed"), b.hex("signature"))
        assert canonical.encode_request(token) == signed
        # The variable tail of §5.2, after the fixed part of the layout table.
        method, target = b.get("method").encode(), b.get("target").encode()
        fixed = canonical._REQUEST.size
        assert (
            signed[fixed:]
            == bytes([len(method)]) + method + len(target).to_bytes(2, "big") + target
        )
        assert len(raw) == fixed + 1 + len(method) + 2 + len(target) + 64
        assert check(token.sender, token.key), "the key is not the sender's genesis key"
        assert verify_signature(token.key, signature, signed)

        # The recipient's checks (§5.2), with a fixed clock and a fresh nonce memory.
        now = b.int("now_us")
        assert abs(now - token.time_us) <= auth.MAX_CLOCK_SKEW_US

        def accept(
            header: str | None = b.get("authorization"),
            *,
            replay: auth.ReplayGuard | None = None,
            recipient: bytes = token.recipient,
            method: str = token.method,
            target: str = token.target,
            body: bytes = body,
            now_us: int = now,
            authorized: KeyCheck = check,
        ) -> bytes | None:
            return auth.check(
                header,
                recipient=recipient,
                method=method,
                target=target,
                body=body,
                now_us=now_us,
                authorized=authorized,
                replay=replay or auth.ReplayGuard(),
            )

        guard = auth.ReplayGuard()
        assert accept(replay=guard) == token.sender
        with pytest.raises(RemoteProtocolError) as refused:
            accept(replay=guard)
        assert (refused.value.code, refused.value.http_status) == ("replayed", 401)
        bad_signature = (
            "Federation " + base64.urlsafe_b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()
        )
        refusals: list[tuple[str, dict[str, object]]] = [
            ("unauthenticated", {"header": "Bearer " + value}),
            ("unauthenticated", {"header": "Federation " + value[:-8]}),
            ("wrong_recipient", {"recipient": token.sender}),
            ("bad_request_token", {"target": token.target + "&x=1"}),
            ("bad_request_token", {"method": "PUT"}),
            ("expired", {"now_us": token.time_us + auth.MAX_CLOCK_SKEW_US + 1}),
            ("expired", {"now_us": token.time_us - auth.MAX_CLOCK_SKEW_US - 1}),
            ("unknown_club", {"authorized": lambda club, key: False}),
            ("bad_request_token", {"body": body + b"x"}),
            ("bad_request_token", {"header": bad_signature}),
        ]
        for code, change in refusals:
            with pytest.raises(RemoteProtocolError) as refused:
                accept(**change)  # type: ignore[arg-type]
            assert (refused.value.code, refused.value.http_status) == (code, 401), change
        assert accept(None) is None  # no Authorization: an anonymous reader (§5.4)


def test_request_layout_table(blocks: list[Block]) -> None:
    for b in of_type(blocks, "request"):
        fixed = canonical._REQUEST.size
        _check_layout("request", b.hex("signed")[:fixed], canonical.REQUEST_TAG, b, fixed)


def test_requests_carry_the_documented_round(blocks: list[Block]) -> None:
    # §5.2's vectors are club B's want (§6.7) and its long-poll with the digest as known.
    want = _by_label(blocks, "want", "club B wants club A's logs")
    post = _by_label(blocks, "request", "club B asks club A for events")
    assert (post.get("method"), post.get("target")) == ("POST", peer_api.EVENTS_PATH)
    assert post.hex("body") == want.hex("message")
    frontier = _by_label(blocks, "frontier", "club A's frontier for club B")
    poll = _by_label(blocks, "request", "club B long-polls club A's frontier")
    assert poll.get("method") == "GET"
    assert not poll.has("body")
    assert poll.get("target") == (
        f"{peer_api.FRONTIER_PATH}?known={frontier.get('digest')}&wait={syncer.LONG_POLL_S:g}"
    )


def _roster(blocks: list[Block], club: bytes) -> set[bytes]:
    check = authorised(blocks)
    log = selection.roster_log_id(club)
    events = sorted(
        (b for b in of_type(blocks, "event") if b.hex("log") == log), key=lambda b: b.int("seq")
    )
    verified = [verify_event(b.hex("signed_header"), b.hex("payload"), check) for b in events]
    return selection.fold_roster(set(), verified)


def test_roster_log(blocks: list[Block]) -> None:
    a = _club_a(blocks).hex("club")
    b = next(g.hex("club") for g in of_type(blocks, "genesis") if g.label == "club B")
    roster = _by_label(blocks, "log", "club A roster log")
    assert roster.get("name") == selection.ROSTER_LOG_NAME == "roster"
    assert roster.get("audience") == "federation"
    assert roster.hex("descriptor") == selection.roster_descriptor(a)
    assert roster.hex("log") == selection.roster_log_id(a)
    assert _roster(blocks, a) == {b}


def _heads(text: str) -> list[tuple[bytes, int, bytes]]:
    heads = []
    for item in text.split(" "):
        log, seq, head = item.split(":")
        heads.append((bytes.fromhex(log), int(seq), bytes.fromhex(head)))
    return heads


def test_frontier(blocks: list[Block]) -> None:
    a = _club_a(blocks).hex("club")
    peers = frozenset(g.hex("club") for g in of_type(blocks, "genesis")) - {a}
    audiences = {
        b.hex("log"): (b.hex("club"), parse_audience(b.get("audience")))
        for b in of_type(blocks, "log")
    }
    held: dict[bytes, Block] = {}  # each log's head among the events club A holds
    for e in of_type(blocks, "event"):
        if e.hex("log") not in held or e.int("seq") > held[e.hex("log")].int("seq"):
            held[e.hex("log")] = e
    rosters = {a: frozenset(_roster(blocks, a))}
    for b in of_type(blocks, "frontier"):
        raw = b.hex("message")
        message = messages.decode(raw)
        assert isinstance(message, Frontier)
        assert message.digest == b.hex("digest")
        if b.get("logs") == "nil":  # unchanged since `known` (§6.6)
            assert not b.has("heads")
            assert message.logs is None
            assert message.digest == b.hex("known")
            assert raw == mp({"t": "frontier", "digest": message.digest, "logs": None})
            assert len(raw) == 59, "§6.6: an unchanged frontier is 59 bytes"
            continue
        assert not b.has("known")
        heads = _heads(b.get("heads"))
        assert len(heads) == b.int("logs")
        assert message.logs == [LogHead(*h) for h in heads]
        assert [log for log, _, _ in heads] == sorted(log for log, _, _ in heads)
        # The digest, by the reference (§6.6) and by hand.
        digest, log_heads = serve.frontier((log, Head(seq, head)) for log, seq, head in heads)
        assert (digest, log_heads) == (message.digest, message.logs)
        assert digest == hashlib.sha256(mp([list(h) for h in heads])).digest()
        assert raw == mp({"t": "frontier", "digest": digest, "logs": [list(h) for h in heads]})
        assert len(raw) == 59 + 70 * len(heads), "§6.6: 70 bytes a log with a short seq"
        # Exactly the logs with events that this requester may receive (§5.4).
        requester = None if b.get("requester") == "none" else b.hex("requester")
        visible = sorted(
            (log, e.int("seq"), e.hex("id"))
            for log, e in held.items()
            if selection.may_receive(
                audiences[log][1], audiences[log][0], requester, our_peers=peers, rosters=rosters
            )
        )
        assert heads == visible


def test_want(blocks: list[Block]) -> None:
    for b in of_type(blocks, "want"):
        raw = b.hex("message")
        message = messages.decode(raw)
        assert isinstance(message, Want)
        entries = []
        for item in b.get("wants").split(" "):
            log, after, limit, descriptor = item.split(":")
            assert descriptor in ("true", "false")
            entries.append(
                WantLog(bytes.fromhex(log), int(after), int(limit), descriptor == "true")
            )
        assert message.logs == entries
        wire = [[w.log, w.after, w.limit, w.descriptor] for w in entries]
        assert raw == mp({"t": "want", "logs": wire})
    # §6.2: a client holding none of club A's logs wants exactly this from that frontier.
    frontier = messages.decode(
        _by_label(blocks, "frontier", "club A's frontier for club B").hex("message")
    )
    session = Session({}, None)
    assert session.frontier_known() is None
    want = session.on_frontier(frontier)
    assert session.state is State.STREAMING
    assert want == messages.decode(
        _by_label(blocks, "want", "club B wants club A's logs").hex("message")
    )


def test_batch(blocks: list[Block]) -> None:
    check = authorised(blocks)
    events = {e.hex("id"): e for e in of_type(blocks, "event")}
    clubs = {b.hex("log"): b.hex("club") for b in of_type(blocks, "log")}
    for b in of_type(blocks, "batch"):
        raw = b.hex("message")
        message = messages.decode(raw)
        assert isinstance(message, Batch)
        assert message.log == b.hex("log")
        assert len(message.events) == b.int("count")
        ids = [bytes.fromhex(i) for i in b.get("ids").split(" ")]
        assert [hashlib.sha256(signed).digest() for signed, _ in message.events] == ids
        for (signed, payload), id_ in zip(message.events, ids, strict=True):
            assert signed == events[id_].hex("signed_header")
            assert payload == events[id_].hex("payload")
        first = canonical.decode_header(message.events[0][0]).seq
        after = None if first == 1 else Head(first - 1, events[ids[0]].hex("prev"))
        out, error = verify_run(message.log, after, message.events, check, club=clubs[message.log])
        assert error is None
        assert list(out.ids) == ids
        assert raw == mp(
            {"t": "batch", "log": message.log, "events": [list(e) for e in message.events]}
        )
        # Framing (§6.7): a u32 big-endian length, then the message.
        assert b.hex("frame_header") == len(raw).to_bytes(4, "big")
        framed = b.hex("frame_header") + raw
        assert messages.frame(message) == framed
        reader = FrameReader()
        assert list(reader.feed(framed[:100])) == []
        assert list(reader.feed(framed[100:] + messages.frame(messages.Done()))) == [
            message,
            messages.Done(),
        ]
        assert reader.at_boundary()


async def test_export(blocks: list[Block]) -> None:
    events = {e.hex("id"): e for e in of_type(blocks, "event")}
    geneses = {g.hex("club"): g for g in of_type(blocks, "genesis")}
    descriptors = {b.hex("log"): b for b in of_type(blocks, "log")}
    for b in of_type(blocks, "export"):
        names = ["club_line", "log_line"] + [
            f"event_line_{i}" for i in range(1, 10) if b.has(f"event_line_{i}")
        ]
        lines = [b.get(n) for n in names]
        club_line, log_line, *event_lines = (json.loads(line) for line in lines)
        # By hand, as §8 says.
        assert list(club_line) == ["type", "id", "genesis"]
        genesis = bytes.fromhex(club_line["genesis"])
        assert club_line["type"] == "club"
        assert hashlib.sha256(genesis).digest().hex() == club_line["id"]
        assert geneses[bytes.fromhex(club_line["id"])].hex("genesis") == genesis
        assert list(log_line) == ["type", "id", "descriptor", "name", "audience"]
        log = descriptors[b.hex("log")]
        assert (log_line["type"], log_line["id"]) == ("log", b.get("log"))
        assert bytes.fromhex(log_line["descriptor"]) == log.hex("descriptor")
        assert (log_line["name"], log_line["audience"]) == (log.get("name"), log.get("audience"))
        for seq, line in enumerate(event_lines, start=1):
            assert list(line) == ["type", "log", "seq", "id", "signed", "payload"]
            event = events[bytes.fromhex(line["id"])]
            assert (line["type"], line["log"], line["seq"]) == ("event", b.get("log"), seq)
            assert bytes.fromhex(line["signed"]) == event.hex("signed_header")
            assert hashlib.sha256(bytes.fromhex(line["signed"])).hexdigest() == line["id"]
            assert base64.b64decode(line["payload"], validate=True) == event.hex("payload")
        # By the reference: import into an empty store, export again, byte for byte.
        file = [line.encode() + b"\n" for line in lines]
        store = MemoryStore()
        report = await archive.import_lines(store, {}, file, now_us=0)
        assert (report.added, report.already, report.forks) == (len(event_lines), 0, 0)
        record = await store.log(b.hex("log"))
        assert record is not None
        out = io.BytesIO()
        assert await archive.export(store, out, [record]) == len(event_lines)
        assert out.getvalue() == b"".join(file)
        again = await archive.import_lines(store, {}, file, now_us=0)
        assert (again.added, again.already) == (0, len(event_lines)), "import is idempotent"


# --- the tables of §6.4 and §7 against the code -------------------------------------------

_LIMIT_MODULES: tuple[ModuleType, ...] = (
    messages,
    auth,
    peer_api,
    client,
    syncer,
    ingest,
    runtime,
    service,
    archive,
)
_LIMITS_ELSEWHERE = ("MAX_REQUEST_TARGET_BYTES", "REQUEST_NONCE_BYTES", "MAX_INVITE_URL_BYTES")


def test_limits_table_names_every_sync_constant() -> None:
    constants: dict[str, float] = {name: getattr(canonical, name) for name in _LIMITS_ELSEWHERE}
    for module in _LIMIT_MODULES:
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, int | float) and not isinstance(value, bool):
                assert constants.setdefault(name, value) == value, name
    rows = _table("limits")
    documented = {}
    for name, value, kind, reason in rows:
        assert kind in ("protocol", "reference"), f"limit {name}: kind {kind!r}"
        assert reason, f"limit {name} gives no reason"
        documented[name.strip("`")] = float(value)
    assert set(documented) == set(constants), "§6.4 and the code name different limits"
    for name, value in documented.items():
        assert value == constants[name], f"§6.4 says {name} is {value}, the code {constants[name]}"


def _error_codes_in_code() -> tuple[set[str], set[tuple[str, int]]]:
    """Every error code the package raises, and the HTTP status given with it."""
    codes: set[str] = set()
    statuses: set[tuple[str, int]] = set()
    for path in sorted((ROOT / "federation").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            code = keywords.get("code")
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                codes.add(code.value)
                status = keywords.get("http_status")
                if isinstance(status, ast.Constant) and isinstance(status.value, int):
                    statuses.add((code.value, status.value))
            # sync/auth.py refuses with refuse(why, code), always 401.
            if isinstance(node.func, ast.Name) and node.func.id == "refuse":
                arg = node.args[1]
                assert isinstance(arg, ast.Constant)
                assert isinstance(arg.value, str)
                codes.add(arg.value)
                statuses.add((arg.value, 401))
    return codes, statuses


def test_error_codes_table_matches_the_code() -> None:
    table = {code.strip("`"): status for code, status, _ in _table("error-codes")}
    codes, statuses = _error_codes_in_code()
    assert set(table) == codes, "§7 and the code use different error codes"
    for code, status in statuses:
        assert table[code] == str(status), (
            f"§7 gives {code} status {table[code]}, the code {status}"
        )
    assert {s for s in table.values() if not s.isdigit()} == {"client"}
