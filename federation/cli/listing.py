"""Listings for people from `log` and `status`: tables of events and logs, and the
delivery of our logs in words (issue 12).

Clubs by name (cli/names.py), times in the reader's zone (cli/output.py), every line
fitted to the terminal by cli/table.py after other clubs' text is made safe.
"""

from __future__ import annotations

import datetime as dt

from federation.cli.names import SHORT_HEX, Labels, distinct
from federation.cli.output import escape_unsafe, format_ago, format_when
from federation.cli.table import Column, cut, table, terminal_width
from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.core.log import default_log_name, format_audience
from federation.core.payloads import read_payload, summary
from federation.node import delivery
from federation.store.base import LogRecord

LOG_NAME_COLUMNS = 10  # of a log's name in `log`, before its "#seq"


def log_lines(rows: list[tuple[LogRecord, VerifiedEvent]], known: Labels) -> list[str]:
    """`log` for people: a table, one event a line, its club by name, its time in the
    reader's zone (cli/output.format_when)."""
    if not rows:
        return ["no events"]
    # One zone label for the whole column when every row shares it (the usual case):
    # the year's two labels (CET, CEST) each stay beside their own times.
    times = [format_when(e.header.time_us) for _, e in rows]
    labels = {t.rpartition(" ")[2] for t in times}
    if len(labels) == 1:
        times = [t.rpartition(" ")[0] for t in times]
    columns = [
        Column("ID", least=None),
        Column(f"TIME ({labels.pop()})" if len(labels) == 1 else "TIME", least=None),
        Column("CLUB", least=10),
        Column("LOG", least=None),  # each cut beforehand, keeping its seq
        Column("EVENT", least=12, weight=3),
    ]
    cells = [
        (
            e.id.hex()[:SHORT_HEX],
            time,
            known(e.header.club),
            f"{cut(escape_unsafe(r.name), LOG_NAME_COLUMNS)}#{e.header.seq}",
            event_summary(e),
        )
        for (r, e), time in zip(rows, times, strict=True)
    ]
    return table(columns, cells, terminal_width())


def event_summary(event: VerifiedEvent) -> str:
    """One line about the event, saying its kind; an action's start in the reader's zone."""
    h = event.header
    kind = Kind(h.kind)
    text = summary(h.kind, event.payload)
    if kind is Kind.ACTION and event.payload is not None:
        fields = read_payload(h.kind, event.payload)
        starts = fields.get("starts") if fields is not None else None
        if fields is not None and isinstance(starts, dt.datetime):
            text = f"{fields['what']} @ {fields['where'] or '?'}, {format_when(starts)}"
    # The other kinds' summaries begin with what they are ("rent created: ...").
    if kind in (Kind.NOTE, Kind.ACTION, Kind.REPORT):
        text = f"{kind.name.lower()}: {text}"
    elif kind is Kind.CAMPAIGN:
        text = f"campaign {text}"
    elif kind is Kind.ROSTER and event.payload is not None:
        fields = read_payload(h.kind, event.payload)
        if fields is not None:  # the club by the name this roster gives it, not its id
            named = str(fields.get("name") or f"club {str(fields['club'])[:SHORT_HEX]}")
            text = f"roster: {fields['op']} {named}"
    return " ".join(text.split())


def delivery_lines(
    found: list[delivery.PeerDelivery], logs: list[LogRecord], known: Labels, now_us: int
) -> list[str]:
    """Delivery in `status` (node/delivery.py says what "held" rests on): a line per
    log of ours that leaves the node, "log federation: delivered to Northside; not yet
    to Harbour (last contact 3 h ago)", in the logs table's order; then each peer that
    refuses us, or that we paused."""
    audiences = {r.id: known.audience(r.audience) for r in logs}
    entries = delivery.by_log(found)
    lines = []
    for name, pairs in sorted(
        entries.items(), key=lambda kv: (audiences.get(kv[1][0][1].log, ""), kv[0])
    ):
        done = [known(p.club) for p, e in pairs if e.delivered]
        late = [
            f"{known(p.club)} (last contact {format_ago(now_us, p.last_contact_us)})"
            for p, e in pairs
            if not e.delivered
        ]
        parts = ["delivered to " + ", ".join(done)] if done else []
        parts += ["not yet to " + ", ".join(late)] if late else []
        lines.append(f"  log {name}: " + ("; ".join(parts) or "no peer may receive it"))
    for p in found:
        if p.refused is not None:
            # "Eastside no longer accepts our requests since … (paused or removed us)"
            what, _, why = p.refused.why.partition(" (")
            since = format_when(p.refused.since_us)
            lines.append(f"  {known(p.club)} {what} since {since}" + (f" ({why}" if why else ""))
        elif p.state == "paused":
            lines.append(
                f"  {known(p.club)} is paused here: it receives nothing until `peers resume`"
            )
    return ["delivery:", *lines] if lines else []


# Of an audience's club names in `status`, before "…": two `clubs:` logs stay apart.
AUDIENCE_COLUMNS = 32


def log_table(logs: list[LogRecord], known: Labels, own: bytes) -> list[str]:
    """The logs in `status`, our own first, then by club, audience and name: name, audience
    (clubs by name, each audience's label its own however it is cut), club, head seq."""
    audiences = {format_audience(r.audience): r.audience for r in logs}
    shown = distinct(
        {k: known.audience(a) for k, a in audiences.items()},
        AUDIENCE_COLUMNS,
        lambda k: default_log_name(audiences[k]).removeprefix("clubs-")[:6],
    )
    columns = [
        Column("LOG", least=10),
        Column("AUDIENCE", least=None),  # fitted above
        Column("CLUB", least=10),
        Column("HEAD", least=None),
    ]
    rows = [
        (
            r.name,
            shown[format_audience(r.audience)],
            known(r.club),
            f"{r.head.seq if r.head else 0}" + ("  FROZEN (fork)" if r.frozen else ""),
        )
        for r in sorted(
            logs,
            key=lambda r: (
                r.club != own,
                known(r.club).casefold(),
                known.audience(r.audience),
                r.name,
            ),
        )
    ]
    if not rows:
        return ["  no logs"]
    return ["  " + line for line in table(columns, rows, terminal_width() - 2)]
