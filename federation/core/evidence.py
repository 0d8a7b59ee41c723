"""Evidence: one signed event with everything needed to verify it offline.

The feed serves it at `/events/{id}` and `federation verify-event FILE` checks it, with
nothing but the file: the club's genesis gives the club id (protocol.md §2.1) and the
key that may sign for it (§2.2), the log descriptor gives the log id and its audience
(§3.3), and the signed header commits to the payload by hash and size (§3.1). Bytes are
carried exactly as signed or hashed (base64 in JSON), never re-encoded (DESIGN
principle 1); the readable `header` is a courtesy and is checked against them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec

from federation.core import canonical
from federation.core.canonical import Genesis, Kind
from federation.core.events import VerifiedEvent, verify_event
from federation.core.keys import (
    KeyAuthority,
    KeyHistory,
    check_key_event,
    first_outside,
    key_log_id,
    with_event,
)
from federation.core.log import format_audience
from federation.errors import InvalidEventError

# Bigger than any honest document: a 64 KiB payload, base64, plus headers and genesis.
MAX_EVIDENCE_BYTES = 256 * 1024
# The most key events of one club a document may carry (§2.2 offline checks): a club
# that rotated every week for five years; honest key logs hold a few. Each log an
# event is checked in costs a hash per key event, so a 16 MiB agreement record of
# thousands of crafted key events and logs would otherwise keep a verifier busy for
# minutes.
MAX_CARRIED_KEY_EVENTS = 256


class EvidenceHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The signed header, decoded for people; `signed` is what counts."""

    club: str
    log: str
    seq: int
    prev: str
    time: dt.datetime
    kind: str
    payload_hash: str
    payload_size: int
    key: str


class EvidenceKeyEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One of the club's key events (protocol.md §2.2), exactly as signed."""

    signed: bytes
    payload: bytes


class Evidence(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A signed event and what verifies it: `/events/{id}` in the feed's OpenAPI.
    A club that has changed its key adds its key events (`keys`, in key-log order) and
    the id of the log's event 1 (`first`), which open the cuts (§2.2)."""

    id: str
    audience: str
    header: EvidenceHeader
    signed: bytes  # header + signature, exactly as signed (§3.1)
    payload: bytes | None  # None: erased, the header still commits to it (§3.5)
    genesis: bytes  # the club's genesis record (§2.1)
    descriptor: bytes  # the log's descriptor (§3.3)
    keys: tuple[EvidenceKeyEvent, ...] = ()
    first: bytes | None = None


def _history(doc: Evidence, genesis: Genesis, club: bytes) -> KeyHistory:
    return carried_history(genesis, club, [(k.signed, k.payload) for k in doc.keys])


def carried_history(
    genesis: Genesis, club: bytes, carried: Sequence[tuple[bytes, bytes]]
) -> KeyHistory:
    """The club's epochs from key events a document carries (signed header, payload),
    each checked on its own and by the rule of §2.2, in key-log order from seq 1: an
    evidence document (§2.2) and an agreement record (§3.8) both rely on it."""
    if len(carried) > MAX_CARRIED_KEY_EVENTS:
        raise InvalidEventError(
            f"{len(carried)} key events of one club, over the {MAX_CARRIED_KEY_EVENTS} a "
            "document may carry: not one a node makes"
        )
    history = KeyHistory.of(genesis)
    head = canonical.ZERO_HASH
    for n, (signed, payload) in enumerate(carried, start=1):
        e = verify_event(signed, payload, lambda c, k: c == club)
        h = e.header
        if h.club != club or h.log != key_log_id(club) or h.seq != n or h.prev != head:
            raise InvalidEventError("the key events carried are not the club's keys log")
        history = with_event(history, check_key_event(history, h, e.payload), e.id, h.time_us)
        head = e.id
    return history


def kind_name(kind: int) -> str:
    try:
        return Kind(kind).name.lower()
    except ValueError:
        return f"kind-{kind}"


def time_of(time_us: int) -> dt.datetime:
    """A header's time claim as UTC, clamped to what datetime can hold."""
    seconds = min(max(time_us / 1_000_000, 0), 253_402_300_799)
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def evidence_of(
    event: VerifiedEvent,
    genesis: bytes,
    descriptor: bytes,
    keys: Sequence[tuple[bytes, bytes]] = (),
    first: bytes | None = None,
) -> Evidence:
    """`keys`: the club's key events (signed header, payload), if it has any; `first`:
    then the id of the log's event 1."""
    h = event.header
    return Evidence(
        id=event.id.hex(),
        audience=format_audience(canonical.decode_log(descriptor).audience),
        header=EvidenceHeader(
            club=h.club.hex(),
            log=h.log.hex(),
            seq=h.seq,
            prev=h.prev.hex(),
            time=time_of(h.time_us),
            kind=kind_name(h.kind),
            payload_hash=h.payload_hash.hex(),
            payload_size=h.payload_size,
            key=h.key.hex(),
        ),
        signed=event.signed,
        payload=event.payload,
        genesis=genesis,
        descriptor=descriptor,
        keys=tuple(EvidenceKeyEvent(s, p) for s, p in keys),
        first=first if keys else None,
    )


_decoder = msgspec.json.Decoder(Evidence)


def decode_evidence(data: bytes) -> Evidence:
    if len(data) > MAX_EVIDENCE_BYTES:
        raise InvalidEventError(f"the file is over {MAX_EVIDENCE_BYTES} bytes: not an event")
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidEventError(f"not an event document from a feed: {exc}") from None


def check_evidence(doc: Evidence) -> VerifiedEvent:
    """Verify the document on its own, in order: genesis -> club, descriptor -> log,
    then the header's key, signature and payload commitment. Raises InvalidEventError
    naming the first check that failed."""
    try:
        genesis = canonical.decode_genesis(doc.genesis)
        descriptor = canonical.decode_log(doc.descriptor)
        header = canonical.decode_header(doc.signed)
    except (InvalidEventError, ValueError) as exc:
        raise InvalidEventError(f"a field does not decode: {exc}") from None
    club = canonical.club_id(doc.genesis)
    if header.club != club:
        raise InvalidEventError("the genesis is not that of the club that signed the event")
    if descriptor.club != club:
        raise InvalidEventError("the log descriptor belongs to another club")
    if canonical.log_id(doc.descriptor) != header.log:
        raise InvalidEventError("the log descriptor does not give the event's log id")
    if doc.audience != format_audience(descriptor.audience):
        raise InvalidEventError("the audience shown is not the one the log descriptor holds")
    history = _history(doc, genesis, club)
    if header.log == key_log_id(club):
        # A key event is checked by the key rule of §2.2, not by a window (a revocation
        # is signed by the recovery key, which signs nothing else): it must be the key
        # event the document carries at its seq, which _history checked in order.
        at = header.seq - 1
        if not 0 <= at < len(doc.keys) or doc.keys[at].signed != doc.signed:
            raise InvalidEventError(
                "a key event verifies only among the club's key events (`keys`), at its "
                "seq: take the document again from the feed"
            )
        event = verify_event(doc.signed, doc.payload, lambda c, k: c == club)
    else:
        event = verify_event(
            doc.signed, doc.payload, KeyAuthority({club: genesis}, {club: history}).may_sign
        )
    if event.id.hex() != doc.id:
        raise InvalidEventError("the id shown is not the signed event's id")
    if history.rotated and header.log != key_log_id(club):  # where it may sign (§2.2)
        first = event.id if header.seq == 1 else doc.first
        if first is None:
            raise InvalidEventError(
                "the club changed its key, and the log's first event id is missing"
            )
        outside = first_outside(history, header.log, first, [(header.seq, header.key, event.id)])
        if outside is not None:
            raise InvalidEventError(outside[1])
    if evidence_of(event, doc.genesis, doc.descriptor).header != doc.header:
        raise InvalidEventError("the readable header does not match the signed bytes")
    return event
