"""Logs: audiences in their text form, the club's standard logs, and chain rules.

A club has several logs, each one append-only chain with one audience (DESIGN
glossary). The audience is part of the log's identity: the log id is the hash of
its descriptor (protocol.md §3.3), so an audience can never be changed, only a new
log opened.
"""

from __future__ import annotations

from federation.core import canonical
from federation.core.canonical import Audience, LogDescriptor
from federation.core.events import Head, VerifiedEvent, VerifiedRun
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


def rest_to_append(
    run: VerifiedRun, head: Head | None, club: bytes, held: bytes | None = None
) -> VerifiedRun | None:
    """The chain rule for appending (protocol.md §3.4), decided here for every store.

    `head` is the log's head in the store and `club` the club of its descriptor.
    Returns what of `run` to append: all of it if it starts at `head`, its tail if
    it passes through `head` (two peers' ingests of the same events: the second is
    then a no-op, not an error); None if there is nothing to append. Raises
    InvalidEventError, naming what is wrong, if the run does not extend the log.

    A run that ends before `head` is held already if the store's event at the run's
    last seq is the run's last event (ids chain back through every `prev`, so one
    equal id means an equal prefix). Only then does the store look that id up and
    pass it as `held`: `held_seq` says when.
    """
    if run.club != club:
        raise InvalidEventError("event is signed for another club than its log's", log=run.log)
    end = run.head
    if not run.ids or end is None:
        return None  # an empty run
    if head is not None and end.seq <= head.seq:
        if (head.id if end.seq == head.seq else held) == end.id:
            return None  # all of it held already
        raise _does_not_extend(run, head)
    if run.after == head:
        return run
    if head is None:
        raise _does_not_extend(run, head)
    at = head.seq - run.first  # where `head` falls in the run
    if at < 0 or run.ids[at] != head.id:
        raise _does_not_extend(run, head)
    return run.without_first(at + 1)


def held_seq(run: VerifiedRun, head: Head | None) -> int | None:
    """The seq whose held event id `rest_to_append` needs to decide `run` (the run
    ends before the head), or None when the head alone decides."""
    end = run.head
    if not run.ids or end is None or head is None or end.seq >= head.seq:
        return None
    return end.seq


def _does_not_extend(run: VerifiedRun, head: Head | None) -> InvalidEventError:
    return InvalidEventError(
        f"does not extend the log (head is seq {0 if head is None else head.seq})",
        club=run.club,
        log=run.log,
        seq=run.first,
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
