"""The calendar: one item per action, keyed by the action's event id.

Actions are read leniently (protocol.md §3.2 "Making and reading"): a newer club's
action with a field we do not know still shows; one that does not decode keeps its
place, without details. An erased action keeps its place too, marked.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from federation.core.events import VerifiedEvent
from federation.core.payloads import Action

CALENDAR = "calendar"


class CalendarItem(msgspec.Struct, frozen=True):
    """One action, as a calendar shows it. An erased action keeps its place, marked."""

    event: str
    club: str
    log: str
    seq: int
    erased: bool = False
    what: str = ""
    starts: dt.datetime | None = None
    ends: dt.datetime | None = None
    where: str = ""
    participants: int | None = None


_action = msgspec.json.Decoder(Action)


def key(event: VerifiedEvent) -> str:
    return event.id.hex()


def item(event: VerifiedEvent) -> CalendarItem:
    """The calendar item of an action event: an action is never changed, only erased."""
    h = event.header
    base = CalendarItem(event.id.hex(), h.club.hex(), h.log.hex(), h.seq)
    if event.payload is None:
        return msgspec.structs.replace(base, erased=True)
    try:
        a = _action.decode(event.payload)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
        return base  # a payload that does not decode: the action, without details
    return msgspec.structs.replace(
        base,
        what=a.what,
        starts=a.starts,
        ends=a.ends,
        where=a.where,
        participants=a.participants,
    )
