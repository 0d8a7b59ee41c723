"""Test vectors for protocol.md §2-§3, built deterministically from fixed seeds.

Every example in protocol.md is a fenced block whose info string is ``vector <type>``
and whose lines are ``key: value`` (bytes in lowercase hex, integers in decimal,
text as is). tests/test_protocol_doc.py parses them back and checks each one against
federation.core; this module makes them and keeps the parser both sides share.

    python -m tests.protocol_vectors                  print every block
    python -m tests.protocol_vectors --write protocol.md
                                                      replace the blocks in place

Secrets here are public test values: sha256 of a fixed seed text. Key file vectors
use a fixed salt and nonce, which a real key file must never do (protocol.md §2.3).
The key file is sealed by the small ChaCha20-Poly1305 below rather than by
federation.core.crypto, for two reasons: `crypto.seal` draws a random nonce (as it
should), and a second implementation of the AEAD written from RFC 8439 is a check
that §2.3 says enough; the test opens it with federation.core.crypto.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from federation.core import canonical
from federation.core.canonical import Audience, Genesis, Kind
from federation.core.crypto import SigningKey
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.log import default_log_name, descriptor_bytes, format_audience
from federation.core.payloads import make_payload

INFO_PREFIX = "vector"

# Keys each block type must have, and keys it may have besides (protocol.md shows them).
REQUIRED: dict[str, frozenset[str]] = {
    "genesis": frozenset(
        ("label", "seed", "secret", "key", "recovery", "time_us", "genesis", "club")
    ),
    "log": frozenset(("label", "club", "name", "audience", "audience_code", "descriptor", "log")),
    "event": frozenset(
        (
            "label",
            "club",
            "log",
            "seq",
            "prev",
            "time_us",
            "kind",
            "kind_name",
            "payload_hash",
            "payload_size",
            "key",
            "header",
            "signature",
            "signed_header",
            "id",
            "payload",
            "payload_json",
        )
    ),
    "fork": frozenset(
        ("label", "club", "log", "seq", "ours", "ours_id", "theirs", "theirs_id", "theirs_payload")
    ),
    "keyfile": frozenset(("label", "club", "kdf", "secret", "json")),
}
OPTIONAL: dict[str, frozenset[str]] = {
    "genesis": frozenset(("recovery_seed", "recovery_key")),
    "log": frozenset(),
    "event": frozenset(),
    "fork": frozenset(),
    "keyfile": frozenset(("passphrase", "n", "r", "p", "salt", "nonce", "ciphertext")),
}


class VectorFormatError(ValueError):
    """A vector block in protocol.md is malformed: says which line and why."""


@dataclass(frozen=True)
class Block:
    """One ```vector <type>``` block: its type and its ordered `key: value` lines."""

    type: str
    fields: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        return self.get("label")

    def get(self, key: str) -> str:
        for k, v in self.fields:
            if k == key:
                return v
        raise KeyError(f"vector {self.type} has no {key!r}")

    def has(self, key: str) -> bool:
        return any(k == key for k, _ in self.fields)

    def hex(self, key: str) -> bytes:
        return bytes.fromhex(self.get(key))

    def int(self, key: str) -> int:
        return int(self.get(key))

    def render(self) -> str:
        lines = [f"```{INFO_PREFIX} {self.type}"]
        lines += [f"{k}: {v}" for k, v in self.fields]
        lines.append("```")
        return "\n".join(lines)


# --- parsing (shared with tests/test_protocol_doc.py) -------------------------------

_FENCE = re.compile(r"^(`{3,}|~{3,})\s*(.*)$")
_INFO = re.compile(r"^vector ([a-z]+)$")
_LINE = re.compile(r"^([a-z][a-z0-9_]*): (.*\S)$")
_HEX = re.compile(r"^(?:[0-9a-f]{2})*$")


def parse_blocks(text: str) -> list[tuple[int, Block]]:
    """Every vector block of a markdown text with its 1-based line number.

    Strict on purpose: any fence whose info string mentions "vector" must be exactly
    ``vector <known type>``; every line inside is `key: value` with a known key, none
    twice, all required keys present; a block must be closed. Anything else raises
    VectorFormatError, so a typo in the doc cannot silently drop a vector.
    """
    lines = text.splitlines()
    found: list[tuple[int, Block]] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        marker, info = fence.group(1), fence.group(2).strip()
        start = i + 1
        end = next(
            (j for j in range(start, len(lines)) if lines[j].strip() == marker),
            None,
        )
        if end is None:
            raise VectorFormatError(f"line {start}: fenced block is never closed")
        if "vector" in info:
            found.append((start, _parse_block(start, info, lines[start:end])))
        i = end + 1
    return found


def _parse_block(line_no: int, info: str, body: Sequence[str]) -> Block:
    m = _INFO.match(info)
    if not m or m.group(1) not in REQUIRED:
        raise VectorFormatError(
            f"line {line_no}: info string {info!r} is not 'vector <type>' with a type in "
            f"{sorted(REQUIRED)}"
        )
    kind = m.group(1)
    allowed = REQUIRED[kind] | OPTIONAL[kind]
    fields: list[tuple[str, str]] = []
    for offset, raw in enumerate(body, start=1):
        where = f"line {line_no + offset} (vector {kind})"
        if not raw.strip():
            raise VectorFormatError(f"{where}: blank line inside a vector block")
        lm = _LINE.match(raw)
        if not lm:
            raise VectorFormatError(f"{where}: expected 'key: value', got {raw!r}")
        key, value = lm.group(1), lm.group(2)
        if key not in allowed:
            raise VectorFormatError(f"{where}: unknown key {key!r}")
        if any(k == key for k, _ in fields):
            raise VectorFormatError(f"{where}: key {key!r} appears twice")
        fields.append((key, value))
    missing = REQUIRED[kind] - {k for k, _ in fields}
    if missing:
        raise VectorFormatError(f"line {line_no}: vector {kind} lacks {sorted(missing)}")
    return Block(kind, tuple(fields))


def check_hex(block: Block, key: str, size: int | None = None) -> bytes:
    """A field's bytes; raises VectorFormatError unless lowercase hex of `size` bytes."""
    value = block.get(key)
    if not _HEX.match(value):
        raise VectorFormatError(f"vector {block.label!r}: {key} is not lowercase hex")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise VectorFormatError(
            f"vector {block.label!r}: {key} is {len(raw)} bytes, expected {size}"
        )
    return raw


# --- building ------------------------------------------------------------------------

CLUB_A_SEED = "federation test vector club A"
CLUB_A_RECOVERY_SEED = "federation test vector club A recovery"
CLUB_B_SEED = "federation test vector club B"
PASSPHRASE = "correct horse battery staple"


def _us(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time with an offset."""
    t = dt.datetime.fromisoformat(text)
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _key(seed: str) -> SigningKey:
    return SigningKey(hashlib.sha256(seed.encode()).digest())


@dataclass(frozen=True)
class _Club:
    label: str
    key: SigningKey
    genesis: bytes
    id: bytes


def _genesis(label: str, seed: str, recovery_seed: str | None, time: str) -> tuple[_Club, Block]:
    key = _key(seed)
    fields: list[tuple[str, str]] = [
        ("label", label),
        ("seed", seed),
        ("secret", key.secret_bytes().hex()),
        ("key", key.public.hex()),
    ]
    if recovery_seed is None:
        recovery = canonical.ZERO_HASH
    else:
        recovery_key = _key(recovery_seed).public
        recovery = canonical.sha256(recovery_key)
        fields += [("recovery_seed", recovery_seed), ("recovery_key", recovery_key.hex())]
    time_us = _us(time)
    genesis = canonical.encode_genesis(Genesis(key.public, recovery, time_us))
    club = canonical.club_id(genesis)
    fields += [
        ("recovery", recovery.hex()),
        ("time_us", str(time_us)),
        ("genesis", genesis.hex()),
        ("club", club.hex()),
    ]
    return _Club(label, key, genesis, club), Block("genesis", tuple(fields))


def _log(label: str, club: bytes, audience: Audience) -> tuple[bytes, Block]:
    name = default_log_name(audience)
    descriptor = descriptor_bytes(club, name, audience)
    log = canonical.log_id(descriptor)
    codes = {"private": 0, "federation": 1, "public": 2, "clubs": 3}
    block = Block(
        "log",
        (
            ("label", label),
            ("club", club.hex()),
            ("name", name),
            ("audience", format_audience(audience)),
            ("audience_code", str(codes[audience.kind])),
            ("descriptor", descriptor.hex()),
            ("log", log.hex()),
        ),
    )
    return log, block


def _event(label: str, event: VerifiedEvent) -> Block:
    h = event.header
    assert event.payload is not None
    return Block(
        "event",
        (
            ("label", label),
            ("club", h.club.hex()),
            ("log", h.log.hex()),
            ("seq", str(h.seq)),
            ("prev", h.prev.hex()),
            ("time_us", str(h.time_us)),
            ("kind", str(h.kind)),
            ("kind_name", Kind(h.kind).name.lower()),
            ("payload_hash", h.payload_hash.hex()),
            ("payload_size", str(h.payload_size)),
            ("key", h.key.hex()),
            ("header", canonical.header_bytes(event.signed).hex()),
            ("signature", canonical.signature_of(event.signed).hex()),
            ("signed_header", event.signed.hex()),
            ("id", event.id.hex()),
            ("payload_json", event.payload.decode()),
            ("payload", event.payload.hex()),
        ),
    )


def _keyfiles(club: _Club) -> list[Block]:
    salt = hashlib.sha256(b"federation test vector salt").digest()[:16]
    nonce = hashlib.sha256(b"federation test vector nonce").digest()[:12]
    n, r, p = 2**15, 8, 1
    derived = hashlib.scrypt(
        PASSPHRASE.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32
    )
    secret = club.key.secret_bytes()
    ciphertext = chacha20_poly1305_seal(derived, nonce, secret, club.id)
    sealed = {
        "version": 1,
        "club": club.id.hex(),
        "kdf": "scrypt",
        "n": n,
        "r": r,
        "p": p,
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "ciphertext": ciphertext.hex(),
    }
    plain = {"version": 1, "club": club.id.hex(), "kdf": "none", "secret": secret.hex()}
    return [
        Block(
            "keyfile",
            (
                ("label", f"{club.label} key file, passphrase"),
                ("club", club.id.hex()),
                ("kdf", "scrypt"),
                ("passphrase", PASSPHRASE),
                ("n", str(n)),
                ("r", str(r)),
                ("p", str(p)),
                ("salt", salt.hex()),
                ("nonce", nonce.hex()),
                ("ciphertext", ciphertext.hex()),
                ("secret", secret.hex()),
                ("json", msgspec.json.encode(sealed).decode()),
            ),
        ),
        Block(
            "keyfile",
            (
                ("label", f"{club.label} key file, unencrypted"),
                ("club", club.id.hex()),
                ("kdf", "none"),
                ("secret", secret.hex()),
                ("json", msgspec.json.encode(plain).decode()),
            ),
        ),
    ]


def build() -> list[Block]:
    """Every vector of protocol.md, in the order the document shows them."""
    a, genesis_a = _genesis(
        "club A", CLUB_A_SEED, CLUB_A_RECOVERY_SEED, "2026-01-01T00:00:00+00:00"
    )
    b, genesis_b = _genesis("club B", CLUB_B_SEED, None, "2026-01-02T09:30:00+00:00")
    blocks = [genesis_a, genesis_b, *_keyfiles(a)]

    logs: dict[str, bytes] = {}
    for audience in (
        Audience("private"),
        Audience("federation"),
        Audience("public"),
        Audience("clubs", tuple(sorted((a.id, b.id)))),
    ):
        log, block = _log(f"club A {audience.kind} log", a.id, audience)
        logs[audience.kind] = log
        blocks.append(block)

    public = logs["public"]
    note = make_payload(Kind.NOTE, {"text": "Monthly meeting moved to the library, room 2."})
    first = sign_event(
        a.key,
        club=a.id,
        log=public,
        head=None,
        time_us=_us("2026-01-10T18:00:00+00:00"),
        kind=Kind.NOTE,
        payload=note,
    )
    action = make_payload(
        Kind.ACTION,
        {
            "what": "Picket at the bus depot",
            "starts": "2026-02-03T06:30:00+00:00",
            "where": "North gate, Depot Road",
            "participants": 9,
        },
    )
    second = sign_event(
        a.key,
        club=a.id,
        log=public,
        head=Head(first.header.seq, first.id),
        time_us=_us("2026-01-12T20:15:00+00:00"),
        kind=Kind.ACTION,
        payload=action,
    )
    blocks += [
        _event("club A public log seq 1", first),
        _event("club A public log seq 2", second),
    ]

    # A fork: the same key signs a different seq 2 on the same seq 1 (§3.6).
    other = make_payload(Kind.NOTE, {"text": "Picket cancelled."})
    rival = sign_event(
        a.key,
        club=a.id,
        log=public,
        head=Head(first.header.seq, first.id),
        time_us=_us("2026-01-12T20:16:00+00:00"),
        kind=Kind.NOTE,
        payload=other,
    )
    blocks.append(
        Block(
            "fork",
            (
                ("label", "club A public log seq 2 fork"),
                ("club", a.id.hex()),
                ("log", public.hex()),
                ("seq", "2"),
                ("ours", second.signed.hex()),
                ("ours_id", second.id.hex()),
                ("theirs", rival.signed.hex()),
                ("theirs_id", rival.id.hex()),
                ("theirs_payload", other.hex()),
            ),
        )
    )
    return blocks


# --- ChaCha20-Poly1305 (RFC 8439), for the fixed-nonce key file vector only ----------

_M32 = 0xFFFFFFFF


def _chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    def rotl(v: int, c: int) -> int:
        return ((v << c) & _M32) | (v >> (32 - c))

    def quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
        s[a] = (s[a] + s[b]) & _M32
        s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & _M32
        s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & _M32
        s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & _M32
        s[b] = rotl(s[b] ^ s[c], 7)

    state = [
        0x61707865,
        0x3320646E,
        0x79622D32,
        0x6B206574,
        *struct.unpack("<8I", key),
        counter,
        *struct.unpack("<3I", nonce),
    ]
    w = list(state)
    for _ in range(10):
        quarter(w, 0, 4, 8, 12)
        quarter(w, 1, 5, 9, 13)
        quarter(w, 2, 6, 10, 14)
        quarter(w, 3, 7, 11, 15)
        quarter(w, 0, 5, 10, 15)
        quarter(w, 1, 6, 11, 12)
        quarter(w, 2, 7, 8, 13)
        quarter(w, 3, 4, 9, 14)
    return struct.pack("<16I", *((x + y) & _M32 for x, y in zip(w, state, strict=True)))


def _poly1305(key: bytes, message: bytes) -> bytes:
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(message), 16):
        acc = (acc + int.from_bytes(message[i : i + 16] + b"\x01", "little")) * r % p
    return ((acc + s) % (1 << 128)).to_bytes(16, "little")


def chacha20_poly1305_seal(key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """Ciphertext followed by the 16-byte tag, as RFC 8439 §2.8 and `cryptography` do."""
    one_time_key = _chacha20_block(key, 0, nonce)[:32]
    blocks = (len(plaintext) + 63) // 64
    stream = b"".join(_chacha20_block(key, 1 + i, nonce) for i in range(blocks))
    ciphertext = bytes(x ^ y for x, y in zip(plaintext, stream, strict=False))

    def pad16(data: bytes) -> bytes:
        return data + bytes(-len(data) % 16)

    mac_data = (
        pad16(associated) + pad16(ciphertext) + struct.pack("<QQ", len(associated), len(ciphertext))
    )
    return ciphertext + _poly1305(one_time_key, mac_data)


# --- command line -------------------------------------------------------------------


def rewrite(text: str, blocks: Sequence[Block]) -> str:
    """`text` with each vector block replaced by the built block of the same label."""
    by_label = {b.label: b for b in blocks}
    held = parse_blocks(text)
    missing = set(by_label) - {b.label for _, b in held}
    if missing:
        raise VectorFormatError(f"protocol.md has no block for {sorted(missing)}; add them")
    lines = text.splitlines()
    for line_no, block in reversed(held):
        if block.label not in by_label:
            raise VectorFormatError(f"line {line_no}: no vector is built for {block.label!r}")
        end = line_no + len(block.fields) + 1  # the closing fence, 1-based
        lines[line_no - 1 : end] = by_label[block.label].render().splitlines()
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    blocks = build()
    if not argv:
        print("\n\n".join(b.render() for b in blocks))
        return 0
    if len(argv) == 2 and argv[0] == "--write":
        path = argv[1]
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(rewrite(text, blocks))
        return 0
    print("usage: python -m tests.protocol_vectors [--write protocol.md]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
