"""Typed payloads, one per event kind (protocol.md §3.2).

Payloads are msgspec JSON. The header commits to the exact bytes, so a payload is
never re-encoded once made. The types below read received payloads leniently (a
newer club may add fields; protocol.md §3.2 "Making and reading"), and a payload
that does not decode is still a valid signed event. Making is strict: no unknown
fields, a rule kept in one place, `make_payload`.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal, cast

import msgspec

from federation.core.canonical import Kind
from federation.errors import UsageError

Text = Annotated[str, msgspec.Meta(max_length=16_000)]
Line = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Slug = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
Period = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]
Count = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]


class Note(msgspec.Struct, frozen=True):
    text: Text


class Action(msgspec.Struct, frozen=True):
    """Something the club did or will do: a picket, a protest, a reading group."""

    what: Line
    starts: dt.datetime
    where: str = ""
    ends: dt.datetime | None = None
    participants: Count | None = None
    text: Text = ""


class Report(msgspec.Struct, frozen=True):
    """A member's monthly report of what they did. Private unless chosen otherwise."""

    member: Line
    period: Period
    text: Text


Hex64 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class Campaign(msgspec.Struct, frozen=True):
    """A step in a campaign's life, keyed by `campaign` (a slug) within one log.
    `joint`: the proposal id of the joint campaign this step shows on the club's
    public feed (protocol.md §3.7), or None for the club's own campaign."""

    campaign: Slug
    op: Literal["created", "updated", "closed"]
    title: str | None = None
    text: str | None = None
    joint: Hex64 | None = None


class Roster(msgspec.Struct, frozen=True):
    """The club now federates (or no longer federates) with `club` (64 hex digits)."""

    op: Literal["added", "removed"]
    club: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    name: str = ""


class Erasure(msgspec.Struct, frozen=True):
    """The club erases the payload of its event `event` (64 hex digits) at `seq`,
    an earlier event of the same log (protocol.md §3.5)."""

    seq: Annotated[int, msgspec.Meta(ge=1)]
    event: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


# "all": every invited club; "at_least:K": at least K of them (protocol.md §3.7).
Rule = Annotated[str, msgspec.Meta(pattern=r"^(all|at_least:[1-9][0-9]{0,2})$")]


class PlannedAction(msgspec.Struct, frozen=True):
    """An action a joint campaign proposal plans: what, when and where."""

    what: Line
    starts: dt.datetime
    ends: dt.datetime | None = None
    where: str = ""


class Proposal(msgspec.Struct, frozen=True):
    """One step of a joint campaign proposal (protocol.md §3.7), by `op`: a version
    ("proposed"), an answer to one exact version ("accepted", "declined",
    "retracted"), the proposer's "withdrawn", or a participant's "feed" choice.
    Which fields each op needs is checked by `views.proposals.check`."""

    op: Literal["proposed", "withdrawn", "accepted", "declined", "retracted", "feed"]
    proposal: Hex64 | None = None
    version: Hex64 | None = None
    amends: Hex64 | None = None
    title: Line | None = None
    aims: Text = ""
    asks: dict[str, Text] = {}
    actions: tuple[PlannedAction, ...] = ()
    rule: Rule | None = None
    deadline: dt.datetime | None = None
    invited: tuple[Hex64, ...] = ()
    commitment: Text = ""
    reason: Text = ""
    shown: bool | None = None


# A sealed cut entry (protocol.md §2.2): a 32-byte tag and 56 sealed bytes, in hex.
CutEntry = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{176}$")]
# Entries in one cut: a multiple of 8 (padded), within MAX_PAYLOAD_BYTES at ~180
# bytes an entry; a club has tens of logs, not hundreds.
MAX_CUT_ENTRIES = 320


class KeyChange(msgspec.Struct, frozen=True):
    """A hand-over of the club's signing key (protocol.md §2.2): `rotate` (signed by
    the key in force) or `revoke` (signed by the recovery key); `key` the new signing
    key, `revoked` the key it replaces (64 hex digits each), `cut` the sealed entries
    saying where the replaced key's window ends in each log."""

    action: Literal["rotate", "revoke"]
    key: Hex64
    revoked: Hex64
    cut: Annotated[tuple[CutEntry, ...], msgspec.Meta(max_length=MAX_CUT_ENTRIES)] = ()


Payload = Note | Action | Report | Campaign | Roster | Erasure | Proposal | KeyChange

PAYLOAD_TYPES: dict[Kind, type[Payload]] = {
    Kind.NOTE: Note,
    Kind.ACTION: Action,
    Kind.REPORT: Report,
    Kind.CAMPAIGN: Campaign,
    Kind.ROSTER: Roster,
    Kind.ERASURE: Erasure,
    Kind.PROPOSAL: Proposal,
    Kind.KEY: KeyChange,
}
KIND_NAMES: dict[str, Kind] = {k.name.lower(): k for k in Kind}

_encoder = msgspec.json.Encoder()
_lenient = {k: msgspec.json.Decoder(t) for k, t in PAYLOAD_TYPES.items()}


def _strict(t: type[Payload]) -> type[Payload]:
    # A subclass that refuses unknown fields: what a maker checks (§3.2), while the
    # encoded bytes and isinstance stay those of `t`.
    strict = msgspec.defstruct(t.__name__, [], bases=(t,), frozen=True, forbid_unknown_fields=True)
    return cast("type[Payload]", strict)


# For making payloads, and for tools that check a payload as its maker must have.
STRICT_PAYLOAD_TYPES: dict[Kind, type[Payload]] = {k: _strict(t) for k, t in PAYLOAD_TYPES.items()}


# Roster events are written by `federation peers add/remove`, erasures by `federation
# erase`, never posted by hand.
POSTABLE_KINDS = (Kind.NOTE, Kind.ACTION, Kind.REPORT, Kind.CAMPAIGN)


def kind_from_name(name: str, *, postable: bool = False) -> Kind:
    kind = KIND_NAMES.get(name.lower())
    if kind is None or (postable and kind not in POSTABLE_KINDS):
        names = [k.name.lower() for k in (POSTABLE_KINDS if postable else Kind)]
        raise UsageError(f"unknown kind {name!r}; use one of: {', '.join(names)}")
    return kind


def make_payload(kind: Kind, fields: dict[str, object]) -> bytes:
    """Validate fields for `kind` strictly and encode them: the bytes the header commits to."""
    try:
        value = msgspec.convert(fields, STRICT_PAYLOAD_TYPES[kind], strict=False)
    except msgspec.ValidationError as exc:
        raise UsageError(
            f"invalid {kind.name.lower()} payload: {exc}; fix that option and post again"
        ) from None
    if isinstance(value, Action) and any(
        t is not None and t.tzinfo is None for t in (value.starts, value.ends)
    ):
        raise UsageError("action times need a time zone, e.g. 2026-12-01T18:00+00:00")
    return _encoder.encode(value)


def read_payload(kind: int, payload: bytes) -> dict[str, object] | None:
    """Decode a stored payload for display; None if it is not what its kind expects."""
    try:
        k = Kind(kind)
        value = _lenient[k].decode(payload)
    except (ValueError, RecursionError, msgspec.DecodeError):  # RecursionError: deep nesting
        return None
    return msgspec.structs.asdict(value)


# Kinds whose payload no erasure may erase (protocol.md §3.5): a roster decides who
# receives a club's logs, and an erasure must stay to be passed on with its log.
# A key event decides who signs for the club (§2.2): it is never erased either.
UNERASABLE_KINDS = frozenset({Kind.ROSTER, Kind.ERASURE, Kind.KEY})
_erasure = msgspec.json.Decoder(Erasure)


def erasure_target(seq: int, payload: bytes | None) -> tuple[int, bytes] | None:
    """The (seq, event id) an erasure event at `seq` names, or None if its payload is
    missing, does not decode, or names no earlier seq (protocol.md §3.5). Whether the
    target is the event held there, and of a kind that may be erased, is checked
    against the log by `erases`."""
    if payload is None:
        return None
    try:
        value = _erasure.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not value.seq < seq:
        return None
    return value.seq, bytes.fromhex(value.event)


def erases(target_seq: int, target_id: bytes, target_kind: int, named: tuple[int, bytes]) -> bool:
    """protocol.md §3.5: does an erasure naming `named` erase this event of its log?
    Only if it names exactly this event, and the event is not a roster event or an
    erasure; any other erasure is valid as an event but erases nothing."""
    return named == (target_seq, target_id) and target_kind not in UNERASABLE_KINDS


def summary(kind: int, payload: bytes | None) -> str:
    """One line describing an event's payload for people."""
    if payload is None:
        return "[erased]"
    fields = read_payload(kind, payload)
    if fields is None:
        return "[payload does not decode]"
    f = fields
    k = Kind(kind)
    if k is Kind.NOTE:
        line = f"{f['text']}"
    elif k is Kind.ACTION:
        line = f"{f['what']} @ {f['where'] or '?'} on {f['starts']}"
    elif k is Kind.REPORT:
        line = f"{f['member']} {f['period']}: {f['text']}"
    elif k is Kind.CAMPAIGN:
        line = f"{f['campaign']} {f['op']}: {f['title'] or f['text'] or ''}"
    elif k is Kind.ERASURE:
        line = f"erases #{f['seq']} ({str(f['event'])[:12]})"
    elif k is Kind.PROPOSAL:
        line = f"proposal {f['op']}: {f['title'] or str(f['proposal'] or '')[:12]}"
    elif k is Kind.KEY:
        line = f"key {f['action']}: {str(f['revoked'])[:12]} -> {str(f['key'])[:12]}"
    else:
        line = f"{f['op']} club {str(f['club'])[:12]} {f['name']}"
    text = re.sub(r"\s+", " ", str(line)).strip()
    return text if len(text) <= 100 else text[:99] + "…"
