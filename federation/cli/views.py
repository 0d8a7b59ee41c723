"""The CLI's commands over the event-sourced views: rebuild, calendar, campaigns.

Titles, places and descriptions here are often another club's text; they are shown
through the lines of an `Output`, which cli/output.py makes safe to display.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import msgspec

from federation.cli.output import Output
from federation.node import projector
from federation.node.node import Node
from federation.views import projection


async def cmd_rebuild(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        count = await projector.rebuild(node.store)
    return Output({"items": count}, [f"rebuilt campaigns and calendar: {count} items"])


async def cmd_calendar(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        items = await projector.items(node.store, projection.CALENDAR)
    actions = sorted(
        (i for i in items if isinstance(i, projection.CalendarItem)),
        key=lambda i: (i.erased, i.starts or dt.datetime.max.replace(tzinfo=dt.UTC)),
    )
    lines = [
        f"{a.event[:12]}  [erased]"
        if a.erased
        else f"{a.event[:12]}  {a.starts:%Y-%m-%d %H:%M} {a.what} @ {a.where or '?'}"
        + (f" ({a.participants} took part)" if a.participants is not None else "")
        for a in actions
    ] or ["no actions"]
    return Output([msgspec.to_builtins(a) for a in actions], lines)


async def cmd_campaigns(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        # Unknown where a step's payload is missing here (views.campaigns.shown).
        campaigns = await projector.campaigns(node.store)
    lines = [
        f"{c.campaign:24} {c.status:6} {c.title}  ({c.updates} updates, club {c.club[:12]})"
        for c in campaigns
    ] or ["no campaigns"]
    return Output([msgspec.to_builtins(c) for c in campaigns], lines)
