"""The CLI's commands about the club's own node: init, post, log, show, status, verify,
erase, export and import.

Each takes parsed arguments and returns an `Output` (cli/output.py); rules live in the
core and the node, these functions only choose and format.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from federation.cli.output import Output, format_time, progress, say
from federation.cli.peering import peer_json, peer_lines
from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.core.ids import short
from federation.core.log import format_audience, parse_audience
from federation.core.payloads import UNERASABLE_KINDS, kind_from_name, read_payload, summary
from federation.errors import UsageError
from federation.node import archive, audit, projector
from federation.node.keyfile import PASSPHRASE_ENV
from federation.node.node import Node, init_node, prompt_passphrase
from federation.store.base import PAGE_EVENTS, LogRecord
from federation.store.meta import delivered, restore_guards

# --- init -----------------------------------------------------------------------


def add_init_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--name", required=True, help="the club's name, as other clubs will see it")
    c.add_argument("--listen", default="127.0.0.1:8401", help="host:port to serve on")
    c.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the key unencrypted (unattended servers only: a seized disk gives it away)",
    )
    c.add_argument(
        "--passphrase-file",
        help="read the passphrase from this file, now and whenever the node starts (unattended)",
    )
    c.add_argument("--plain-http", action="store_true", help="serve plain HTTP (loopback only)")
    c.add_argument(
        "--feed-listen",
        default="",
        metavar="HOST:PORT",
        help="also serve the read-only public feed here (default: no feed)",
    )


async def cmd_init(args: argparse.Namespace) -> Output:
    root = Path(args.node)
    if args.no_passphrase:
        passphrase = None
        say(
            "federation: warning: the club key will be stored UNENCRYPTED; anyone who copies "
            f"{root / 'club.key'} can sign as your club",
            file=sys.stderr,
        )
    elif args.passphrase_file:
        try:
            passphrase = Path(args.passphrase_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read {args.passphrase_file}: {exc.strerror}") from None
    elif PASSPHRASE_ENV in os.environ:
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    else:
        passphrase = prompt_passphrase(confirm=True)
    club = await init_node(
        root,
        name=args.name,
        listen=args.listen,
        passphrase=passphrase,
        plain_http=args.plain_http,
        passphrase_file=str(Path(args.passphrase_file).resolve()) if args.passphrase_file else "",
        feed_listen=args.feed_listen,
    )
    lines = [
        club.hex(),
        f"created club “{args.name}” in {root}",
        f"move {root / 'recovery.key'} off this machine (e.g. a USB stick kept apart): "
        "it will let you revoke a seized key",
    ]
    return Output({"club": club.hex(), "name": args.name, "node": str(root)}, lines)


# --- post -----------------------------------------------------------------------

_POST_FIELDS: dict[str, list[tuple[str, str, Any]]] = {
    # kind: [(option, help, type)]
    "note": [("text", "the note", str)],
    "action": [
        ("what", "what the club does, e.g. 'Picket at the depot'", str),
        ("starts", "start, ISO 8601 with zone, e.g. 2026-12-01T18:00+00:00", str),
        ("ends", "end, same form (optional)", str),
        ("where", "the place (optional)", str),
        ("participants", "how many took part (optional)", int),
        ("text", "details (optional)", str),
    ],
    "report": [
        ("member", "who reports", str),
        ("period", "the month, YYYY-MM", str),
        ("text", "what they did", str),
    ],
    "campaign": [
        ("campaign", "the campaign's short name (a-z, 0-9, -)", str),
        ("op", "created, updated or closed", str),
        ("title", "title (optional)", str),
        ("text", "description or update (optional)", str),
    ],
}


def _datetime(option: str, text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--{option} {text!r} is not a date and time; use e.g. 2026-12-01T18:00+00:00"
        ) from None
    if value.tzinfo is None:
        raise UsageError(f"--{option} needs a time zone, e.g. 2026-12-01T18:00+00:00")
    return value


def add_post_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("kind", metavar="KIND", help="note, action, report or campaign")
    c.add_argument(
        "--audience",
        default="private",
        help="private (default), federation, public, or clubs:ID[,ID...]",
    )
    c.add_argument("--log", help="the log's name (default: named after the audience)")
    seen: set[str] = set()
    for fields in _POST_FIELDS.values():
        for name, help, type_ in fields:
            if name not in seen:
                seen.add(name)
                c.add_argument(f"--{name}", type=type_, help=help)


async def cmd_post(args: argparse.Namespace) -> Output:
    kind = kind_from_name(args.kind, postable=True)
    allowed = {name for name, _, _ in _POST_FIELDS[kind.name.lower()]}
    given = {
        name: getattr(args, name)
        for fields in _POST_FIELDS.values()
        for name, _, _ in fields
        if getattr(args, name) is not None
    }
    for name in ("starts", "ends"):
        if name in given:
            given[name] = _datetime(name, given[name])
    extra = sorted(set(given) - allowed)
    if extra:
        raise UsageError(
            f"--{extra[0]} does not apply to {kind.name.lower()}; it takes "
            + ", ".join(f"--{n}" for n in sorted(allowed))
        )
    audience = parse_audience(args.audience)
    async with await Node.open(Path(args.node)) as node:
        record, event = await node.post(kind, given, audience, args.log)
    data = _event_json(record, event)
    return Output(
        data,
        [f"{event.id.hex()}  {record.name} #{event.header.seq}  ({format_audience(audience)})"],
    )


# --- reading ------------------------------------------------------------------------


def _event_json(record: LogRecord, event: VerifiedEvent) -> dict[str, Any]:
    h = event.header
    return {
        "id": event.id.hex(),
        "club": h.club.hex(),
        "log": h.log.hex(),
        "log_name": record.name,
        "audience": format_audience(record.audience),
        "seq": h.seq,
        "prev": h.prev.hex(),
        "time": format_time(h.time_us),
        "kind": Kind(h.kind).name.lower(),
        "payload_hash": h.payload_hash.hex(),
        "payload_size": h.payload_size,
        "key": h.key.hex(),
        "erased": event.payload is None,
        "payload": None if event.payload is None else read_payload(h.kind, event.payload),
        "signed": event.signed.hex(),
    }


async def _select_logs(node: Node, log: str | None, club: str | None = None) -> list[LogRecord]:
    records = await node.store.logs()
    if log:
        records = [r for r in records if r.name == log or r.id.hex().startswith(log.lower())]
        if not records:
            raise UsageError(f"no log {log!r}; see the logs in `federation status`")
    if club:
        records = [r for r in records if r.club.hex().startswith(club.lower())]
    return records


def add_log_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--log", help="only this log (name or id prefix)")
    c.add_argument("--kind", help="only this kind (note, action, report, campaign)")
    c.add_argument("--club", help="only this club (id prefix)")
    c.add_argument(
        "--limit", type=int, default=50, help="at most this many, the latest (default 50)"
    )


async def cmd_log(args: argparse.Namespace) -> Output:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    kind = kind_from_name(args.kind) if args.kind else None
    async with await Node.open(Path(args.node)) as node:
        rows: list[tuple[LogRecord, VerifiedEvent]] = []
        for record in await _select_logs(node, args.log, args.club):
            if record.head is None:
                continue
            after = 0
            while page := await node.store.events(record.id, after, PAGE_EVENTS):
                rows.extend((record, e) for e in page if kind is None or e.header.kind == kind)
                after = page[-1].header.seq
        rows.sort(key=lambda r: (r[1].header.time_us, r[1].header.seq))
        rows = rows[-args.limit :]
        data = [_event_json(r, e) | {"signed": None} for r, e in rows]
        lines = [
            f"{e.id.hex()[:12]}  {format_time(e.header.time_us)}  {short(e.header.club)} "
            f"{r.name}#{e.header.seq}  {Kind(e.header.kind).name.lower():8}  "
            f"{summary(e.header.kind, e.payload)}"
            for r, e in rows
        ] or ["no events"]
        return Output(data, lines)


def add_event_argument(c: argparse.ArgumentParser) -> None:
    """The one argument of `show` and `erase`."""
    c.add_argument("event", metavar="EVENT", help="event id or a prefix of 8+ hex digits")


async def cmd_show(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        event = await node.find_event(args.event)
        record = await node.store.log(event.header.log)
        assert record is not None
        data = _event_json(record, event)
    lines = [f"{k:13} {v}" for k, v in data.items() if k not in ("payload", "signed")]
    if event.payload is None:
        lines.append("payload       [erased]")
    else:
        payload: dict[str, object] = data["payload"] or {}
        lines += [f"  {k}: {v}" for k, v in payload.items() if v not in (None, "")]
    return Output(data, lines)


async def cmd_status(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        logs = await node.store.logs()
        forks = await node.store.forks()
        peer_list = await node.store.peers()
        count = await node.store.count_events()
        blocked = await node.store.blocked()
        held = {r.id: r.head.seq if r.head else 0 for r in logs if r.club == node.club}
        guards = await restore_guards(node.store, held.items())  # protocol.md §3.6
        encrypted = node.key_encrypted
        data = {
            "club": node.club.hex(),
            "name": node.config.club.name,
            "node": str(node.paths.root),
            "key_encrypted": encrypted,
            "events": count,
            "logs": [
                {
                    "id": r.id.hex(),
                    "club": r.club.hex(),
                    "name": r.name,
                    "audience": format_audience(r.audience),
                    "head_seq": r.head.seq if r.head else 0,
                    "head": r.head.id.hex() if r.head else None,
                    "frozen": r.frozen,
                    "own": r.club == node.club,
                }
                for r in logs
            ],
            "forks": [{"club": f.club.hex(), "log": f.log.hex(), "seq": f.seq} for f in forks],
            "peers": [peer_json(p) for p in peer_list],  # per-peer sync status (DESIGN 12)
            "blocked": [{"club": c.hex(), "blocked_us": us} for c, us in blocked.items()],
            "restore_guards": [
                {
                    "log": g.log.hex(),
                    "seq": g.seq,
                    "held": held[g.log],
                    "peer": g.peer,
                    "peer_club": g.club.hex(),
                    "evidence": g.evidence,  # true: posting to the log is held back
                }
                for g in guards
            ],
        }
    lines = [
        f"club     {node.config.club.name}  {node.club.hex()}",
        f"key      {'encrypted with a passphrase' if encrypted else 'UNENCRYPTED on disk'}",
        f"events   {count} in {len(logs)} logs",
        "logs:",
    ]
    for r in logs:
        mark = " FROZEN (fork)" if r.frozen else ""
        owner = "own" if r.club == node.club else short(r.club)
        audience = format_audience(r.audience)[:20]
        lines.append(
            f"  {r.name:20} {audience:20} {owner:12} seq {r.head.seq if r.head else 0}{mark}"
        )
    lines += [f"fork: {audit.describe_fork(f)}" for f in forks]
    names = {r.id: r.name for r in logs}
    for g in guards:
        if g.evidence:
            lines.append(
                f"HELD BACK: log {names.get(g.log, '?')!r}: peer {g.peer} sent a signed event "
                f"of ours at seq {g.seq} (here {held[g.log]}); this node looks restored from "
                "an old backup: run `federation sync` to catch up before posting"
            )
        else:
            lines.append(
                f"warning: peer {g.peer} claims to hold our log {names.get(g.log, '?')!r} up "
                f"to seq {g.seq} (here {held[g.log]}) but did not send those events; an "
                "unsigned claim holds nothing back. If it persists, that peer misreports"
            )
    lines += ["peers:", *peer_lines(peer_list, node.clock())]
    lines += [f"blocked  {c.hex()} since {format_time(us)}" for c, us in blocked.items()]
    return Output(data, lines)


async def cmd_verify(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        total = await node.store.count_events()
        with progress(total, "verify") as advance:
            report = await audit.verify_store(node.store, node.authorized, advance)
    data = {
        "ok": report.ok,
        "clubs": report.clubs,
        "logs": report.logs,
        "events": report.events,
        "erased": report.erased,
        "problems": [msgspec.structs.asdict(p) for p in report.problems],
        "forks": [{"club": f.club.hex(), "log": f.log.hex(), "seq": f.seq} for f in report.forks],
    }
    lines = [str(p) for p in report.problems] + [audit.describe_fork(f) for f in report.forks]
    verdict = "ok" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
    lines.append(
        f"verify {verdict}: {report.events} events ({report.erased} erased) in "
        f"{report.logs} logs of {report.clubs} clubs"
    )
    return Output(data, lines, exit_code=0 if report.ok else 1)


async def cmd_erase(args: argparse.Namespace) -> Output:
    """protocol.md §3.5: our own event is erased everywhere, by a signed erasure event
    that travels with its log; another club's is wiped here only."""
    async with await Node.open(Path(args.node)) as node:
        event = await node.find_event(args.event)
        h = event.header
        if h.kind in UNERASABLE_KINDS:
            raise UsageError(
                f"{Kind(h.kind).name.lower()} events cannot be erased: a roster decides who "
                "receives the club's logs, and an erasure must travel with its log"
            )
        data: dict[str, Any] = {"id": event.id.hex(), "log": h.log.hex(), "seq": h.seq}
        if h.club != node.club:
            await projector.erase(node.store, event)
            data |= {"erased": True, "everywhere": False}
            return Output(
                data,
                [
                    f"wiped this node's copy of the payload of {event.id.hex()} (seq {h.seq}), "
                    "another club's event; its signed header stays",
                    "other copies remain: at the club that wrote it and at every node it "
                    "reached; only that club can erase it everywhere",
                ],
            )
        if (await node.store.erasures(h.log)).get(h.seq):
            data |= {"erased": True, "everywhere": True}
            return Output(data, [f"{event.id.hex()} is erased already, everywhere"])
        record = await node.store.log(h.log)
        assert record is not None
        fields: dict[str, object] = {"seq": h.seq, "event": event.id.hex()}
        _, erasure = await node.post(Kind.ERASURE, fields, record.audience, record.name)
        await projector.catch_up(node.store)  # the log's views fold again, without it
        peers = await node.store.peers()
        reached = [p for p in peers if await delivered(node.store, p.club, h.log) >= h.seq]
    data |= {
        "erased": True,
        "everywhere": True,
        "erasure": erasure.id.hex(),
        "received_by": [p.club.hex() for p in reached],
    }
    lines = [
        f"erased the payload of {event.id.hex()} (seq {h.seq}) here, and posted erasure "
        f"{erasure.id.hex()[:12]} (seq {erasure.header.seq}) that every node holding it honours",
    ]
    if record.audience.kind == "private":
        lines.append("the log is private: no other club received it")
    else:
        names = ", ".join(p.name for p in reached)
        lines.append(
            f"at least {len(reached)} club(s) had received the payload from this node"
            + (f" ({names})" if names else "")
            + "; they drop it when they next sync, and pass the erasure on"
            + (
                "; the log is public, so anyone may have read or kept a copy"
                if record.audience.kind == "public"
                else ""
            )
        )
    return Output(data, lines)


def add_export_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--log", help="only this log (name or id prefix)")
    c.add_argument("--audience", help="only logs with this audience")
    c.add_argument("-o", "--output", help="file to write (default: standard output)")


async def cmd_export(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        logs = await _select_logs(node, args.log)
        if args.audience:
            audience = parse_audience(args.audience)
            logs = [r for r in logs if r.audience == audience]
        total = sum(r.head.seq for r in logs if r.head)
        with progress(total, "export") as advance:
            if args.output and args.output != "-":
                try:
                    out = open(args.output, "xb")  # noqa: SIM115 - closed below
                except FileExistsError:
                    raise UsageError(
                        f"{args.output} already exists and export never overwrites; "
                        "choose another --output"
                    ) from None
                except OSError as exc:
                    raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
                with out:
                    count = await archive.export(node.store, out, logs, advance)
            else:
                count = await archive.export(node.store, sys.stdout.buffer, logs, advance)
    where = args.output or "standard output"
    say(f"exported {count} events in {len(logs)} logs to {where}", file=sys.stderr)
    return Output({"events": count, "logs": len(logs)}, [])


def add_import_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("file", metavar="FILE", help="the export file, or - for standard input")


async def cmd_import(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        if args.file == "-":
            report = await archive.import_lines(
                node.store, node.genesis, sys.stdin.buffer, node.clock()
            )
        else:
            try:
                size = os.path.getsize(args.file)
                stream = open(args.file, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
            with stream, progress(size // 600, "import") as advance:
                report = await archive.import_lines(
                    node.store, node.genesis, stream, node.clock(), advance
                )
    lines = [
        f"imported {report.added} new events ({report.already} already held)"
        + (f"; {report.forks} fork(s) kept as evidence" if report.forks else "")
    ]
    return Output(msgspec.structs.asdict(report), lines)
