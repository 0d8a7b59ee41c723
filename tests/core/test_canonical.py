"""Canonical bytes (protocol.md §2.1, §3.1, §3.3): round trips, sizes, one encoding only."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from federation.core import canonical
from federation.core.canonical import (
    CLUB_TAG,
    EVENT_TAG,
    GENESIS_BYTES,
    HEADER_BYTES,
    LOG_TAG,
    MAX_AUDIENCE_CLUBS,
    MAX_LOG_NAME_BYTES,
    SIGNATURE_BYTES,
    SIGNED_HEADER_BYTES,
    VERSION,
    Audience,
    Genesis,
    Header,
    LogDescriptor,
)
from federation.core.crypto import WEAK_PUBLIC_KEYS, is_weak_public_key
from federation.errors import InvalidEventError

hash32 = st.binary(min_size=32, max_size=32)

headers = st.builds(
    Header,
    club=hash32,
    log=hash32,
    seq=st.integers(0, 2**64 - 1),
    prev=hash32,
    time_us=st.integers(-(2**63), 2**63 - 1),
    kind=st.integers(0, 2**16 - 1),
    payload_hash=hash32,
    payload_size=st.integers(0, 2**32 - 1),
    key=hash32,
)
signatures = st.binary(min_size=SIGNATURE_BYTES, max_size=SIGNATURE_BYTES)
geneses = st.builds(Genesis, key=hash32, recovery=hash32, time_us=st.integers(-(2**63), 2**63 - 1))

log_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=MAX_LOG_NAME_BYTES).filter(
    lambda s: len(s.encode()) <= MAX_LOG_NAME_BYTES
)
audiences = st.one_of(
    st.sampled_from([Audience("private"), Audience("federation"), Audience("public")]),
    st.lists(hash32, min_size=1, max_size=8, unique=True).map(
        lambda clubs: Audience("clubs", tuple(sorted(clubs)))
    ),
)
descriptors = st.builds(LogDescriptor, club=hash32, name=log_names, audience=audiences)


def sample_header(**changes: object) -> Header:
    fields: dict[str, object] = {
        "club": b"c" * 32,
        "log": b"l" * 32,
        "seq": 7,
        "prev": b"p" * 32,
        "time_us": 1_767_225_600_000_000,
        "kind": 1,
        "payload_hash": b"h" * 32,
        "payload_size": 12,
        "key": b"k" * 32,
    }
    fields.update(changes)
    return Header(**fields)  # type: ignore[arg-type]


def raw_log(
    *,
    club: bytes = b"c" * 32,
    name: bytes = b"campaign",
    code: int = 3,
    clubs: tuple[bytes, ...] = (b"a" * 32,),
    count: int | None = None,
    tag: bytes = LOG_TAG,
    version: int = VERSION,
    name_length: int | None = None,
) -> bytes:
    """Descriptor bytes laid out by hand, so that non-canonical forms can be made."""
    return b"".join(
        (
            tag,
            bytes([version]),
            club,
            bytes([len(name) if name_length is None else name_length]),
            name,
            bytes([code]),
            struct.pack(">H", len(clubs) if count is None else count),
            *clubs,
        )
    )


# --- sizes --------------------------------------------------------------------------


def test_sizes() -> None:
    assert HEADER_BYTES == 16 + 1 + 32 + 32 + 8 + 32 + 8 + 2 + 32 + 4 + 32 == 199
    assert SIGNED_HEADER_BYTES == HEADER_BYTES + SIGNATURE_BYTES == 263
    assert GENESIS_BYTES == 16 + 1 + 32 + 32 + 8 == 89
    assert all(len(t) == 16 for t in (EVENT_TAG, CLUB_TAG, LOG_TAG, canonical.REQUEST_TAG))
    assert len({EVENT_TAG, CLUB_TAG, LOG_TAG, canonical.REQUEST_TAG}) == 4


# --- event headers ------------------------------------------------------------------


@given(headers, signatures)
def test_header_round_trip(header: Header, signature: bytes) -> None:
    encoded = canonical.encode_header(header)
    assert len(encoded) == HEADER_BYTES
    assert encoded[:16] == EVENT_TAG
    assert encoded[16] == VERSION
    signed = encoded + signature
    assert canonical.decode_header(signed) == header
    assert canonical.header_bytes(signed) == encoded
    assert canonical.signature_of(signed) == signature
    assert canonical.event_id(signed) == canonical.sha256(signed)


@pytest.mark.parametrize(
    "length", [0, HEADER_BYTES, SIGNED_HEADER_BYTES - 1, SIGNED_HEADER_BYTES + 1]
)
def test_header_of_wrong_size_is_rejected(length: int) -> None:
    signed = (canonical.encode_header(sample_header()) + bytes(SIGNATURE_BYTES) + b"x")[:length]
    with pytest.raises(InvalidEventError, match=f"{length} bytes, expected 263"):
        canonical.decode_header(signed)


def test_header_with_wrong_tag_is_rejected() -> None:
    signed = canonical.encode_header(sample_header()) + bytes(SIGNATURE_BYTES)
    for tag in (CLUB_TAG, LOG_TAG, canonical.REQUEST_TAG, b"federation/evenu"):
        with pytest.raises(InvalidEventError, match="wrong protocol tag"):
            canonical.decode_header(tag + signed[16:])


@pytest.mark.parametrize("version", [0, 2, 255])
def test_header_with_wrong_version_is_rejected(version: int) -> None:
    signed = canonical.encode_header(sample_header()) + bytes(SIGNATURE_BYTES)
    with pytest.raises(InvalidEventError, match=f"unsupported event version {version}"):
        canonical.decode_header(signed[:16] + bytes([version]) + signed[17:])


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": -1},
        {"seq": 2**64},
        {"kind": 2**16},
        {"payload_size": -1},
        {"payload_size": 2**32},
        {"time_us": 2**63},
        {"club": b"c" * 31},
        {"log": b"l" * 33},
        {"prev": b""},
        {"payload_hash": b"h" * 31},
        {"key": b"k" * 33},
    ],
)
def test_header_out_of_range_is_refused(changes: dict[str, object]) -> None:
    # A field that does not fit its slot must not be silently clipped or padded:
    # the signed bytes would then say something other than the Header in hand.
    with pytest.raises(InvalidEventError, match="header field"):
        canonical.encode_header(sample_header(**changes))


# --- club genesis -------------------------------------------------------------------


@given(geneses)
def test_genesis_round_trip(genesis: Genesis) -> None:
    assume(not is_weak_public_key(genesis.key))
    encoded = canonical.encode_genesis(genesis)
    assert len(encoded) == GENESIS_BYTES
    assert encoded[:17] == CLUB_TAG + bytes([VERSION])
    assert canonical.decode_genesis(encoded) == genesis
    assert canonical.club_id(encoded) == canonical.sha256(encoded)


@pytest.mark.parametrize("weak", sorted(WEAK_PUBLIC_KEYS))
def test_genesis_with_a_small_order_key_is_refused(weak: bytes) -> None:
    # With such a key "R = identity, S = 0" verifies for any message (protocol.md §2.1).
    encoded = canonical.encode_genesis(Genesis(weak, bytes(32), 0))
    with pytest.raises(InvalidEventError, match="weak"):
        canonical.decode_genesis(encoded)


def test_genesis_of_wrong_size_is_rejected() -> None:
    encoded = canonical.encode_genesis(Genesis(b"k" * 32, b"r" * 32, 0))
    for data in (encoded[:-1], encoded + b"\x00", b""):
        with pytest.raises(InvalidEventError, match="expected 89"):
            canonical.decode_genesis(data)


def test_genesis_with_wrong_tag_or_version_is_rejected() -> None:
    encoded = canonical.encode_genesis(Genesis(b"k" * 32, b"r" * 32, 0))
    for data in (EVENT_TAG + encoded[16:], encoded[:16] + b"\x02" + encoded[17:]):
        with pytest.raises(InvalidEventError, match="not a club genesis"):
            canonical.decode_genesis(data)


@pytest.mark.parametrize(
    ("key", "recovery", "time_us"),
    [(b"k" * 31, b"r" * 32, 0), (b"k" * 32, b"r" * 33, 0), (b"k" * 32, b"r" * 32, 2**63)],
)
def test_genesis_out_of_range_is_refused(key: bytes, recovery: bytes, time_us: int) -> None:
    with pytest.raises(InvalidEventError, match="genesis field"):
        canonical.encode_genesis(Genesis(key, recovery, time_us))


# --- log descriptors ----------------------------------------------------------------


@given(descriptors)
def test_log_descriptor_round_trip(descriptor: LogDescriptor) -> None:
    encoded = canonical.encode_log(descriptor)
    clubs = len(descriptor.audience.clubs)
    assert len(encoded) == 16 + 1 + 32 + 1 + len(descriptor.name.encode()) + 1 + 2 + 32 * clubs
    assert canonical.decode_log(encoded) == descriptor
    assert canonical.log_id(encoded) == canonical.sha256(encoded)


@given(descriptors, st.data())
def test_log_descriptor_has_one_encoding(descriptor: LogDescriptor, data: st.DataObject) -> None:
    """Any change to valid bytes is either refused or decodes to something that encodes to it."""
    encoded = bytearray(canonical.encode_log(descriptor))
    i = data.draw(st.integers(0, len(encoded) - 1), label="index")
    change = data.draw(st.sampled_from(["flip", "delete", "insert"]), label="change")
    if change == "flip":
        encoded[i] ^= data.draw(st.integers(1, 255), label="mask")
    elif change == "delete":
        del encoded[i]
    else:
        encoded.insert(i, data.draw(st.integers(0, 255), label="byte"))
    mutated = bytes(encoded)
    try:
        decoded = canonical.decode_log(mutated)
    except InvalidEventError:
        return
    assert canonical.encode_log(decoded) == mutated


def test_audience_names_and_codes() -> None:
    for code, kind in enumerate(["private", "federation", "public"]):
        decoded = canonical.decode_log(raw_log(code=code, clubs=()))
        assert decoded.audience == Audience(kind)  # type: ignore[arg-type]
    decoded = canonical.decode_log(raw_log(clubs=(b"a" * 32, b"b" * 32)))
    assert decoded.audience == Audience("clubs", (b"a" * 32, b"b" * 32))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (raw_log(tag=EVENT_TAG), "wrong tag"),
        (raw_log(version=2), "wrong tag, version"),
        (raw_log()[:49], "wrong tag, version or length"),
        (raw_log()[:60], "truncated"),
        (raw_log(name=b"\xff\xfe"), "not UTF-8"),
        (raw_log(code=4), "unknown audience code 4"),
        (raw_log() + b"\x00", "does not match its count"),
        (raw_log()[:-1], "does not match its count"),
        (raw_log(count=2), "does not match its count"),
        # well-formed but not canonical: every one of these would give a second log id
        (raw_log(clubs=(b"b" * 32, b"a" * 32)), "distinct 32-byte club ids, sorted"),
        (raw_log(clubs=(b"a" * 32, b"a" * 32)), "distinct 32-byte club ids, sorted"),
        (raw_log(clubs=()), "lists 1-256 clubs"),
        (raw_log(code=2), "takes no club list"),
        (raw_log(code=0, clubs=(b"a" * 32,)), "takes no club list"),
        (raw_log(name=b""), "log name must be"),
        (raw_log(name=b"n" * 65, clubs=()), "log name must be"),
    ],
)
def test_malformed_or_non_canonical_log_descriptor_is_rejected(data: bytes, why: str) -> None:
    with pytest.raises(InvalidEventError, match=why):
        canonical.decode_log(data)


@pytest.mark.parametrize(
    ("descriptor", "why"),
    [
        (LogDescriptor(b"c" * 32, "", Audience("public")), "log name must be"),
        (LogDescriptor(b"c" * 32, "é" * 33, Audience("public")), "log name must be"),
        (LogDescriptor(b"c" * 32, "bad \udcff name", Audience("public")), "UTF-8"),
        (LogDescriptor(b"c" * 31, "public", Audience("public")), "32 bytes"),
        (LogDescriptor(b"c" * 32, "x", Audience("public", (b"a" * 32,))), "takes no club list"),
        (LogDescriptor(b"c" * 32, "x", Audience("clubs")), "lists 1-256 clubs"),
        (
            LogDescriptor(b"c" * 32, "x", Audience("clubs", (b"b" * 32, b"a" * 32))),
            "sorted",
        ),
        (LogDescriptor(b"c" * 32, "x", Audience("clubs", (b"a" * 31,))), "32-byte"),
        (
            LogDescriptor(
                b"c" * 32,
                "x",
                Audience("clubs", tuple(i.to_bytes(32, "big") for i in range(257))),
            ),
            "lists 1-256 clubs",
        ),
    ],
)
def test_invalid_log_descriptor_is_not_encoded(descriptor: LogDescriptor, why: str) -> None:
    with pytest.raises(InvalidEventError, match=why):
        canonical.encode_log(descriptor)


def test_largest_named_audience_fits() -> None:
    clubs = tuple(i.to_bytes(32, "big") for i in range(MAX_AUDIENCE_CLUBS))
    descriptor = LogDescriptor(b"c" * 32, "n" * MAX_LOG_NAME_BYTES, Audience("clubs", clubs))
    encoded = canonical.encode_log(descriptor)
    assert len(encoded) == 16 + 1 + 32 + 1 + 64 + 1 + 2 + 32 * 256
    assert canonical.decode_log(encoded) == descriptor


def test_log_id_commits_to_the_audience() -> None:
    ids = {
        canonical.log_id(canonical.encode_log(LogDescriptor(b"c" * 32, "main", Audience(kind))))
        for kind in ("private", "federation", "public")
    }
    assert len(ids) == 3
