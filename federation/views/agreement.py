"""The agreement record: an agreed proposal as one file anyone can verify offline.

`make_record` writes it from what a node holds; `check_record` verifies it with
nothing but the file (protocol.md §3.8): each club id is the hash of its genesis,
each log id the hash of its descriptor, EVERY event's signature is checked one by
one (`core.events.verify_event`, never the run shortcut of §4.4, since the record
holds scattered events, not runs), every payload against its header's hash and size,
and then the same replay that every node runs (`views.proposals.fold`) must give
"agreed" for the named version. Bytes are carried exactly as signed or hashed
(base64 in JSON), never re-encoded (DESIGN principle 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from federation.core import canonical
from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent, verify_event
from federation.core.evidence import carried_history
from federation.core.keys import KeyAuthority, KeyHistory, first_outside
from federation.errors import InvalidEventError
from federation.views.proposals import Outcome, Step, fold

FORMAT = "federation-agreement/1"
# Format 2 carries key events (§2.2), for records in which a club has changed its key.
FORMAT_KEYS = "federation-agreement/2"
# 255 invited clubs, a few steps each of at most 64 KiB: far below; an honest record
# of a real campaign is tens of KiB. Checked before decoding.
MAX_RECORD_BYTES = 16 * 1024 * 1024


class RecordEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    signed: bytes  # header + signature, exactly as signed (§3.1)
    payload: bytes  # a record holds every payload: an answer unseen decides nothing


class Record(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="format", tag=FORMAT
):
    proposal: str
    version: str
    rule: str
    clubs: list[bytes]  # each club's genesis (§2.1)
    logs: list[bytes]  # each log's descriptor (§3.3)
    events: list[RecordEvent]  # every step of the proposal, in the exporter's order


class RecordWithKeys(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="format", tag=FORMAT_KEYS
):
    """Format 2: as format 1, and for a club that has changed its key, its key events
    (`keys`, beside `clubs`: each club's keys log from seq 1, empty if none) and the id
    of event 1 of each of its logs (`firsts`, beside `logs`: empty if not needed)."""

    proposal: str
    version: str
    rule: str
    clubs: list[bytes]
    logs: list[bytes]
    events: list[RecordEvent]
    keys: list[list[RecordEvent]]
    firsts: list[bytes]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Record | RecordWithKeys)


def make_record(
    outcome: Outcome,
    events: Sequence[VerifiedEvent],
    genesis: Mapping[bytes, bytes],
    descriptors: Mapping[bytes, bytes],
    keys: Mapping[bytes, Sequence[tuple[bytes, bytes]]] | None = None,
    firsts: Mapping[bytes, bytes] | None = None,
) -> bytes:
    """The record of an agreed outcome from its steps (`outcome.evidence`), with the
    genesis of every club and the descriptor of every log they are in; `keys` (club ->
    its key events, signed and payload) and `firsts` (log -> id of its event 1) for
    clubs that changed their key make it format 2."""
    if outcome.state != "agreed":
        raise InvalidEventError(f"proposal {outcome.proposal[:12]} is {outcome.state}, not agreed")
    wanted = set(outcome.evidence)
    chosen = sorted((e for e in events if e.id.hex() in wanted), key=lambda e: e.id)
    if len(chosen) != len(wanted) or any(e.payload is None for e in chosen):
        raise InvalidEventError("an event of the proposal is not held here with its payload")
    clubs = sorted({e.header.club for e in chosen})
    logs = sorted({e.header.log for e in chosen})
    keys = {c: k for c, k in (keys or {}).items() if k and c in clubs}
    record: Record | RecordWithKeys = Record(
        outcome.proposal,
        outcome.version.id,
        outcome.rule,
        [genesis[c] for c in clubs],
        [descriptors[log] for log in logs],
        [RecordEvent(e.signed, e.payload or b"") for e in chosen],
    )
    if keys:
        record = RecordWithKeys(
            record.proposal,
            record.version,
            record.rule,
            record.clubs,
            record.logs,
            record.events,
            keys=[[RecordEvent(sg, p) for sg, p in keys.get(c, ())] for c in clubs],
            firsts=[(firsts or {}).get(log, b"") for log in logs],
        )
    return _encoder.encode(record)


def check_record(data: bytes) -> Outcome:
    """Verify a record on its own; the agreed outcome, or InvalidEventError naming the
    first check that failed (tampering, truncation, or answers that do not agree)."""
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidEventError(f"the file is over {MAX_RECORD_BYTES} bytes: not a record")
    try:
        record = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidEventError(f"not an agreement record (truncated or altered?): {exc}") from None
    # Each club and log once (§3.8 checks 2 and 3): a club given twice could carry the
    # revocation beside it in one copy and be read by the other (the seizer's rotation,
    # or none), and a log twice two different first event ids.
    if len(set(record.clubs)) != len(record.clubs) or len(set(record.logs)) != len(record.logs):
        raise InvalidEventError("a club or a log is in the record twice: it was altered")
    genesis: dict[bytes, canonical.Genesis] = {}
    for raw in record.clubs:
        try:
            genesis[canonical.club_id(raw)] = canonical.decode_genesis(raw)
        except InvalidEventError as exc:
            raise InvalidEventError(f"a club genesis does not decode: {exc}") from None
    audiences: dict[bytes, tuple[bytes, ...]] = {}
    for raw in record.logs:
        try:
            descriptor = canonical.decode_log(raw)
        except InvalidEventError as exc:
            raise InvalidEventError(f"a log descriptor does not decode: {exc}") from None
        if descriptor.club not in genesis:
            raise InvalidEventError("a log descriptor names a club whose genesis is not here")
        audiences[canonical.log_id(raw)] = descriptor.audience.clubs
    histories: dict[bytes, KeyHistory] = {}
    firsts: dict[bytes, bytes] = {}
    if isinstance(record, RecordWithKeys):
        if len(record.keys) != len(record.clubs) or len(record.firsts) != len(record.logs):
            raise InvalidEventError("`keys` and `firsts` do not match `clubs` and `logs`")
        for raw, carried in zip(record.clubs, record.keys, strict=True):
            club = canonical.club_id(raw)
            try:
                histories[club] = carried_history(
                    genesis[club], club, [(k.signed, k.payload) for k in carried]
                )
            except InvalidEventError as exc:
                raise InvalidEventError(f"the key events of a club do not verify: {exc}") from None
        for raw, given in zip(record.logs, record.firsts, strict=True):
            if given:
                firsts[canonical.log_id(raw)] = given
    authority = KeyAuthority(genesis, histories)
    steps: list[Step] = []
    for n, item in enumerate(record.events, 1):
        try:  # one signature at a time, each on its own (§3.8)
            event = verify_event(item.signed, item.payload, authority.may_sign)
        except InvalidEventError as exc:
            raise InvalidEventError(f"event {n} does not verify: {exc}") from None
        h = event.header
        if h.log not in audiences:
            raise InvalidEventError(f"event {n} is in a log whose descriptor is not here")
        if authority.rotated(h.club):  # where in its log the key may sign (§2.2)
            first = event.id if h.seq == 1 else firsts.get(h.log)
            if first is None:
                raise InvalidEventError(
                    f"event {n}: its club changed its key; `firsts` lacks its log"
                )
            outside = first_outside(histories[h.club], h.log, first, [(h.seq, h.key, event.id)])
            if outside is not None:
                raise InvalidEventError(f"event {n} does not verify: {outside[1]}")
        if h.kind != Kind.PROPOSAL:
            raise InvalidEventError(f"event {n} is not a proposal step")
        steps.append(
            Step(event.id, h.club, h.log, h.seq, h.time_us, audiences[h.log], item.payload)
        )
    if len({s.id for s in steps}) != len(steps):
        raise InvalidEventError("an event is in the record twice")
    outcomes, _ = fold(steps, now_us=0)
    found = [o for o in outcomes if o.proposal == record.proposal]
    if not found:
        raise InvalidEventError(f"the record does not hold proposal {record.proposal[:12]}")
    o = found[0]
    if o.state != "agreed" or o.version.id != record.version or o.rule != record.rule:
        needs = "; still needed: " + ", ".join(o.missing) if o.missing else ""
        raise InvalidEventError(
            f"the answers do not meet rule {o.rule} for version {record.version[:12]}: the "
            f"signed steps give {o.state} (version {o.version.id[:12]}){needs}"
        )
    return o
