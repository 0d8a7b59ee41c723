"""The calendar: one item per action, keyed by the action's event id.

Actions are read leniently (protocol.md §3.2 "Making and reading"): a newer club's
action with a field we do not know still shows; one that does not decode keeps its
place, without details. An erased action keeps its place too, marked. What a calendar
lists (`select`): upcoming actions, or past ones, never the erased.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

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


def _aware(when: dt.datetime) -> dt.datetime:
    """A time with its zone; one without (another club's payload may carry one: the
    lenient reading keeps it) is read as UTC, so that times compare at all."""
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _span(item: CalendarItem) -> tuple[dt.datetime, dt.datetime]:
    """When the action starts and ends (no end, or one before the start: it starts)."""
    assert item.starts is not None
    starts = _aware(item.starts)
    ends = _aware(item.ends) if item.ends is not None else starts
    return starts, max(starts, ends)


def select(
    items: Iterable[CalendarItem], now: dt.datetime, *, past: bool = False, club: str = ""
) -> list[CalendarItem]:
    """The actions a calendar lists, soonest first: those not yet over (`past`: those
    over by `now`), of one club if `club` (its id, hex) is given. An erased action, or
    one whose payload does not decode, has no time to be listed at and is left out."""
    dated = [
        i for i in items if not i.erased and i.starts is not None and (not club or i.club == club)
    ]
    chosen = [i for i in dated if (_span(i)[1] < now) == past]
    return sorted(chosen, key=lambda i: (_span(i)[0], i.event))
