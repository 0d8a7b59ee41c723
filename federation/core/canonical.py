"""Canonical bytes: the only module that turns signed structures into bytes and back.

Every signed or hashed structure has one fixed binary layout (protocol.md §3), and
each starts with a 16-byte protocol tag and a version byte, so a signature or hash
made for one purpose can never be taken for another (DESIGN principle 4). Nothing
is ever re-serialised to be verified: we hash and check the exact bytes we hold.

Layouts are big-endian. Identifiers are raw 32-byte values; the hex forms used by
people live in `ids`.
"""

from __future__ import annotations

import hashlib
import struct
from enum import IntEnum
from typing import Literal

import msgspec

from federation.core.crypto import is_weak_public_key
from federation.errors import InvalidEventError

VERSION = 1
HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)

EVENT_TAG = b"federation/event"
CLUB_TAG = b"federation/club\x00"
LOG_TAG = b"federation/log\x00\x00"
REQUEST_TAG = b"federation/reqst"
INVITE_TAG = b"federation/invit"
# A key event's sealed cut entries (protocol.md §2.2): the tag that finds an entry and
# the key that opens it, each derived from a log's id and first event, so only a
# holder of that log can find or read its entry.
CUT_ID_TAG = b"federation/cutid"
CUT_KEY_TAG = b"federation/cutky"
assert all(
    len(t) == 16
    for t in (EVENT_TAG, CLUB_TAG, LOG_TAG, REQUEST_TAG, INVITE_TAG, CUT_ID_TAG, CUT_KEY_TAG)
)

# A payload larger than this is refused before it is hashed or stored: a monthly
# report or a campaign text is a few KiB; 64 KiB bounds the memory of one batch.
MAX_PAYLOAD_BYTES = 64 * 1024
# A log name is shown to people and chosen by them; 64 bytes is plenty and bounded.
MAX_LOG_NAME_BYTES = 64
# A named audience is "the clubs of one campaign": tens, not thousands.
MAX_AUDIENCE_CLUBS = 256


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Kind(IntEnum):
    """Event kinds (protocol.md §3.2). Codes are stable; new kinds take new codes."""

    NOTE = 1
    ACTION = 2
    REPORT = 3
    CAMPAIGN = 4
    # A change to the club's federation roster (protocol.md §3.2, §5.4); only counts
    # in the club's log named "roster" with audience "federation".
    ROSTER = 5
    # The origin erases the payload of an earlier event of the same log, on every
    # node that holds it (protocol.md §3.5). Never of a roster event or an erasure.
    ERASURE = 6
    # A step of a joint campaign proposal between clubs: a version, an answer, a
    # withdrawal, or a participant's feed choice (protocol.md §3.7). Travels in a log
    # whose audience names exactly the proposer and the invited clubs.
    PROPOSAL = 7
    # A hand-over of the club's signing key: a rotation signed by the key in force, or
    # a revocation signed by the recovery key, each with the cut that ends the old
    # key's window (protocol.md §2.2). Counts only in the club's log named "keys" with
    # audience "public".
    KEY = 8


# --- event header (protocol.md §3.1) -------------------------------------------------

_HEADER = struct.Struct(">16sB32s32sQ32sqH32sI32s")
HEADER_STRUCT = _HEADER  # for the ingest hot path (events.verify_run), read-only
HEADER_BYTES = _HEADER.size  # 199
# Where `prev` starts: after tag, version, club, log and seq. The store finds an event
# by id in its successor's `prev`, so it keeps no id of its own.
PREV_OFFSET = struct.calcsize(">16sB32s32sQ")  # 89
# Where `kind` starts (2 bytes): the store finds erasure events in a run by it.
KIND_OFFSET = struct.calcsize(">16sB32s32sQ32sq")  # 129
# Where `payload_size` starts (4 bytes, big-endian): the store finds empty payloads by it.
PAYLOAD_SIZE_OFFSET = struct.calcsize(">16sB32s32sQ32sqH32s")  # 163
SIGNATURE_BYTES = 64
SIGNED_HEADER_BYTES = HEADER_BYTES + SIGNATURE_BYTES  # 263


class Header(msgspec.Struct, frozen=True, gc=False):
    """The signed part of an event. `time_us` is a claim (microseconds since the epoch)."""

    club: bytes
    log: bytes
    seq: int
    prev: bytes
    time_us: int
    kind: int
    payload_hash: bytes
    payload_size: int
    key: bytes


def _check_sizes(what: str, **fields: bytes) -> None:
    # struct's "32s" pads or clips silently: the bytes would then differ from the value.
    for name, value in fields.items():
        if len(value) != HASH_BYTES:
            raise InvalidEventError(
                f"{what} field {name} must be {HASH_BYTES} bytes, got {len(value)}"
            )


def encode_header(h: Header) -> bytes:
    _check_sizes(
        "header", club=h.club, log=h.log, prev=h.prev, payload_hash=h.payload_hash, key=h.key
    )
    try:
        return _HEADER.pack(
            EVENT_TAG,
            VERSION,
            h.club,
            h.log,
            h.seq,
            h.prev,
            h.time_us,
            h.kind,
            h.payload_hash,
            h.payload_size,
            h.key,
        )
    except struct.error as exc:
        raise InvalidEventError(f"header field out of range: {exc}") from exc


def decode_header(signed: bytes) -> Header:
    """Decode the header part of a signed header (header + signature), checking sizes."""
    if len(signed) != SIGNED_HEADER_BYTES:
        raise InvalidEventError(
            f"signed header is {len(signed)} bytes, expected {SIGNED_HEADER_BYTES}"
        )
    tag, version, club, log, seq, prev, time_us, kind, phash, psize, key = _HEADER.unpack_from(
        signed
    )
    if tag != EVENT_TAG:
        raise InvalidEventError("not an event: wrong protocol tag")
    if version != VERSION:
        raise InvalidEventError(f"unsupported event version {version} (this node speaks 1)")
    return Header(club, log, seq, prev, time_us, kind, phash, psize, key)


def header_bytes(signed: bytes) -> bytes:
    """The bytes a signature covers: the header without its signature."""
    return signed[:HEADER_BYTES]


def signature_of(signed: bytes) -> bytes:
    return signed[HEADER_BYTES:]


def event_id(signed: bytes) -> bytes:
    """An event's hash: sha256 over header and signature, so the chain commits to both."""
    return sha256(signed)


# --- club genesis (protocol.md §2.1) -------------------------------------------------

_GENESIS = struct.Struct(">16sB32s32sq")
GENESIS_BYTES = _GENESIS.size


class Genesis(msgspec.Struct, frozen=True):
    """What a club id commits to: its first signing key and (hashed) recovery key.

    The club id is sha256(genesis). It never changes, while the signing key can be
    rotated, and revoked with the recovery key after a seizure (a later protocol
    version; protocol.md §2.2 reserves it).
    """

    key: bytes
    recovery: bytes
    time_us: int


def encode_genesis(g: Genesis) -> bytes:
    _check_sizes("genesis", key=g.key, recovery=g.recovery)
    try:
        return _GENESIS.pack(CLUB_TAG, VERSION, g.key, g.recovery, g.time_us)
    except struct.error as exc:
        raise InvalidEventError(f"genesis field out of range: {exc}") from exc


def decode_genesis(data: bytes) -> Genesis:
    if len(data) != GENESIS_BYTES:
        raise InvalidEventError(f"club genesis is {len(data)} bytes, expected {GENESIS_BYTES}")
    tag, version, key, recovery, time_us = _GENESIS.unpack(data)
    if tag != CLUB_TAG or version != VERSION:
        raise InvalidEventError("not a club genesis: wrong protocol tag or version")
    if is_weak_public_key(key):
        raise InvalidEventError("club genesis names a weak (small-order) key: refused")
    return Genesis(key, recovery, time_us)


def club_id(genesis: bytes) -> bytes:
    return sha256(genesis)


# --- log descriptors (protocol.md §3.3) ---------------------------------------------

AudienceKind = Literal["private", "federation", "public", "clubs"]
_AUDIENCE_CODES: dict[str, int] = {"private": 0, "federation": 1, "public": 2, "clubs": 3}
_AUDIENCE_NAMES = {v: k for k, v in _AUDIENCE_CODES.items()}


class Audience(msgspec.Struct, frozen=True):
    """Who may receive a log. `clubs` is set (sorted, distinct) only for kind "clubs"."""

    kind: AudienceKind
    clubs: tuple[bytes, ...] = ()


class LogDescriptor(msgspec.Struct, frozen=True):
    """A log's fixed identity: its club, a name, and its one audience."""

    club: bytes
    name: str
    audience: Audience


def encode_log(d: LogDescriptor) -> bytes:
    _check_sizes("log descriptor", club=d.club)
    try:
        name = d.name.encode()
    except UnicodeEncodeError:
        raise InvalidEventError(f"log name must be 1-{MAX_LOG_NAME_BYTES} bytes of UTF-8") from None
    if not 0 < len(name) <= MAX_LOG_NAME_BYTES:
        raise InvalidEventError(f"log name must be 1-{MAX_LOG_NAME_BYTES} bytes of UTF-8")
    clubs = d.audience.clubs
    if d.audience.kind == "clubs":
        if not 0 < len(clubs) <= MAX_AUDIENCE_CLUBS:
            raise InvalidEventError(f"a named audience lists 1-{MAX_AUDIENCE_CLUBS} clubs")
        if list(clubs) != sorted(set(clubs)) or any(len(c) != HASH_BYTES for c in clubs):
            raise InvalidEventError("a named audience lists distinct 32-byte club ids, sorted")
    elif clubs:
        raise InvalidEventError(f"audience {d.audience.kind!r} takes no club list")
    return b"".join(
        (
            LOG_TAG,
            bytes([VERSION]),
            d.club,
            bytes([len(name)]),
            name,
            bytes([_AUDIENCE_CODES[d.audience.kind]]),
            struct.pack(">H", len(clubs)),
            *clubs,
        )
    )


def decode_log(data: bytes) -> LogDescriptor:
    def fail(why: str) -> InvalidEventError:
        return InvalidEventError(f"malformed log descriptor: {why}")

    if len(data) < 16 + 1 + 32 + 1 or data[:16] != LOG_TAG or data[16] != VERSION:
        raise fail("wrong tag, version or length")
    club = data[17:49]
    n = data[49]
    name_end = 50 + n
    if len(data) < name_end + 3:
        raise fail("truncated")
    try:
        name = data[50:name_end].decode()
    except UnicodeDecodeError:
        raise fail("name is not UTF-8") from None
    code = data[name_end]
    if code not in _AUDIENCE_NAMES:
        raise fail(f"unknown audience code {code}")
    (count,) = struct.unpack_from(">H", data, name_end + 1)
    start = name_end + 3
    if len(data) != start + 32 * count:
        raise fail("club list length does not match its count")
    clubs = tuple(data[start + 32 * i : start + 32 * (i + 1)] for i in range(count))
    kind: AudienceKind = _AUDIENCE_NAMES[code]  # type: ignore[assignment]
    descriptor = LogDescriptor(club, name, Audience(kind, clubs))
    if encode_log(descriptor) != data:  # one encoding only: rejects every non-canonical form
        raise fail("not in canonical form")
    return descriptor


def log_id(descriptor: bytes) -> bytes:
    """A log id is the hash of its descriptor: it commits to the log's one audience."""
    return sha256(descriptor)


# --- request tokens (protocol.md §5.2) ------------------------------------------------

_REQUEST = struct.Struct(">16sB32s32sq16s32s32s")
MAX_REQUEST_TARGET_BYTES = 2048
REQUEST_NONCE_BYTES = 16


class RequestToken(msgspec.Struct, frozen=True):
    """What a node signs to authenticate one HTTP request to one peer.

    It binds the sender, the recipient, the time, a random nonce, the body's sha256,
    the signing key, the method and the exact target (path and query), so it cannot
    be replayed to another peer, path or body, or later than the clock window.
    """

    sender: bytes
    recipient: bytes
    time_us: int
    nonce: bytes
    body_hash: bytes
    key: bytes
    method: str
    target: str


def encode_request(t: RequestToken) -> bytes:
    """The bytes a request signature covers."""
    method, target = t.method.encode(), t.target.encode()
    if not 0 < len(method) <= 16 or not 0 < len(target) <= MAX_REQUEST_TARGET_BYTES:
        raise InvalidEventError("request method or target out of range")
    _check_sizes(
        "request", sender=t.sender, recipient=t.recipient, body_hash=t.body_hash, key=t.key
    )
    if len(t.nonce) != REQUEST_NONCE_BYTES:
        raise InvalidEventError(f"request nonce must be {REQUEST_NONCE_BYTES} bytes")
    try:
        fixed = _REQUEST.pack(
            REQUEST_TAG,
            VERSION,
            t.sender,
            t.recipient,
            t.time_us,
            t.nonce,
            t.body_hash,
            t.key,
        )
    except struct.error as exc:
        raise InvalidEventError(f"request field out of range: {exc}") from None
    return fixed + bytes([len(method)]) + method + struct.pack(">H", len(target)) + target


def decode_request(data: bytes) -> tuple[RequestToken, bytes, bytes]:
    """Split a token into (fields, signed bytes, signature); raises on any malformation."""
    fixed = _REQUEST.size
    if len(data) < fixed + 1 + 2 + SIGNATURE_BYTES:
        raise InvalidEventError("request token too short")
    tag, version, sender, recipient, time_us, nonce, body_hash, key = _REQUEST.unpack_from(data)
    if tag != REQUEST_TAG or version != VERSION:
        raise InvalidEventError("not a request token: wrong tag or version")
    m = data[fixed]
    if len(data) < fixed + 1 + m + 2 + SIGNATURE_BYTES:
        raise InvalidEventError("request token length does not match its fields")
    (n,) = struct.unpack_from(">H", data, fixed + 1 + m)
    end = fixed + 1 + m + 2 + n
    if len(data) != end + SIGNATURE_BYTES:
        raise InvalidEventError("request token length does not match its fields")
    try:
        method = data[fixed + 1 : fixed + 1 + m].decode("ascii")
        target = data[fixed + 3 + m : end].decode()
    except UnicodeDecodeError:
        raise InvalidEventError("request token method or target is not text") from None
    token = RequestToken(sender, recipient, time_us, nonce, body_hash, key, method, target)
    return token, data[:end], data[end:]


# --- invites (protocol.md §5.1) --------------------------------------------------------

MAX_INVITE_URL_BYTES = 512


def encode_invite(club: bytes, name: str, url: str, fingerprint: bytes) -> bytes:
    """The bytes an invite's signature covers: who, where, and which certificate."""
    _check_sizes("invite", club=club)
    name_b, url_b = name.encode(), url.encode()
    if len(name_b) > 255 or len(url_b) > MAX_INVITE_URL_BYTES or len(fingerprint) not in (0, 32):
        raise InvalidEventError("invite name, url or fingerprint out of range")
    return b"".join(
        (
            INVITE_TAG,
            bytes([VERSION]),
            club,
            bytes([len(name_b)]),
            name_b,
            struct.pack(">H", len(url_b)),
            url_b,
            bytes([len(fingerprint)]),
            fingerprint,
        )
    )
