"""Logs: audiences in their text form, the club's standard logs, and chain rules.

A club has several logs, each one append-only chain with one audience (DESIGN
glossary). The audience is part of the log's identity: the log id is the hash of
its descriptor (protocol.md §3.3), so an audience can never be changed, only a new
log opened.
"""

from __future__ import annotations

from federation.core import canonical
from federation.core.canonical import Audience, LogDescriptor
from federation.core.events import Head, VerifiedEvent
from federation.core.ids import parse_id
from federation.errors import ForkError, InvalidEventError, UsageError

STANDARD_AUDIENCES = ("private", "federation", "public")


def parse_audience(text: str) -> Audience:
    """`private`, `federation`, `public`, or `clubs:ID[,ID...]` (64-digit hex club ids)."""
    value = text.strip()
    if value in STANDARD_AUDIENCES:
        return Audience(value)  # type: ignore[arg-type]
    if value.startswith("clubs:"):
        parts = [p for p in value[len("clubs:") :].split(",") if p.strip()]
        if not parts:
            raise UsageError("audience clubs: needs at least one club id, e.g. clubs:ID,ID")
        clubs = tuple(sorted({parse_id(p, "club id in audience") for p in parts}))
        if len(clubs) > canonical.MAX_AUDIENCE_CLUBS:
            raise UsageError(f"a named audience lists at most {canonical.MAX_AUDIENCE_CLUBS} clubs")
        return Audience("clubs", clubs)
    raise UsageError(
        f"invalid audience {text!r}; use private, federation, public or clubs:ID[,ID...]"
    )


def format_audience(audience: Audience) -> str:
    if audience.kind == "clubs":
        return "clubs:" + ",".join(c.hex() for c in audience.clubs)
    return audience.kind


def default_log_name(audience: Audience) -> str:
    if audience.kind == "clubs":
        digest = canonical.sha256(b"".join(audience.clubs)).hex()[:12]
        return f"clubs-{digest}"
    return audience.kind


def descriptor_bytes(club: bytes, name: str, audience: Audience) -> bytes:
    return canonical.encode_log(LogDescriptor(club, name, audience))


def check_append(head: Head | None, event: VerifiedEvent) -> None:
    """The chain rule (protocol.md §3.4): seq follows the head and prev is the head's id."""
    expected_seq = 1 if head is None else head.seq + 1
    expected_prev = canonical.ZERO_HASH if head is None else head.id
    h = event.header
    if h.seq != expected_seq or h.prev != expected_prev:
        raise InvalidEventError(
            f"does not extend the log (head is seq {expected_seq - 1})",
            club=h.club,
            log=h.log,
            seq=h.seq,
        )


def fork_between(held: VerifiedEvent, event: VerifiedEvent) -> ForkError | None:
    """Two signed events of one club for one (log, seq) that differ are a fork (DESIGN
    principle 7). Anything else is not: a valid event of another log, seq or club must
    never freeze a log (protocol.md §3.6)."""
    h = event.header
    if held.signed == event.signed or (h.club, h.log, h.seq) != (
        held.header.club,
        held.header.log,
        held.header.seq,
    ):
        return None
    held_signed = held.signed
    return ForkError(club=h.club, log=h.log, seq=h.seq, ours=held_signed, theirs=event.signed)
