"""Test vectors for protocol.md §2-§8, built deterministically from fixed seeds.

Every example in protocol.md is a fenced block whose info string is ``vector <type>``
and whose lines are ``key: value`` (bytes in lowercase hex, integers in decimal,
text as is). tests/test_protocol_doc.py and tests/test_protocol_sync_doc.py parse
them back and check each one against federation; this module makes them and keeps
the parser both sides share.

    python -m tests.protocol_vectors                  print every block
    python -m tests.protocol_vectors --write protocol.md
                                                      replace the blocks in place

Secrets here are public test values: sha256 of a fixed seed text. Key file vectors
use a fixed salt and nonce, which a real key file must never do (protocol.md §2.3),
and request tokens a fixed nonce, which a real request must never do (§5.2).
The key file is sealed by the small ChaCha20-Poly1305 below rather than by
federation.core.crypto, for two reasons: `crypto.seal` draws a random nonce (as it
should), and a second implementation of the AEAD written from RFC 8439 is a check
that §2.3 says enough; the test opens it with federation.core.crypto.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

import msgspec

from federation.core import canonical, keys
from federation.core.canonical import Audience, Genesis, Kind
from federation.core.crypto import SigningKey
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.log import default_log_name, descriptor_bytes, format_audience
from federation.core.payloads import make_payload
from federation.core.selection import ROSTER_LOG_NAME
from federation.node.recovery import words as recovery_words
from federation.sync import messages, serve
from federation.sync.messages import Batch, Frontier, Want, WantLog
from federation.views import agreement, proposals

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
    "invite": frozenset(
        (
            "label",
            "club",
            "name",
            "url",
            "fingerprint",
            "genesis",
            "signed",
            "signature",
            "json",
            "text",
        )
    ),
    "request": frozenset(
        (
            "label",
            "sender",
            "recipient",
            "time_us",
            "nonce",
            "body_hash",
            "key",
            "method",
            "target",
            "signed",
            "signature",
            "authorization",
            "now_us",
        )
    ),
    "frontier": frozenset(("label", "requester", "digest", "logs", "message")),
    "want": frozenset(("label", "wants", "message")),
    "batch": frozenset(("label", "log", "count", "ids", "message", "frame_header")),
    "export": frozenset(("label", "log", "club_line", "log_line", "event_line_1")),
    "agreement": frozenset(
        (
            "label",
            "proposer",
            "invited",
            "proposal",
            "version",
            "rule",
            "state",
            "agreed_us",
            "step_1",
            "accepted_1",
            "record_bytes",
            "record_sha256",
            "record",
        )
    ),
}
REQUIRED["keyevent"] = frozenset(
    (
        "label",
        "club",
        "log",
        "seq",
        "action",
        "signer",
        "key",
        "revoked",
        "cut_log",
        "cut_first",
        "cut_seq",
        "cut_event",
        "cut_tag",
        "cut_key",
        "cut_entry",
        "signed_header",
        "id",
        "payload_json",
        "payload",
    )
)
OPTIONAL: dict[str, frozenset[str]] = {
    "keyevent": frozenset(),
    "genesis": frozenset(("recovery_seed", "recovery_words", "recovery_key")),
    "log": frozenset(),
    "event": frozenset(),
    "fork": frozenset(),
    "keyfile": frozenset(
        ("version", "passphrase", "n", "r", "p", "salt", "nonce", "ciphertext", "store_key")
    ),
    "invite": frozenset(),
    "request": frozenset(("body",)),
    "frontier": frozenset(("known", "heads")),
    "want": frozenset(),
    "batch": frozenset(),
    "export": frozenset(f"event_line_{i}" for i in range(2, 10)),
    "agreement": frozenset(
        [f"step_{i}" for i in range(2, 10)] + [f"accepted_{i}" for i in range(2, 10)]
    ),
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


# --- parsing (shared with the tests of protocol.md) -------------------------------

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
CLUB_C_SEED = "federation test vector club C"
PASSPHRASE = "correct horse battery staple"
CLUB_A_NAME = "Northside Workers' Club"
CLUB_B_NAME = "Riverside Tenants' Union"
CLUB_A_URL = "https://northside.example:8401"
# Stands in for the DER encoding of club A's TLS certificate: the fingerprint is its sha256.
CERTIFICATE_STAND_IN = b"federation test vector certificate"
FRONTIER_PATH = "/fed/v1/frontier"
EVENTS_PATH = "/fed/v1/events"


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
        # The secret as people keep it: the 24 BIP-39 words of the seed (§2.1).
        words = recovery_words(_key(recovery_seed).secret_bytes())
        fields += [
            ("recovery_seed", recovery_seed),
            ("recovery_words", words),
            ("recovery_key", recovery_key.hex()),
        ]
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


def _log(
    label: str, club: bytes, audience: Audience, name: str | None = None
) -> tuple[bytes, Block]:
    name = name or default_log_name(audience)
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
        *_envelopes(club, salt, derived),
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


def _envelopes(club: _Club, salt: bytes, derived: bytes) -> list[Block]:
    """Version 2, the key envelope: the secret and the store key sealed together (a
    nonce of its own: one key and nonce never seal two plaintexts, even in vectors)."""
    nonce = hashlib.sha256(b"federation test vector envelope nonce").digest()[:12]
    secret = club.key.secret_bytes()
    store_key = hashlib.sha256(b"federation test vector store key").digest()
    ciphertext = chacha20_poly1305_seal(derived, nonce, secret + store_key, club.id)
    sealed = {
        "version": 2,
        "club": club.id.hex(),
        "kdf": "scrypt",
        "n": 2**15,
        "r": 8,
        "p": 1,
        "salt": salt.hex(),
        "nonce": nonce.hex(),
        "ciphertext": ciphertext.hex(),
    }
    plain = {
        "version": 2,
        "club": club.id.hex(),
        "kdf": "none",
        "secret": secret.hex(),
        "store_key": store_key.hex(),
    }
    return [
        Block(
            "keyfile",
            (
                ("label", f"{club.label} key envelope, passphrase"),
                ("version", "2"),
                ("club", club.id.hex()),
                ("kdf", "scrypt"),
                ("passphrase", PASSPHRASE),
                ("n", str(2**15)),
                ("r", "8"),
                ("p", "1"),
                ("salt", salt.hex()),
                ("nonce", nonce.hex()),
                ("ciphertext", ciphertext.hex()),
                ("secret", secret.hex()),
                ("store_key", store_key.hex()),
                ("json", msgspec.json.encode(sealed).decode()),
            ),
        ),
        Block(
            "keyfile",
            (
                ("label", f"{club.label} key envelope, unencrypted"),
                ("version", "2"),
                ("club", club.id.hex()),
                ("kdf", "none"),
                ("secret", secret.hex()),
                ("store_key", store_key.hex()),
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
    blocks += _key_vectors(a, public, first, second)
    blocks += _erasure_vectors(a, logs["private"])
    blocks.append(_agreement(a, b))
    blocks += _sync_vectors(a, b, logs, [first, second])
    return blocks


CLUB_A_KEY_2_SEED = "federation test vector club A key 2"
CLUB_A_KEY_3_SEED = "federation test vector club A key 3"


def _key_vectors(
    a: _Club, public: bytes, first: VerifiedEvent, second: VerifiedEvent
) -> list[Block]:
    """§2.2: club A rotates to key 2 (signed by its genesis key), then revokes key 2
    with its recovery key and continues under key 3. Each cut names club A's public
    log at seq 2; the other seven entries are padding (random bytes in life, sha256 of
    a fixed text here)."""
    log = keys.key_log_id(a.id)
    steps = (
        ("club A key rotate", "rotate", a.key, a.key, _key(CLUB_A_KEY_2_SEED)),
        (
            "club A key revoke",
            "revoke",
            _key(CLUB_A_RECOVERY_SEED),
            _key(CLUB_A_KEY_2_SEED),
            _key(CLUB_A_KEY_3_SEED),
        ),
    )
    blocks: list[Block] = []
    head: Head | None = None
    for n, (label, action, signer, revoked, new) in enumerate(steps, start=1):
        mark = keys.CutMark(public, first.id, second.header.seq, second.id)
        padding = b"".join(
            b"".join(
                canonical.sha256(b"federation test vector padding %d %d %d" % (n, i, j))
                for j in range(3)
            )[: keys.CUT_ENTRY_BYTES]
            for i in range(keys.padding_entries(1))
        )
        cut = keys.seal_cut(n, [mark], padding)
        entry = keys.seal_cut_entry(public, first.id, n, mark.seq, mark.event)
        payload = make_payload(
            Kind.KEY,
            {
                "action": action,
                "key": new.public.hex(),
                "revoked": revoked.public.hex(),
                "cut": [e.hex() for e in cut],
            },
        )
        event = sign_event(
            signer,
            club=a.id,
            log=log,
            head=head,
            time_us=_us(f"2026-03-0{n}T12:00:00+00:00"),
            kind=Kind.KEY,
            payload=payload,
        )
        head = Head(n, event.id)
        cut_key = canonical.sha256(
            canonical.CUT_KEY_TAG + b"\x01" + public + first.id + struct.pack(">Q", n)
        )
        blocks.append(
            Block(
                "keyevent",
                (
                    ("label", label),
                    ("club", a.id.hex()),
                    ("log", log.hex()),
                    ("seq", str(n)),
                    ("action", action),
                    ("signer", signer.public.hex()),
                    ("key", new.public.hex()),
                    ("revoked", revoked.public.hex()),
                    ("cut_log", public.hex()),
                    ("cut_first", first.id.hex()),
                    ("cut_seq", str(mark.seq)),
                    ("cut_event", mark.event.hex()),
                    ("cut_tag", keys.cut_tag(public, first.id, n).hex()),
                    ("cut_key", cut_key.hex()),
                    ("cut_entry", entry.hex()),
                    ("signed_header", event.signed.hex()),
                    ("id", event.id.hex()),
                    ("payload_json", payload.decode()),
                    ("payload", payload.hex()),
                ),
            )
        )
    return blocks


def _erasure_vectors(a: _Club, private: bytes) -> list[Block]:
    """§3.5: a member's report in club A's private log, then the erasure of its payload."""
    report = sign_event(
        a.key,
        club=a.id,
        log=private,
        head=None,
        time_us=_us("2026-01-31T21:00:00+00:00"),
        kind=Kind.REPORT,
        payload=make_payload(
            Kind.REPORT,
            {
                "member": "Dana Okafor",
                "period": "2026-01",
                "text": "Door-knocked 40 flats on Elm Street; 12 signed the petition.",
            },
        ),
    )
    erasure = sign_event(
        a.key,
        club=a.id,
        log=private,
        head=Head(report.header.seq, report.id),
        time_us=_us("2026-02-20T10:00:00+00:00"),
        kind=Kind.ERASURE,
        payload=make_payload(Kind.ERASURE, {"seq": report.header.seq, "event": report.id.hex()}),
    )
    return [
        _event("club A private log seq 1", report),
        _event("club A private log seq 2", erasure),
    ]


def _agreement(a: _Club, b: _Club) -> Block:
    """§3.8: club A proposes to clubs B and C (rule all), B amends, A, B and C accept the
    amended version; the record is what `federation proposal export` writes
    (`views.agreement.make_record`, the function the node's export calls)."""
    c, _ = _genesis("club C", CLUB_C_SEED, None, "2026-01-03T12:00:00+00:00")
    audience = Audience("clubs", tuple(sorted((a.id, b.id, c.id))))
    name = default_log_name(audience)
    descriptors = {}
    for club in (a, b, c):
        descriptor = descriptor_bytes(club.id, name, audience)
        descriptors[canonical.log_id(descriptor)] = descriptor
    heads: dict[bytes, Head] = {}
    signed: list[VerifiedEvent] = []

    def step(club: _Club, time: str, fields: dict[str, object]) -> VerifiedEvent:
        log = canonical.log_id(descriptor_bytes(club.id, name, audience))
        event = sign_event(
            club.key,
            club=club.id,
            log=log,
            head=heads.get(club.id),
            time_us=_us(time),
            kind=Kind.PROPOSAL,
            payload=make_payload(Kind.PROPOSAL, fields),
        )
        heads[club.id] = Head(event.header.seq, event.id)
        signed.append(event)
        return event

    invited = sorted(x.id.hex() for x in (b, c))
    deadline = dt.datetime(2026, 3, 20, 18, 0, tzinfo=dt.UTC)
    action = {"what": "Rent strike march", "where": "Town hall steps"}
    first = step(
        a,
        "2026-03-02T10:00:00+00:00",
        {
            "op": "proposed",
            "title": "Rent strike bloc at the March 28 march",
            "aims": "A joint bloc of tenants and workers for rent control.",
            "asks": {"*": "a bloc of ten with banners"},
            "actions": [{**action, "starts": "2026-03-28T12:00:00+00:00"}],
            "rule": "all",
            "deadline": deadline,
            "invited": invited,
        },
    )
    pid = first.id.hex()
    amended = step(
        b,
        "2026-03-03T09:00:00+00:00",
        {
            "op": "proposed",
            "proposal": pid,
            "amends": pid,
            "title": "Rent strike bloc and stall at the March 28 march",
            "aims": "A joint bloc of tenants and workers for rent control.",
            "asks": {"*": "a bloc of ten with banners", c.id.hex(): "the leaflet stall"},
            "actions": [{**action, "starts": "2026-03-28T11:00:00+00:00"}],
            "rule": "all",
            "deadline": deadline,
            "invited": invited,
        },
    )
    version = amended.id.hex()
    for club, time, commitment in (
        (b, "2026-03-03T09:05:00+00:00", "ten members with banners"),
        (a, "2026-03-04T18:00:00+00:00", "the sound system and twenty stewards"),
        (c, "2026-03-05T12:00:00+00:00", "the leaflet stall and eight members"),
    ):
        step(
            club,
            time,
            {"op": "accepted", "proposal": pid, "version": version, "commitment": commitment},
        )

    steps = [
        proposals.Step(
            e.id,
            e.header.club,
            e.header.log,
            e.header.seq,
            e.header.time_us,
            audience.clubs,
            e.payload,
        )
        for e in signed
    ]
    (outcome,), _ = proposals.fold(steps, now_us=0)
    assert outcome.state == "agreed"
    assert outcome.version.id == version
    genesis = {x.id: x.genesis for x in (a, b, c)}
    record = agreement.make_record(outcome, signed, genesis, descriptors)
    assert outcome.agreed_us is not None
    fields: list[tuple[str, str]] = [
        ("label", "agreement record: club A proposes to clubs B and C, B amends, all accept"),
        ("proposer", a.id.hex()),
        ("invited", " ".join(invited)),
        ("proposal", pid),
        ("version", version),
        ("rule", outcome.rule),
        ("state", outcome.state),
        ("agreed_us", str(outcome.agreed_us)),
    ]
    for i, e in enumerate(signed, start=1):
        assert e.payload is not None
        fields.append((f"step_{i}", f"{e.id.hex()} {e.payload.decode()}"))
    for i, (club_hex, answer) in enumerate(sorted(outcome.accepted.items()), start=1):
        fields.append(
            (f"accepted_{i}", f"{club_hex} {answer.version} {answer.event} {answer.text}")
        )
    fields += [
        ("record_bytes", str(len(record))),
        ("record_sha256", hashlib.sha256(record).hexdigest()),
        ("record", record.decode()),
    ]
    return Block("agreement", tuple(fields))


def _heads_text(heads: Sequence[messages.LogHead]) -> str:
    return " ".join(f"{h.log.hex()}:{h.seq}:{h.head.hex()}" for h in heads)


def _sync_vectors(
    a: _Club, b: _Club, logs: dict[str, bytes], public_events: list[VerifiedEvent]
) -> list[Block]:
    """The vectors of protocol.md §5-§8: club A's roster and federation logs, an invite,
    the messages of club B's first round with club A, its request tokens, an export."""
    roster, roster_block = _log("club A roster log", a.id, Audience("federation"), ROSTER_LOG_NAME)
    added = sign_event(
        a.key,
        club=a.id,
        log=roster,
        head=None,
        time_us=_us("2026-01-05T19:00:00+00:00"),
        kind=Kind.ROSTER,
        payload=make_payload(Kind.ROSTER, {"op": "added", "club": b.id.hex(), "name": CLUB_B_NAME}),
    )
    bloc = sign_event(
        a.key,
        club=a.id,
        log=logs["federation"],
        head=None,
        time_us=_us("2026-01-14T08:00:00+00:00"),
        kind=Kind.NOTE,
        payload=make_payload(
            Kind.NOTE, {"text": "Bloc meets at 6:15 by the north gate; bring the union banner."}
        ),
    )
    blocks = [
        roster_block,
        _event("club A roster log seq 1", added),
        _event("club A federation log seq 1", bloc),
        _invite(a),
    ]

    # What club A holds, and what each requester may receive of it (§5.4): club B is in
    # A's roster, so it sees the federation audience; an unauthenticated reader does not.
    held = {e.header.log: e for e in (added, bloc, public_events[-1])}
    views = {
        "club B": (b.id, [roster, logs["federation"], logs["public"]]),
        "an unauthenticated requester": (None, [logs["public"]]),
    }
    digests: dict[str, bytes] = {}
    heads_for: dict[str, list[messages.LogHead]] = {}
    for who, (requester, visible) in views.items():
        digest, heads = serve.frontier(
            (log, Head(held[log].header.seq, held[log].id)) for log in visible
        )
        digests[who], heads_for[who] = digest, heads
        blocks.append(
            Block(
                "frontier",
                (
                    ("label", f"club A's frontier for {who}"),
                    ("requester", requester.hex() if requester else "none"),
                    ("digest", digest.hex()),
                    ("logs", str(len(heads))),
                    ("heads", _heads_text(heads)),
                    ("message", messages.encode(Frontier(digest, heads)).hex()),
                ),
            )
        )
    unchanged = Frontier(digests["club B"], None)
    blocks.append(
        Block(
            "frontier",
            (
                ("label", "club A's frontier for club B, unchanged"),
                ("requester", b.id.hex()),
                ("known", digests["club B"].hex()),
                ("digest", digests["club B"].hex()),
                ("logs", "nil"),
                ("message", messages.encode(unchanged).hex()),
            ),
        )
    )

    # Club B holds none of these logs: it wants each from the start, descriptor first.
    want = Want([WantLog(h.log, 0, 0, True) for h in heads_for["club B"]])
    want_bytes = messages.encode(want)
    blocks.append(
        Block(
            "want",
            (
                ("label", "club B wants club A's logs"),
                (
                    "wants",
                    " ".join(
                        f"{w.log.hex()}:{w.after}:{w.limit}:{str(w.descriptor).lower()}"
                        for w in want.logs
                    ),
                ),
                ("message", want_bytes.hex()),
            ),
        )
    )
    batch = Batch(logs["public"], [(e.signed, e.payload) for e in public_events])
    blocks.append(
        Block(
            "batch",
            (
                ("label", "club A's public log, seq 1-2"),
                ("log", logs["public"].hex()),
                ("count", str(len(public_events))),
                ("ids", " ".join(e.id.hex() for e in public_events)),
                ("message", messages.encode(batch).hex()),
                ("frame_header", messages.frame(batch)[:4].hex()),
            ),
        )
    )

    # Club B's requests to club A: the want above, then a long-poll on the frontier.
    query = urlencode({"known": digests["club B"].hex(), "wait": "25"})
    blocks += [
        _request(
            "club B asks club A for events",
            b,
            a.id,
            "POST",
            EVENTS_PATH,
            want_bytes,
            "2026-02-01T12:00:00+00:00",
            "federation test vector request nonce 1",
        ),
        _request(
            "club B long-polls club A's frontier",
            b,
            a.id,
            "GET",
            f"{FRONTIER_PATH}?{query}",
            b"",
            "2026-02-01T12:00:01+00:00",
            "federation test vector request nonce 2",
        ),
        _export(a, logs["public"], public_events),
    ]
    return blocks


def _invite(club: _Club) -> Block:
    fingerprint = hashlib.sha256(CERTIFICATE_STAND_IN).digest()
    signed = canonical.encode_invite(club.id, CLUB_A_NAME, CLUB_A_URL, fingerprint)
    signature = club.key.sign(signed)
    body = {
        "genesis": club.genesis.hex(),
        "name": CLUB_A_NAME,
        "url": CLUB_A_URL,
        "fingerprint": fingerprint.hex(),
        "signature": signature.hex(),
    }
    raw = msgspec.json.encode(body)
    text = "fedinvite1:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return Block(
        "invite",
        (
            ("label", f"{club.label} invite"),
            ("club", club.id.hex()),
            ("name", CLUB_A_NAME),
            ("url", CLUB_A_URL),
            ("fingerprint", fingerprint.hex()),
            ("genesis", club.genesis.hex()),
            ("signed", signed.hex()),
            ("signature", signature.hex()),
            ("json", raw.decode()),
            ("text", text),
        ),
    )


def _request(
    label: str,
    sender: _Club,
    recipient: bytes,
    method: str,
    target: str,
    body: bytes,
    time: str,
    nonce_seed: str,
) -> Block:
    time_us = _us(time)
    token = canonical.RequestToken(
        sender=sender.id,
        recipient=recipient,
        time_us=time_us,
        nonce=hashlib.sha256(nonce_seed.encode()).digest()[: canonical.REQUEST_NONCE_BYTES],
        body_hash=canonical.sha256(body),
        key=sender.key.public,
        method=method,
        target=target,
    )
    signed = canonical.encode_request(token)
    signature = sender.key.sign(signed)
    authorization = "Federation " + base64.urlsafe_b64encode(signed + signature).decode()
    fields: list[tuple[str, str]] = [
        ("label", label),
        ("sender", token.sender.hex()),
        ("recipient", token.recipient.hex()),
        ("time_us", str(time_us)),
        ("nonce", token.nonce.hex()),
        ("body_hash", token.body_hash.hex()),
        ("key", token.key.hex()),
        ("method", method),
        ("target", target),
    ]
    if body:
        fields.append(("body", body.hex()))
    fields += [
        ("signed", signed.hex()),
        ("signature", signature.hex()),
        ("authorization", authorization),
        # The recipient's clock when it checks the token: 3 s ahead of the sender's.
        ("now_us", str(time_us + 3_000_000)),
    ]
    return Block("request", tuple(fields))


def _export(club: _Club, log: bytes, events: list[VerifiedEvent]) -> Block:
    """The JSON lines of §8 for one log, written independently of federation.node.archive."""
    audience = Audience("public")
    descriptor = descriptor_bytes(club.id, default_log_name(audience), audience)
    lines: list[tuple[str, str]] = [
        ("label", f"{club.label} public log export"),
        ("log", log.hex()),
        (
            "club_line",
            msgspec.json.encode(
                {"type": "club", "id": club.id.hex(), "genesis": club.genesis.hex()}
            ).decode(),
        ),
        (
            "log_line",
            msgspec.json.encode(
                {
                    "type": "log",
                    "id": log.hex(),
                    "descriptor": descriptor.hex(),
                    "name": default_log_name(audience),
                    "audience": format_audience(audience),
                }
            ).decode(),
        ),
    ]
    for i, event in enumerate(events, start=1):
        assert event.payload is not None
        line = {
            "type": "event",
            "log": log.hex(),
            "seq": event.header.seq,
            "id": event.id.hex(),
            "signed": event.signed.hex(),
            "payload": base64.b64encode(event.payload).decode(),
        }
        lines.append((f"event_line_{i}", msgspec.json.encode(line).decode()))
    return Block("export", tuple(lines))


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
