"""Events: signing, and verification one by one or a run at a time (protocol.md §3, §4).

`VerifiedEvent` and `VerifiedRun` (consecutive events of one log) are the only
types the store accepts. They are made here and nowhere else: by signing a new
event, or by verifying received bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from operator import itemgetter

import msgspec

from federation.core import canonical
from federation.core.canonical import (
    EVENT_TAG,
    MAX_PAYLOAD_BYTES,
    SIGNED_HEADER_BYTES,
    VERSION,
    ZERO_HASH,
    Header,
    Kind,
    event_id,
    header_bytes,
    sha256,
    signature_of,
)
from federation.core.crypto import SigningKey, verify_signature

# Who may sign for a club is decided in `core.keys` (protocol.md §2.2); verifiers take
# the predicate, re-exported here for them.
from federation.core.keys import KeyCheck as KeyCheck
from federation.errors import InvalidEventError


class Head(msgspec.Struct, frozen=True, gc=False):
    """The last event of a log: its seq and its event id."""

    seq: int
    id: bytes


# gc=False: these hold only bytes, ints and each other, never a cycle, and ingest
# makes one per event; left to the garbage collector they cost ~15% of ingest.
class VerifiedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event whose signature, chain position and payload commitment were checked.

    `signed` is the exact header + signature bytes as made or received. `payload` is
    None once erased; the header still commits to its hash and size.
    """

    id: bytes
    header: Header
    signed: bytes
    payload: bytes | None

    @property
    def erased(self) -> bool:
        return self.payload is None


def sign_event(
    key: SigningKey,
    *,
    club: bytes,
    log: bytes,
    head: Head | None,
    time_us: int,
    kind: int,
    payload: bytes,
) -> VerifiedEvent:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidEventError(
            f"payload is {len(payload)} bytes, over the limit of {MAX_PAYLOAD_BYTES}; "
            "shorten it or split it into several events"
        )
    header = Header(
        club=club,
        log=log,
        seq=1 if head is None else head.seq + 1,
        prev=ZERO_HASH if head is None else head.id,
        time_us=time_us,
        kind=kind,
        payload_hash=sha256(payload),
        payload_size=len(payload),
        key=key.public,
    )
    body = canonical.encode_header(header)
    signed = body + key.sign(body)
    return VerifiedEvent(event_id(signed), header, signed, payload)


def _check_unsigned(
    signed: bytes, payload: bytes | None, authorized: KeyCheck
) -> tuple[Header, bytes]:
    """Every check but the signature. Returns the header and the event id."""
    header = canonical.decode_header(signed)

    def fail(reason: str) -> InvalidEventError:
        return InvalidEventError(reason, club=header.club, log=header.log, seq=header.seq)

    if header.seq < 1:
        raise fail("seq must start at 1")
    if header.payload_size > MAX_PAYLOAD_BYTES:
        raise fail(f"payload size {header.payload_size} is over the limit {MAX_PAYLOAD_BYTES}")
    if header.kind not in _KNOWN_KINDS:
        raise fail(f"unknown event kind {header.kind}")
    if payload is not None:
        if len(payload) != header.payload_size:
            raise fail(f"payload is {len(payload)} bytes but the header says {header.payload_size}")
        if sha256(payload) != header.payload_hash:
            raise fail("payload does not match the hash in the signed header (altered payload)")
    if not authorized(header.club, header.key):
        raise fail("signed by a key that is not authorised for this club")
    return header, event_id(signed)


_KNOWN_KINDS = frozenset(int(k) for k in Kind)


def _check_signature(header: Header, signed: bytes) -> None:
    if not verify_signature(header.key, signature_of(signed), header_bytes(signed)):
        raise InvalidEventError(
            "bad signature (forged or corrupted header)",
            club=header.club,
            log=header.log,
            seq=header.seq,
        )


def verify_event(signed: bytes, payload: bytes | None, authorized: KeyCheck) -> VerifiedEvent:
    """Verify one event on its own: header, payload commitment, key and signature."""
    header, eid = _check_unsigned(signed, payload, authorized)
    _check_signature(header, signed)
    return VerifiedEvent(eid, header, signed, payload)


class VerifiedRun(msgspec.Struct, frozen=True, gc=False):
    """Consecutive events of one log, checked together: what the store appends.

    Made by verify_run (received bytes) or runs_of (events already verified). It
    keeps the exact bytes as parallel tuples rather than a VerifiedEvent each: bulk
    ingest then makes a few objects per batch instead of two per event, and the
    store binds the tuples to rows without a Python loop per event.
    """

    log: bytes
    club: bytes
    after: Head | None  # the head the first event follows (None: it is seq 1)
    ids: tuple[bytes, ...]
    signed: tuple[bytes, ...]
    payloads: tuple[bytes | None, ...]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def first(self) -> int:
        """The seq of the first event."""
        return 1 if self.after is None else self.after.seq + 1

    @property
    def head(self) -> Head | None:
        """The head after this run."""
        if not self.ids:
            return self.after
        return Head(self.first + len(self.ids) - 1, self.ids[-1])

    def without_first(self, n: int) -> VerifiedRun:
        """The run after its first `n` events (they are then the head it follows)."""
        if n == 0:
            return self
        after = Head(self.first + n - 1, self.ids[n - 1])
        return VerifiedRun(
            self.log, self.club, after, self.ids[n:], self.signed[n:], self.payloads[n:]
        )

    def events(self) -> list[VerifiedEvent]:
        return [
            VerifiedEvent(eid, canonical.decode_header(signed), signed, payload)
            for eid, signed, payload in zip(self.ids, self.signed, self.payloads, strict=True)
        ]


def runs_of(events: Sequence[VerifiedEvent]) -> list[VerifiedRun]:
    """Events in runs: a new run starts wherever an event does not follow the last."""
    runs: list[VerifiedRun] = []
    start = 0
    for i in range(1, len(events) + 1):
        if i < len(events):
            before, h = events[i - 1], events[i].header
            if (h.log, h.club, h.seq, h.prev) == (
                before.header.log,
                before.header.club,
                before.header.seq + 1,
                before.id,
            ):
                continue
        part, start = events[start:i], i
        first = part[0].header
        runs.append(
            VerifiedRun(
                first.log,
                first.club,
                None if first.seq == 1 else Head(first.seq - 1, first.prev),
                tuple(e.id for e in part),
                tuple(e.signed for e in part),
                tuple(e.payload for e in part),
            )
        )
    return runs


def verify_run(
    log: bytes,
    after: Head | None,
    run: Sequence[tuple[bytes, bytes | None]],
    authorized: KeyCheck,
    *,
    club: bytes | None = None,
    every_signature: bool = False,
) -> tuple[VerifiedRun, InvalidEventError | None]:
    """Verify a contiguous run of one log that follows `after` (None: from seq 1).

    Returns the longest valid prefix and the error that ended it (None if all valid).
    Checks every hash link, payload commitment and key, but only the signature of the
    run's last event: that signature covers its header, whose `prev` is the id (hash of
    header and signature) of the event before, and so on back to `after`. Whoever made
    the last signature committed to the exact bytes of the whole run; finding another
    run under it means finding a sha256 collision (protocol.md §4.4 proves it in full).
    If the last signature fails we fall back to one-by-one checks to find the prefix.
    `club`, the club of the log's descriptor: every event must be that club's (§4.3);
    without it, every event must be the first event's club.
    `every_signature` checks each signature anyway (the audit in `federation verify`).
    """
    ids: list[bytes] = []
    seq = 0 if after is None else after.seq
    prev = ZERO_HASH if after is None else after.id
    error: InvalidEventError | None = None
    # The hot path of ingest: one unpack, two sha256, a few compares per event, and no
    # object but the id. An event that fails is re-checked by _diagnose, which names
    # what is wrong.
    unpack, size, sha = canonical.HEADER_STRUCT.unpack_from, SIGNED_HEADER_BYTES, hashlib.sha256
    keys_ok: set[bytes] = set()
    if club is None and run and len(run[0][0]) == size:
        club = unpack(run[0][0])[2]
    for signed, payload in run:
        f = unpack(signed) if len(signed) == size else None
        if not (
            f is not None
            and f[0] == EVENT_TAG
            and f[1] == VERSION
            and f[3] == log
            and f[2] == club
            and f[4] == seq + 1
            and f[5] == prev
            and f[7] in _KNOWN_KINDS
            and f[9] <= MAX_PAYLOAD_BYTES
            and (payload is None or (len(payload) == f[9] and sha(payload).digest() == f[8]))
            and (f[10] in keys_ok or authorized(f[2], f[10]))
        ):
            error = _diagnose(log, club, seq, prev, signed, payload, authorized)
            break
        keys_ok.add(f[10])
        prev = sha(signed).digest()
        ids.append(prev)
        seq += 1
    done = run[: len(ids)]
    verified = VerifiedRun(
        log,
        club or ZERO_HASH,
        after,
        tuple(ids),
        tuple(map(_first, done)),  # map and itemgetter: no Python frame per event
        tuple(map(_second, done)),
    )
    if not ids:
        return verified, error
    checked = range(len(ids)) if every_signature else range(len(ids) - 1, len(ids))
    for i in checked:
        bad = _bad_signature(verified.signed[i])
        if bad is None:
            continue
        if not every_signature:  # the last one failed: find the valid prefix one by one
            return verify_run(log, after, done, authorized, club=club, every_signature=True)
        return _prefix(verified, i), bad
    return verified, error


_first, _second = itemgetter(0), itemgetter(1)


def _bad_signature(signed: bytes) -> InvalidEventError | None:
    header = canonical.decode_header(signed)
    try:
        _check_signature(header, signed)
    except InvalidEventError as exc:
        return exc
    return None


def _prefix(run: VerifiedRun, n: int) -> VerifiedRun:
    return VerifiedRun(run.log, run.club, run.after, run.ids[:n], run.signed[:n], run.payloads[:n])


def _diagnose(
    log: bytes,
    club: bytes | None,
    seq: int,
    prev: bytes,
    signed: bytes,
    payload: bytes | None,
    authorized: KeyCheck,
) -> InvalidEventError:
    """What is wrong with an event that failed the fast path of verify_run."""
    try:
        header, _ = _check_unsigned(signed, payload, authorized)
    except InvalidEventError as exc:
        return exc
    if header.log != log:
        reason = "event belongs to another log"
    elif club is not None and header.club != club:
        reason = "event is signed for another club than its log's"
    elif header.seq != seq + 1:
        reason = f"seq gap: expected seq {seq + 1}, got {header.seq}"
    elif header.prev != prev:
        reason = "previous-hash link broken (the event does not follow the one before it)"
    else:  # pragma: no cover - the fast path checks nothing else
        reason = "event failed verification"
    return InvalidEventError(reason, club=header.club, log=log, seq=header.seq)
