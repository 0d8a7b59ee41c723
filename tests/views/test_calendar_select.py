"""What a calendar lists (views/calendar.select): upcoming or past, never the erased."""

from __future__ import annotations

import datetime as dt

from federation.views.calendar import CalendarItem, select

NOW = dt.datetime(2026, 12, 1, 17, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def item(
    event: str, starts: dt.datetime | None, ends: dt.datetime | None = None, club: str = "aa"
) -> CalendarItem:
    return CalendarItem(event, club, "log", 1, starts=starts, ends=ends, what=event)


def test_upcoming_and_past_split_at_now_and_keep_out_the_erased() -> None:
    items = [
        item("later", NOW + 48 * HOUR),
        item("soon", NOW + HOUR),
        item("over", NOW - 3 * HOUR, NOW - 2 * HOUR),
        item("going-on", NOW - HOUR, NOW + HOUR),  # started, not over: still upcoming
        item("long-ago", NOW - 100 * HOUR),
        CalendarItem("erased", "aa", "log", 2, erased=True),
        item("undecodable", None),  # a payload that does not decode has no time
    ]
    assert [i.event for i in select(items, NOW)] == ["going-on", "soon", "later"]
    assert [i.event for i in select(items, NOW, past=True)] == ["long-ago", "over"]


def test_one_club() -> None:
    items = [item("ours", NOW + HOUR, club="aa"), item("theirs", NOW + HOUR, club="bb")]
    assert [i.event for i in select(items, NOW, club="bb")] == ["theirs"]


def test_an_end_before_the_start_is_read_as_no_end() -> None:
    odd = item("odd", NOW - HOUR, NOW - 2 * HOUR)
    assert select([odd], NOW) == []
    assert select([odd], NOW, past=True) == [odd]


def test_a_time_with_no_zone_is_read_as_utc() -> None:
    # Another club's payload may carry one (the lenient reading keeps it): it must not
    # make the calendar fail comparing it with times that have a zone.
    naive = item("naive", dt.datetime(2026, 12, 1, 18, 0))
    aware = item("aware", NOW + 30 * dt.timedelta(minutes=1))
    assert [i.event for i in select([naive, aware], NOW)] == ["aware", "naive"]
    assert select([item("gone", dt.datetime(2026, 12, 1, 16, 0))], NOW, past=True) != []
