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
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from federation.cli import safety
from federation.cli.names import SHORT_HEX, Labels, known_labels
from federation.cli.output import Output, format_when, plural
from federation.cli.table import Column, fit, table, terminal_width
from federation.core.naming import full_id
from federation.errors import FederationError, UsageError
from federation.node import control, proposals
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


def _club_of(known: Labels) -> Callable[[str], str]:
    """A club named in a proposal (64 hex digits) as people know it; other text as is."""

    def club(text: str) -> str:
        whole = full_id(text)
        return known(whole) if whole is not None and len(text) == 64 else text

    return club


def _lines(
    o: Outcome, known: Labels, delivery: dict[str, dict[str, object]] | None = None
) -> list[str]:
    """`proposal show` for people: clubs by name, times in the reader's zone."""
    club = _club_of(known)
    v = o.version
    lines = [
        f"proposal {o.proposal[:SHORT_HEX]}  {o.state}",
        f"  {v.title}",
        f"  version {v.id[:SHORT_HEX]} by {club(v.author)}; "
        f"{plural(len(o.versions), 'version')} in all",
        f"  rule {o.rule}; deadline {format_when(v.deadline_us)}; proposer {club(o.proposer)}",
    ]
    if v.aims:
        lines.append(f"  aims: {v.aims}")
    lines += [f"  asks {'every club' if k == '*' else club(k)}: {t}" for k, t in v.asks.items()]
    lines += [
        f"  action: {a['what']} @ {a['where'] or '?'}, {_when(a['starts'])}" for a in v.actions
    ]
    lines += [f"  accepted by {club(c)}: {a.text}" for c, a in o.accepted.items()]
    lines += [f"  declined by {club(c)}: {a.text}" for c, a in o.declined.items()]
    if o.missing:
        lines.append(f"  still needed: {', '.join(club(m) for m in o.missing)}")
    if o.unknown:
        lines.append(
            f"  undecided here: {plural(len(o.unknown), 'step')} held without payload; sync"
        )
    lines += [f"  ignored {i.event[:SHORT_HEX]} from {club(i.club)}: {i.reason}" for i in o.ignored]
    for to, d in (delivery or {}).items():
        versions = d["versions"]
        assert isinstance(versions, dict)
        seen = ", ".join(f"{k[:SHORT_HEX]} {s}" for k, s in versions.items())
        note = "  (NO ROUTE: no peer of ours lists this club)" if d["route"] == "none" else ""
        lines.append(f"  delivery to {club(to)} ({d['route']}): {seen}{note}")
    return fit(lines, terminal_width())


def _when(value: object) -> str:
    """A planned action's start (a datetime, or its ISO text) in the reader's zone."""
    when = value
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(when, dt.datetime) and when.tzinfo is not None:
        return format_when(when)
    return str(value)


def _list_lines(found: list[Outcome], known: Labels) -> list[str]:
    """`proposal list` for people: a table, the proposer by name."""
    if not found:
        return ["no proposals"]
    club = _club_of(known)
    columns = [
        Column("ID", least=None),
        Column("STATE", least=None),
        Column("TITLE", least=12, weight=2),
        Column("FROM", least=10),
    ]
    rows = [(o.proposal[:SHORT_HEX], o.state, o.version.title, club(o.proposer)) for o in found]
    return table(columns, rows, terminal_width())


async def cmd_proposal(args: argparse.Namespace) -> Output:
    if args.action == "verify":
        return _verify(Path(args.file))
    if args.action not in _READS:  # it signs: done by the running node if there is one
        return await _sign(args)
    if args.action == "export":
        _check_new(args.output)  # before any work, as `export` and `backup` do
    async with await Node.open(Path(args.node)) as node:
        return await _on_node(node, args)


async def _sign(args: argparse.Namespace) -> Output:
    """A proposal action that signs, as a control request (node/control.py
    `ProposalStep`, where the options are read and the rules applied)."""
    a = args.action
    request: dict[str, object] = {"op": "proposal", "action": a}
    for name in ("proposal", "title", "to", "deadline", "at_least", "aims", "ask", "actions"):
        if getattr(args, name, None) is not None:
            request[name] = getattr(args, name)
    if a in ("accept", "decline", "retract", "withdraw", "update"):
        request["text"] = args.text
    if a == "feed":
        request["shown"] = args.choice == "show"
    if a == "update":
        request["public"] = args.public
    done = await control.write(Path(args.node), request)
    if a == "feed":
        return _feed(msgspec.json.decode(done, type=proposals.FeedChoice))
    eid = msgspec.json.decode(done, type=control.Signed).event
    if a == "new":
        return Output({"proposal": eid.hex()}, [f"proposed: {eid.hex()}"])
    if a == "amend":
        return Output({"version": eid.hex()}, [f"amended: new version {eid.hex()}"])
    return Output({"event": eid.hex()}, [f"{a}: signed {eid.hex()}"])


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
            f"erased {plural(len(choice.erased), 'public step')} of it everywhere they went "
            "(protocol.md §3.5); anyone may have read or kept a copy before"
        )
    if not choice.published and not choice.erased:
        lines.append("this club's public feed already showed this choice: nothing more posted")
    return Output(msgspec.to_builtins(choice), lines)


def _exists(path: str) -> str:
    return f"{path} already exists and proposal export never overwrites; choose another -o"


def _check_new(path: str) -> None:
    if os.path.lexists(path):
        raise UsageError(_exists(path))


def _write(path: Path, data: bytes) -> None:
    """A new file, 0600, like every file the node writes (export, backup): never over
    an existing one (`-o club.key` in the node directory would destroy the key)."""
    safety.write_new_file(str(path), data, command="proposal export", option="-o")


async def _on_node(node: Node, args: argparse.Namespace) -> Output:
    a = args.action
    if a == "list":
        found = await proposals.outcomes(node)
        lines = _list_lines(found, await known_labels(node))
        return Output([msgspec.to_builtins(o) for o in found], lines)
    if a == "show":
        o = await proposals.find(node, args.proposal)
        d = await proposals.delivery(node, o) if node.club.hex() == o.proposer else None
        known = await known_labels(node)
        return Output({**msgspec.to_builtins(o), "delivery": d}, _lines(o, known, d))
    if a == "export":
        data = await proposals.export(node, args.proposal)
        _write(Path(args.output), data)
        return Output({"file": args.output, "bytes": len(data)}, [f"wrote {args.output}"])
    raise FederationError(f"unknown action {a}")  # pragma: no cover - argparse allows no other
