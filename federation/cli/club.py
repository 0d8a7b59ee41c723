"""The CLI's commands about the club's own node: init, post, log, show, status, verify,
erase, export and import.

Each takes parsed arguments and returns an `Output` (cli/output.py); rules live in the
core and the node, these functions only choose and format.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from pathlib import Path
from typing import Any

import msgspec

from federation.cli import delivery as cli_delivery
from federation.cli import safety
from federation.cli.listing import delivery_lines, log_lines, log_table
from federation.cli.names import SHORT_HEX, Labels, known_labels
from federation.cli.output import (
    Output,
    format_time,
    format_when,
    plural,
    progress,
    say,
)
from federation.cli.peering import peer_json, peer_lines
from federation.cli.table import fit, terminal_width, wrap
from federation.core import canonical
from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.core.ids import short
from federation.core.log import format_audience
from federation.core.payloads import kind_from_name, read_payload
from federation.errors import UsageError
from federation.node import audit, control, delivery, naming, recovery
from federation.node.keyfile import PASSPHRASE_ENV, read_passphrase_file
from federation.node.node import Node, init_node, prompt_passphrase
from federation.store.base import PAGE_EVENTS, HeldEvent, LogRecord
from federation.store.meta import restore_guards

# --- init -----------------------------------------------------------------------


def add_init_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--name", required=True, help="the club's name, as other clubs will see it")
    c.add_argument("--listen", default="127.0.0.1:8401", help="host:port to serve on")
    c.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the club key and the store key unencrypted (unattended servers only: "
        "a seized disk then reveals every log and lets the taker sign as the club)",
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
    safety.add_recovery_sheet_arguments(c)


def _check_init_target(root: Path) -> None:
    """A node directory holds the node's files alone, and init makes it 0700: a
    directory holding anything else (a home directory, the current one when --node was
    forgotten) is refused before anything is asked or written."""
    try:
        others = sorted(p.name for p in root.iterdir() if not _NODE_FILE.fullmatch(p.name))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise UsageError(f"{root} is a file; give --node a new directory") from None
    except OSError as exc:
        raise UsageError(
            f"cannot read {root} ({exc.strerror or exc}); give --node a new directory"
        ) from None
    if others:
        raise UsageError(
            f"{root} is not empty (it holds {others[0]!r}): a node directory holds the node's "
            "files alone and init makes it readable by you only; give --node NEWDIR"
        )


# What a node directory holds (an unfinished init's files are refused by init_node).
_NODE_FILE = re.compile(
    r"(config\.toml|club\.key(\.tmp|\.next)?|recovery\.key|tls\.(key|crt)|run\.lock|"
    r"control\.sock|store\.sqlite(-wal|-shm|-journal)?)"
)


async def cmd_init(args: argparse.Namespace) -> Output:
    root = Path(args.node)
    _check_init_target(root)
    # The recovery secret is shown once and never stored here (protocol.md §2.1).
    shares = recovery.parse_threshold(args.recovery_shares) if args.recovery_shares else None
    safety.check_sheet_target(args.recovery_out)
    recovery_seed = safety.sheet_seed()
    if args.no_passphrase:
        passphrase = None
        say(
            "federation: warning: the club key and the store key will be stored UNENCRYPTED "
            f"in {root / 'club.key'}: the store is encrypted, but its key sits beside it, so "
            "anyone who copies this directory can read every log and sign as your club",
            file=sys.stderr,
        )
    elif args.passphrase_file:
        passphrase = read_passphrase_file(Path(args.passphrase_file))  # refused if not 0600
        say(
            f"federation: note: the passphrase stays in {args.passphrase_file}; a seized disk "
            "that holds it reveals everything: keep it elsewhere (another disk, a secret store)",
            file=sys.stderr,
        )
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
        recovery_seed=recovery_seed,
    )
    sheet = safety.recovery_sheet(club, args.name, recovery_seed, shares)
    lines = [
        club.hex(),
        f"created club “{args.name}” in {root}",
        *safety.keep_sheet(sheet, args.recovery_out),
    ]
    return Output({"club": club.hex(), "name": args.name, "node": str(root)}, lines)


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
    if club:  # a name or an id prefix: the one naming rule (node/naming.py)
        chosen = await naming.find_club(node, club)
        records = [r for r in records if r.club == chosen]
    return records


def add_log_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--log", help="only this log (name or id prefix)")
    c.add_argument("--kind", help="only this kind (note, action, report, campaign)")
    c.add_argument("--club", help="only this club (its name, or 6+ hex digits of its id)")
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
        known = await known_labels(node)
        # By time (a claim, but what people read by); events of one instant by club
        # name, log name and seq, so that a listing reads the same each time.
        rows.sort(
            key=lambda r: (r[1].header.time_us, known(r[1].header.club), r[0].name, r[1].header.seq)
        )
        rows = rows[-args.limit :]
        apart = held_apart_lines(await node.store.held_apart(), known)
    data = [
        _event_json(r, e) | {"signed": None, "club_name": known.names.get(e.header.club)}
        for r, e in rows
    ]
    return Output(data, log_lines(rows, known) + apart)


def held_apart_lines(held: list[HeldEvent], known: Labels) -> list[str]:
    """Events a key event moved out of their logs (protocol.md §2.2), in words: kept as
    evidence, never served or relayed; one line per club."""
    by_club: dict[bytes, list[HeldEvent]] = {}
    for h in held:
        by_club.setdefault(h.club, []).append(h)
    return [
        f"{plural(len(events), 'event')} of {known(club)} signed by a revoked or replaced key "
        f"held apart, not relayed ({events[-1].reason})"
        for club, events in by_club.items()
    ]


def add_event_argument(c: argparse.ArgumentParser) -> None:
    """The one argument of `show` and `erase`."""
    c.add_argument("event", metavar="EVENT", help="event id or a prefix of 6+ hex digits")


async def cmd_show(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        try:
            event = await node.find_event(args.event)
        except UsageError:
            apart = await _held_apart_event(node, args.event)
            if apart is None:
                raise
            return apart
        record = await node.store.log(event.header.log)
        assert record is not None
        data = _event_json(record, event)
        # Which peers showed they hold it (node/delivery.py); None: another club's event.
        reached = await delivery.event_delivery(node.store, node.club, event)
        club_names = await naming.club_names(node)
    data["delivery"] = cli_delivery.event_delivery_json(reached)
    data["club_name"] = club_names.get(event.header.club)
    # For people: the club by name, times in the reader's zone; the rest as in JSON.
    known = Labels(club_names)
    shown = data | {
        "club": f"{known(event.header.club)} ({event.header.club.hex()[:SHORT_HEX]})",
        "audience": known.audience(record.audience),
        "time": format_when(event.header.time_us),
    }
    lines = [
        f"{k:13} {v}"
        for k, v in shown.items()
        if k not in ("payload", "signed", "delivery", "club_name")
    ]
    lines += cli_delivery.event_delivery_lines(reached, club_names)
    if event.payload is None:
        lines.append("payload       [erased]")
    else:
        payload: dict[str, object] = data["payload"] or {}
        lines += [
            f"  {k}: {format_when(v) if isinstance(v, dt.datetime) else v}"
            for k, v in payload.items()
            if v not in (None, "")
        ]
    return Output(data, lines)  # one field a line, whole: `show` is the event in full


async def _held_apart_event(node: Node, ref: str) -> Output | None:
    """`show` of an event a key event moved out of its log (protocol.md §2.2): said in
    words, with why; it is kept as evidence and never served."""
    text = ref.strip().lower()
    found = [
        h
        for h in await node.store.held_apart()
        if canonical.sha256(h.signed).hex().startswith(text)
    ]
    if len(text) < 6 or len(found) != 1:
        return None
    h = found[0]
    header = canonical.decode_header(h.signed)
    data = {
        "id": canonical.sha256(h.signed).hex(),
        "club": h.club.hex(),
        "log": h.log.hex(),
        "seq": h.seq,
        "key": header.key.hex(),
        "held_apart": True,
        "reason": h.reason,
    }
    lines = [f"{k:13} {v}" for k, v in data.items() if k != "held_apart"]
    lines.append(
        "held apart: outside its key's window after a key event of the club; kept as "
        "evidence, not in the log, never served or relayed"
    )
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
        known = await known_labels(node)
        now_us = node.clock()
        reached = await delivery.deliveries(node.store, node.club)  # node/delivery.py
        safe_data, safe_lines = await safety.status(node)  # restore (§3.6), recovery (§2.1)
        held_apart = await node.store.held_apart()  # protocol.md §2.2
        epochs = node.keys.history(node.club)
        assert epochs is not None
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
                    "club_name": known.names.get(r.club),  # None: no name known here
                }
                for r in logs
            ],
            "forks": [{"club": f.club.hex(), "log": f.log.hex(), "seq": f.seq} for f in forks],
            "peers": [peer_json(p) for p in peer_list],  # per-peer sync status (DESIGN 12)
            "delivery": cli_delivery.delivery_json(reached),
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
            **safe_data,
            "signing_key": {"key": epochs.current.key.hex(), "since": epochs.current.n},
            "held_apart": [
                {"club": h.club.hex(), "log": h.log.hex(), "seq": h.seq, "reason": h.reason}
                for h in held_apart
            ],
        }
    lines = [
        f"club     {node.config.club.name}",
        f"id       {node.club.hex()}",
        "key      "
        + (
            "club key and store key sealed with the passphrase"
            if encrypted
            else "UNENCRYPTED on disk: club.key holds the store key, so a copy of this "
            "directory reads every log and signs as the club"
        ),
        f"signing  key {short(epochs.current.key)} "
        + (
            "(the genesis key)"
            if epochs.current.n == 0
            else f"(since seq {epochs.current.n} of the keys log)"
        ),
        f"events   {plural(count, 'event')} in {plural(len(logs), 'log')}",
        "logs:",
        *log_table(logs, known, node.club),
    ]
    total = terminal_width()
    for f in forks:
        lines += wrap(f"fork: {audit.describe_fork(f)}", total)
    log_names = {r.id: r.name for r in logs}
    for g in guards:
        name = log_names.get(g.log, "?")
        if g.evidence:
            text = (
                f"HELD BACK: log {name!r}: peer {g.peer} sent a signed event of ours at seq "
                f"{g.seq} (here {held[g.log]}); this node looks restored from an old backup: "
                "run `federation sync` to catch up before posting"
            )
        else:
            text = (
                f"warning: peer {g.peer} claims to hold our log {name!r} up to seq {g.seq} "
                f"(here {held[g.log]}) but did not send those events; an unsigned claim holds "
                "nothing back. If it persists, that peer misreports"
            )
        lines += wrap(text, total)
    for text in safe_lines:
        lines += wrap(text, total)
    for text in held_apart_lines(held_apart, known):
        lines += wrap(text, total)
    lines += ["peers:", *peer_lines(peer_list, now_us, known, {r.id: r for r in logs})]
    lines += delivery_lines(reached, logs, known, now_us)
    lines += [
        f"blocked  {known(c)}"
        + ("" if known(c).startswith("club ") else f" ({c.hex()[:SHORT_HEX]})")
        + f" since {format_when(us)}"
        for c, us in blocked.items()
    ]
    return Output(data, fit(lines, total))


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
        "forks": [
            {"club": f.club.hex(), "log": f.log.hex(), "seq": f.seq, "resolved": f.resolved}
            for f in report.forks
        ],
    }
    lines = [str(p) for p in report.problems] + [audit.describe_fork(f) for f in report.forks]
    # protocol.md §2.2, §3.6: a fork no later key event carried on fails verify too.
    unresolved = report.unresolved
    data["ok"] = report.ok and not unresolved
    verdict = "ok" if report.ok else f"FAILED: {plural(len(report.problems), 'problem')}"
    if report.ok and unresolved:
        verdict = (
            f"FAILED: {plural(len(unresolved), 'unresolved fork')}; for this club's own logs run "
            "`federation key rotate` to carry them on"
        )
    lines.append(
        f"verify {verdict}: {plural(report.events, 'event')} ({report.erased} erased) in "
        f"{plural(report.logs, 'log')} of {plural(report.clubs, 'club')}"
    )
    return Output(data, lines, exit_code=0 if data["ok"] else 1)


async def cmd_erase(args: argparse.Namespace) -> Output:
    """protocol.md §3.5: our own event is erased everywhere, by a signed erasure event
    that travels with its log; another club's is wiped here only. Done by the running
    node when there is one (node/control.py)."""
    done = await control.write(Path(args.node), {"op": "erase", "event": args.event})
    erased = msgspec.json.decode(done, type=control.Erased)
    event, record, h = erased.event, erased.record, erased.event.header
    data: dict[str, Any] = {"id": event.id.hex(), "log": h.log.hex(), "seq": h.seq}
    data |= {"erased": True, "everywhere": erased.everywhere}
    if not erased.everywhere:
        return Output(
            data,
            [
                f"wiped this node's copy of the payload of {event.id.hex()} (seq {h.seq}), "
                "another club's event; its signed header stays",
                "other copies remain: at the club that wrote it and at every node it "
                "reached; only that club can erase it everywhere",
            ],
        )
    if erased.erasure is None:
        return Output(data, [f"{event.id.hex()} is erased already, everywhere"])
    erasure, reached = erased.erasure, erased.received_by
    data |= {"erasure": erasure.id.hex(), "received_by": [p.club.hex() for p in reached]}
    lines = [
        f"erased the payload of {event.id.hex()} (seq {h.seq}) here, and posted erasure "
        f"{erasure.id.hex()[:12]} (seq {erasure.header.seq}) that every node holding it honours",
    ]
    if record.audience.kind == "private":
        lines.append("the log is private: no other club received it")
    else:
        names = ", ".join(p.name for p in reached)
        lines.append(
            f"at least {plural(len(reached), 'club')} had received the payload from this node"
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
    safety.add_export_sealing_arguments(c)


async def cmd_export(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        logs = await _select_logs(node, args.log)
        if args.audience:
            audience = await naming.parse_audience(node, args.audience)  # names too
            logs = [r for r in logs if r.audience == audience]
        # protocol.md §8: an export holding any non-public log is sealed (age).
        return await safety.export(node, logs, args)


def add_import_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("file", metavar="FILE", help="the export file, or - for standard input")
    c.add_argument(
        "--identity", metavar="FILE", help="age identity file, for an export sealed with --to"
    )


async def cmd_import(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        report = await safety.import_file(node, args)
    lines = [
        f"imported {plural(report.added, 'new event')} ({report.already} already held)"
        + (f"; {plural(report.forks, 'fork')} kept as evidence" if report.forks else "")
    ]
    return Output(msgspec.structs.asdict(report), lines)
