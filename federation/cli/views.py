"""The CLI's commands over the event-sourced views: rebuild, calendar, campaigns.

Titles, places and descriptions here are often another club's text; they are shown
through the lines of an `Output`, which cli/output.py makes safe to display, and cut
to fit by cli/table.py after being made safe.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import msgspec

from federation.cli import names, safety
from federation.cli.output import Output, format_when, plural
from federation.cli.table import Column, table, terminal_width
from federation.node import naming, projector
from federation.node.node import Node
from federation.views import calendar, projection


async def cmd_rebuild(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        count = await projector.rebuild(node.store)
    return Output({"items": count}, [f"rebuilt campaigns and calendar: {plural(count, 'item')}"])


# --- calendar -------------------------------------------------------------------------


def add_calendar_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--past", action="store_true", help="actions that are over, not upcoming")
    c.add_argument("--club", help="only this club's actions (its name or id prefix)")
    c.add_argument(
        "--ics",
        metavar="FILE",
        help="also write these actions to FILE as iCalendar, for a calendar program",
    )


async def cmd_calendar(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        items = await projector.items(node.store, projection.CALENDAR)
        known = await names.known_labels(node)
        now = dt.datetime.fromtimestamp(node.clock() / 1e6, dt.UTC)
        club = (await naming.find_club(node, args.club)).hex() if args.club else ""
        title = node.config.club.name
    actions = calendar.select(
        (i for i in items if isinstance(i, projection.CalendarItem)),
        now,
        past=args.past,
        club=club,
    )
    if args.ics:
        _write_ics(Path(args.ics), actions, known, title=title, now=now)
    data = [
        msgspec.to_builtins(a) | {"club_name": known.names.get(bytes.fromhex(a.club))}
        for a in actions
    ]
    rows = [
        (
            format_when(a.starts) if a.starts is not None else "",
            known(bytes.fromhex(a.club)),
            a.what + (f" ({a.participants} took part)" if a.participants is not None else ""),
            a.where or "?",
        )
        for a in actions
    ]
    columns = [
        Column("WHEN", least=None),
        Column("CLUB", least=10),
        Column("WHAT", least=12, weight=2),
        Column("WHERE", least=8),
    ]
    if rows:
        lines = table(columns, rows, terminal_width())
    else:
        lines = ["no past actions" if args.past else "no upcoming actions (--past: those over)"]
    if args.ics:
        lines.append(f"wrote {plural(len(actions), 'action')} to {args.ics}")
    return Output(data, lines)


def _write_ics(
    path: Path,
    actions: list[projection.CalendarItem],
    known: names.Labels,
    *,
    title: str,
    now: dt.datetime,
) -> None:
    """The actions as iCalendar, made by the feed's one function (views/feed_formats.py),
    with each text cleaned as the feed cleans it (views/feed.py `line`)."""
    from federation.views import feed, feed_formats

    entries = [
        feed.Upcoming(
            event=a.event,
            club=a.club,
            club_name=feed.line(known.name(bytes.fromhex(a.club)), 100),
            what=feed.line(a.what),
            starts=a.starts,
            ends=a.ends,
            where=feed.line(a.where, 200),
            event_url=f"/events/{a.event}",
        )
        for a in actions
        if a.starts is not None
    ]
    data = feed_formats.calendar(entries, name=f"{title}: calendar", base="", now=now)
    # 0600, as every file the node writes: the actions may be the federation's only.
    safety.write_new_file(str(path), data, command="calendar", option="--ics file")


# --- campaigns ------------------------------------------------------------------------


async def cmd_campaigns(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        # Unknown where a step's payload is missing here (views.campaigns.shown).
        campaigns = await projector.campaigns(node.store)
        known = await names.known_labels(node)
    data = [
        msgspec.to_builtins(c) | {"club_name": known.names.get(bytes.fromhex(c.club))}
        for c in campaigns
    ]
    rows = [
        (
            c.campaign,
            c.status,
            c.updates,
            known(bytes.fromhex(c.club)),
            c.title,
        )
        for c in campaigns
    ]
    columns = [
        Column("CAMPAIGN", least=10),
        Column("STATUS", least=None),
        Column("UPDATES", least=None, right=True),
        Column("CLUB", least=10),
        Column("TITLE", least=12, weight=2),
    ]
    lines = table(columns, rows, terminal_width()) if rows else ["no campaigns"]
    return Output(data, lines)
