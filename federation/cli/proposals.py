"""`federation proposal ...`: joint campaign proposals between clubs (protocol.md §3.7).

new, amend, accept, decline, retract, withdraw, feed and update sign steps through
`node/proposals.py`; list and show read the pure view; export writes the agreement
record and verify checks one offline, with no node (protocol.md §3.8). Titles, aims
and commitments are other clubs' text: they reach people only through `Output`
lines, which cli/output.py makes safe to display.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import msgspec

from federation.cli.output import Output, format_time
from federation.errors import FederationError, UsageError
from federation.node import proposals
from federation.node.node import Node
from federation.views.agreement import MAX_RECORD_BYTES, check_record
from federation.views.proposals import Outcome

_READS = ("list", "show", "export", "verify")


def add_arguments(c: argparse.ArgumentParser) -> None:
    sub = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = sub.add_parser("new", help="propose a joint campaign to named clubs")
    new.add_argument("--title", required=True)
    new.add_argument(
        "--to",
        required=True,
        action="append",
        metavar="CLUB",
        help="an invited club (peer name or club id prefix); repeat for each",
    )
    new.add_argument("--deadline", required=True, help="answers by, e.g. 2026-12-20T18:00Z")
    new.add_argument(
        "--at-least",
        type=int,
        metavar="K",
        help="agreed once K invited clubs accept (default: every invited club)",
    )
    _version_options(new)
    amend = sub.add_parser("amend", help="a new version of a proposal; it needs fresh answers")
    amend.add_argument("proposal", metavar="ID")
    amend.add_argument("--title")
    amend.add_argument("--deadline")
    _version_options(amend)
    for name, what in (
        ("accept", "accept the current version (with --text: what this club commits)"),
        ("decline", "decline the current version (with --text: why)"),
        ("retract", "take back this club's acceptance, until the proposal is agreed"),
        ("withdraw", "withdraw a proposal this club made"),
        ("update", "post an update (--text) to an agreed proposal's joint campaign"),
    ):
        a = sub.add_parser(name, help=what)
        a.add_argument("proposal", metavar="ID")
        a.add_argument("--text", default="")
    sub.choices["update"].add_argument(
        "--public",
        action="store_true",
        help="post it on this club's public feed instead (the club must show the campaign)",
    )
    feed = sub.add_parser(
        "feed",
        help="show the joint campaign on this club's public feed (its title and aims, "
        "nothing else of the proposal), or hide it (erase what was shown)",
    )
    feed.add_argument("proposal", metavar="ID")
    feed.add_argument("choice", choices=("show", "hide"))
    sub.add_parser("list", help="every proposal held here and its state")
    show = sub.add_parser("show", help="one proposal: versions, answers, delivery")
    show.add_argument("proposal", metavar="ID")
    export = sub.add_parser("export", help="write an agreed proposal's agreement record")
    export.add_argument("proposal", metavar="ID")
    export.add_argument("-o", "--output", required=True, metavar="FILE")
    verify = sub.add_parser("verify", help="check an agreement record offline (no node needed)")
    verify.add_argument("file", metavar="FILE")
    for name in _READS:
        sub.choices[name].add_argument("--json", action="store_true", help="print JSON")


def _version_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aims")
    p.add_argument(
        "--ask",
        action="append",
        default=[],
        metavar="CLUB=TEXT",
        help="what a club (or * for all) is asked to commit; repeatable",
    )
    p.add_argument(
        "--action",
        dest="actions",
        action="append",
        default=[],
        metavar="WHAT@WHERE@STARTS",
        help="a planned action, e.g. 'March@Town hall@2026-12-20T12:00Z'",
    )


def _time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a date-time; use e.g. 2026-12-20T18:00Z") from None
    if t.tzinfo is None:
        raise UsageError(f"{text!r} needs a time zone, e.g. 2026-12-20T18:00Z")
    return t


async def _changes(node: Node, args: argparse.Namespace) -> dict[str, object]:
    asks: dict[str, str] = {}
    for item in args.ask:
        who, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--ask {item!r}: use CLUB=TEXT or *=TEXT")
        key = "*" if who == "*" else (await proposals.resolve_club(node, who)).hex()
        asks[key] = text
    actions: list[dict[str, object]] = []
    for item in args.actions:
        parts = item.split("@")
        if len(parts) != 3:
            raise UsageError(f"--action {item!r}: use WHAT@WHERE@STARTS")
        actions.append({"what": parts[0], "where": parts[1], "starts": _time(parts[2])})
    return {
        "aims": args.aims,
        "asks": asks or None,
        "actions": actions or None,
        "title": getattr(args, "title", None),
        "deadline": _time(args.deadline) if getattr(args, "deadline", None) else None,
    }


def _lines(o: Outcome, delivery: dict[str, dict[str, object]] | None = None) -> list[str]:
    v = o.version
    lines = [
        f"proposal {o.proposal}  {o.state}",
        f"  {v.title}  (version {v.id[:12]} by {v.author[:12]}, {len(o.versions)} version(s))",
        f"  rule {o.rule}; deadline {format_time(v.deadline_us)}; proposer {o.proposer[:12]}",
    ]
    if v.aims:
        lines.append(f"  aims: {v.aims}")
    lines += [f"  asks {k[:12]}: {t}" for k, t in v.asks.items()]
    lines += [f"  action: {a['what']} @ {a['where'] or '?'} on {a['starts']}" for a in v.actions]
    lines += [f"  accepted by {c[:12]}: {a.text}" for c, a in o.accepted.items()]
    lines += [f"  declined by {c[:12]}: {a.text}" for c, a in o.declined.items()]
    if o.missing:
        lines.append(
            f"  still needed: {', '.join(m[:12] if ' ' not in m else m for m in o.missing)}"
        )
    if o.unknown:
        lines.append(f"  undecided here: {len(o.unknown)} step(s) held without payload; sync")
    lines += [f"  ignored {i.event[:12]} from {i.club[:12]}: {i.reason}" for i in o.ignored]
    for club, d in (delivery or {}).items():
        versions = d["versions"]
        assert isinstance(versions, dict)
        seen = ", ".join(f"{k[:12]} {s}" for k, s in versions.items())
        note = "  (NO ROUTE: no peer of ours lists this club)" if d["route"] == "none" else ""
        lines.append(f"  delivery to {club[:12]} ({d['route']}): {seen}{note}")
    return lines


async def cmd_proposal(args: argparse.Namespace) -> Output:
    if args.action == "verify":
        return _verify(Path(args.file))
    async with await Node.open(Path(args.node)) as node:
        return await _on_node(node, args)


def _verify(path: Path) -> Output:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_RECORD_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    o = check_record(data)
    lines = [f"agreement verified: {o.version.title}  (proposal {o.proposal[:12]})"]
    lines += [f"  {c} accepted version {a.version[:12]}: {a.text}" for c, a in o.accepted.items()]
    return Output(msgspec.to_builtins(o), lines)


def _feed(choice: proposals.FeedChoice) -> Output:
    lines = [f"feed: signed {choice.step} (the participants see this club's choice)"]
    lines += [
        f"published {e[:12]} in this club's public log: the joint campaign's title and "
        "aims only (no asks, commitments or other clubs)"
        for e in choice.published
    ]
    if choice.erased:
        lines.append(
            f"erased {len(choice.erased)} public step(s) of it everywhere they went "
            "(protocol.md §3.5); anyone may have read or kept a copy before"
        )
    if not choice.published and not choice.erased:
        lines.append("this club's public feed already showed this choice: nothing more posted")
    return Output(msgspec.to_builtins(choice), lines)


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


async def _on_node(node: Node, args: argparse.Namespace) -> Output:
    a = args.action
    if a == "list":
        found = await proposals.outcomes(node)
        lines = [
            f"{o.proposal[:12]}  {o.state:9} {o.version.title}  (from {o.proposer[:12]})"
            for o in found
        ] or ["no proposals"]
        return Output([msgspec.to_builtins(o) for o in found], lines)
    if a == "show":
        o = await proposals.find(node, args.proposal)
        d = await proposals.delivery(node, o) if node.club.hex() == o.proposer else None
        return Output({**msgspec.to_builtins(o), "delivery": d}, _lines(o, d))
    if a == "export":
        data = await proposals.export(node, args.proposal)
        _write(Path(args.output), data)
        return Output({"file": args.output, "bytes": len(data)}, [f"wrote {args.output}"])
    if a == "new":
        invited = [await proposals.resolve_club(node, ref) for ref in args.to]
        changes = await _changes(node, args)
        rule = "all" if args.at_least is None else f"at_least:{args.at_least}"
        eid = await proposals.propose(
            node,
            title=args.title,
            invited=invited,
            deadline=_time(args.deadline),
            rule=rule,
            aims=str(changes["aims"] or ""),
            asks=changes["asks"],  # type: ignore[arg-type]
            actions=changes["actions"],  # type: ignore[arg-type]
        )
        return Output({"proposal": eid.hex()}, [f"proposed: {eid.hex()}"])
    if a == "amend":
        eid = await proposals.amend(node, args.proposal, await _changes(node, args))
        return Output({"version": eid.hex()}, [f"amended: new version {eid.hex()}"])
    if a in ("accept", "decline", "retract"):
        op = {"accept": "accepted", "decline": "declined", "retract": "retracted"}[a]
        eid = await proposals.answer(node, args.proposal, op, args.text)
    elif a == "withdraw":
        eid = await proposals.withdraw(node, args.proposal)
    elif a == "feed":
        return _feed(await proposals.choose_feed(node, args.proposal, shown=args.choice == "show"))
    elif a == "update":
        eid = await proposals.post_update(node, args.proposal, args.text, public=args.public)
    else:  # pragma: no cover - argparse allows nothing else
        raise FederationError(f"unknown action {a}")
    return Output({"event": eid.hex()}, [f"{a}: signed {eid.hex()}"])
