"""The command line: `federation COMMAND ...` (also `python -m federation`).

Each command parses its arguments, calls the node, and prints either lines for
people or, with --json, one JSON document for scripts. Errors are one line on
stderr; exit 1 for operational failures, 2 for usage and config errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import msgspec

from federation.cli import club, peering
from federation.errors import FederationError

NODE_ENV = "FEDERATION_NODE"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, what was wrong and where to look, exit 2 (argparse prints usage too).
        self.exit(2, f"federation: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="federation",
        description="A club's node: signed logs of actions, reports and campaigns.",
    )
    p.add_argument(
        "--node",
        default=os.environ.get(NODE_ENV, "."),
        help=f"node directory (default: ${NODE_ENV} or the current directory)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help: str, json: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        if json:
            c.add_argument("--json", action="store_true", help="print JSON for scripts")
        return c

    c = cmd("init", "create a node for a new club and print its club id")
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

    c = cmd("post", "sign an event into one of the club's logs")
    club.add_post_arguments(c)

    c = cmd("log", "list events, newest last")
    c.add_argument("--log", help="only this log (name or id prefix)")
    c.add_argument("--kind", help="only this kind (note, action, report, campaign)")
    c.add_argument("--club", help="only this club (id prefix)")
    c.add_argument(
        "--limit", type=int, default=50, help="at most this many, the latest (default 50)"
    )

    c = cmd("show", "show one event in full")
    c.add_argument("event", metavar="EVENT", help="event id or a prefix of 8+ hex digits")

    cmd("status", "the club, its logs, forks and what the node holds")
    cmd("verify", "check every chain, payload and signature held")

    c = cmd("erase", "drop an event's payload; its signed header stays and still verifies")
    c.add_argument("event", metavar="EVENT", help="event id or a prefix of 8+ hex digits")

    c = cmd("export", "write logs as JSON lines (protocol.md §8)")
    c.add_argument("--log", help="only this log (name or id prefix)")
    c.add_argument("--audience", help="only logs with this audience")
    c.add_argument("-o", "--output", help="file to write (default: standard output)")

    c = cmd("import", "verify and add the events of a JSON-lines export")
    c.add_argument("file", metavar="FILE", help="the export file, or - for standard input")

    c = cmd("invite", "print this club's invite, to give another club in person")
    c.add_argument("--url", help="the address other clubs reach this node at")

    c = cmd("peers", "the clubs this club federates with")
    peer_sub = c.add_subparsers(dest="peers_command", metavar="ACTION", parser_class=_Parser)

    def peer_action(name: str, help: str) -> argparse.ArgumentParser:
        a = peer_sub.add_parser(name, help=help)
        # `peers list --json` as well as `peers --json list`; SUPPRESS keeps the latter's.
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        return a

    peer_action("list", "each peer with its sync status")
    a = peer_action("add", "federate with the club of an invite")
    a.add_argument("invite", metavar="INVITE")
    for action, text in (
        ("pause", "stop syncing with a peer for now"),
        ("resume", "sync with a paused peer again"),
        ("remove", "stop federating with a peer (signed into the roster)"),
    ):
        a = peer_action(action, text)
        a.add_argument("peer", metavar="PEER", help="the peer's name or club id prefix")

    c = cmd("sync", "one sync round with every active peer, or one")
    c.add_argument("peer", metavar="PEER", nargs="?", help="the peer's name or club id prefix")

    cmd("run", "serve peers and sync with every peer, until stopped", json=False)

    cmd("rebuild", "recompute campaigns and calendar from nothing")
    cmd("calendar", "the actions in the club's logs, by date")
    cmd("campaigns", "the campaigns and their state")
    return p


Handler = Callable[[argparse.Namespace], Awaitable[club.Output]]


async def _call(handler: Handler, args: argparse.Namespace) -> club.Output:
    return await handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    module = peering if hasattr(peering, "cmd_" + args.command) else club
    handler: Handler = getattr(module, "cmd_" + args.command)
    try:
        result: club.Output = asyncio.run(_call(handler, args))
    except FederationError as exc:
        print(f"federation: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("federation: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(result.data)) + b"\n")
    else:
        for line in result.lines:
            print(line)
    sys.stdout.flush()
    return result.exit_code


def run() -> None:
    sys.exit(main())
