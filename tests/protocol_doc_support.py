"""Reading protocol.md: its vector blocks and its tables (shared by the tests of
protocol.md, tests/test_protocol_doc.py and tests/test_protocol_sync_doc.py)."""

from __future__ import annotations

import re
from pathlib import Path

from federation.core import canonical
from federation.core.events import KeyCheck
from tests.protocol_vectors import (
    Block,
    VectorFormatError,
    check_hex,
    parse_blocks,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "protocol.md"

# Byte fields of each vector type and their sizes (None: any length).
HEX_FIELDS: dict[str, dict[str, int | None]] = {
    "keyevent": {
        "club": 32,
        "log": 32,
        "signer": 32,
        "key": 32,
        "revoked": 32,
        "cut_log": 32,
        "cut_first": 32,
        "cut_event": 32,
        "cut_tag": 32,
        "cut_key": 32,
        "cut_entry": 88,
        "signed_header": canonical.SIGNED_HEADER_BYTES,
        "id": 32,
        "payload": None,
    },
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
    # ciphertext: 48 bytes in version 1, 80 in version 2 (the store key too): load checks.
    "keyfile": {"club": 32, "secret": 32, "salt": 16, "nonce": 12, "store_key": 32},
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
    "agreement": {"proposer": 32, "proposal": 32, "version": 32, "record_sha256": 32},
}
INT_FIELDS: dict[str, tuple[str, ...]] = {
    "keyevent": ("seq", "cut_seq"),
    "genesis": ("time_us",),
    "log": ("audience_code",),
    "event": ("seq", "time_us", "kind", "payload_size"),
    "fork": ("seq",),
    "keyfile": ("n", "r", "p", "version"),
    "invite": (),
    "request": ("time_us", "now_us"),
    "frontier": (),
    "want": (),
    "batch": ("count",),
    "export": (),
    "agreement": ("agreed_us", "record_bytes"),
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
        if block.type == "keyfile" and block.has("ciphertext"):  # §2.3: by version
            two = block.has("version") and block.get("version") == "2"
            check_hex(block, "ciphertext", 80 if two else 48)
        for key in INT_FIELDS[block.type]:
            if block.has(key) and not re.fullmatch(r"-?[0-9]+", block.get(key)):
                raise VectorFormatError(f"vector {block.label!r}: {key} is not an integer")
    return found


def document_blocks() -> list[Block]:
    """The vector blocks of protocol.md (each test module's `blocks` fixture)."""
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


def doc_table(marker: str) -> list[list[str]]:
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

INT_TYPES: dict[str, tuple[int, bool]] = {
    "u8": (1, False),
    "u16": (2, False),
    "u32": (4, False),
    "u64": (8, False),
    "i64": (8, True),
}


def layout(name: str) -> list[tuple[int, int, str, str]]:
    """The rows (offset, size, field, type) of the table after `<!-- layout name -->`."""
    rows = []
    for cells in doc_table(f"layout {name}"):
        assert len(cells) == 5, f"layout {name}: malformed row {cells}"
        offset, size, field, kind, _ = cells
        assert (offset + size).isdigit(), f"layout {name}: malformed row {cells}"
        rows.append((int(offset), int(size), field, kind))
    return rows


def check_layout(name: str, data: bytes, tag: bytes, block: Block, total: int) -> None:
    rows = layout(name)
    offset = 0
    for at, size, field, kind in rows:
        assert at == offset, f"layout {name}: {field} should start at {offset}"
        assert size == size_of(kind), f"layout {name}: {field} is {kind}, not {size} bytes"
        value = data[at : at + size]
        if field == "tag":
            assert value == tag
        elif field == "version":
            assert value == bytes([canonical.VERSION])
        elif kind in INT_TYPES:
            assert int.from_bytes(value, "big", signed=INT_TYPES[kind][1]) == block.int(field)
        else:
            assert value == block.hex(field)
        offset += size
    assert offset == total == len(data)


def size_of(kind: str) -> int:
    if kind in INT_TYPES:
        return INT_TYPES[kind][0]
    m = re.fullmatch(r"bytes\[(\d+)\]", kind)
    assert m, f"unknown field type {kind!r}"
    return int(m.group(1))
