"""The command line: `federation COMMAND ...` (also `python -m federation`).

Every command is one row of `COMMANDS`: its name, its help, the function that adds its
arguments and the handler that runs it. A handler parses nothing and prints nothing
for its result: it returns an `Output`, printed here (cli/output.py) as lines for
people or, with --json, one JSON document for scripts. Errors are one line on stderr;
exit 1 for operational failures, 2 for usage and config errors.

Modules: main (this table) -> club, views, peering, blocking (the commands) -> output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from federation.cli import blocking, club, evidence, peering, proposals, views
from federation.cli.output import Output, escape_unsafe, say, write
from federation.errors import FederationError

NODE_ENV = "FEDERATION_NODE"

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, Output]]


def _no_arguments(c: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Command:
    help: str
    handler: Handler
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    json: bool = True  # takes --json


# In the order `federation --help` lists them.
COMMANDS: dict[str, Command] = {
    "init": Command(
        "create a node for a new club and print its club id",
        club.cmd_init,
        club.add_init_arguments,
    ),
    "post": Command(
        "sign an event into one of the club's logs", club.cmd_post, club.add_post_arguments
    ),
    "log": Command("list events, newest last", club.cmd_log, club.add_log_arguments),
    "show": Command("show one event in full", club.cmd_show, club.add_event_argument),
    "status": Command("the club, its logs, forks and what the node holds", club.cmd_status),
    "verify": Command("check every chain, payload and signature held", club.cmd_verify),
    "verify-event": Command(
        "check a signed event saved from a feed (/events/ID), offline",
        evidence.cmd_verify_event,
        evidence.add_verify_event_arguments,
    ),
    "erase": Command(
        "drop an event's payload; its signed header stays and still verifies",
        club.cmd_erase,
        club.add_event_argument,
    ),
    "export": Command(
        "write logs as JSON lines (protocol.md §8)", club.cmd_export, club.add_export_arguments
    ),
    "import": Command(
        "verify and add the events of a JSON-lines export",
        club.cmd_import,
        club.add_import_arguments,
    ),
    "invite": Command(
        "print this club's invite, to give another club in person",
        peering.cmd_invite,
        peering.add_invite_arguments,
    ),
    "peers": Command(
        "the clubs this club federates with", peering.cmd_peers, peering.add_peers_arguments
    ),
    "sync": Command(
        "one sync round with every active peer, or one",
        peering.cmd_sync,
        peering.add_sync_arguments,
    ),
    "block": Command(
        "drop a club's logs and refuse them from now on (not a peer: remove it first)",
        blocking.cmd_block,
        blocking.add_club_argument,
    ),
    "unblock": Command(
        "take a blocked club's logs from peers again",
        blocking.cmd_unblock,
        blocking.add_club_argument,
    ),
    "blocked": Command("the clubs this node blocked", blocking.cmd_blocked),
    "run": Command(
        "serve peers and sync with every peer, until stopped", peering.cmd_run, json=False
    ),
    "rebuild": Command("recompute campaigns and calendar from nothing", views.cmd_rebuild),
    "calendar": Command("the actions in the club's logs, by date", views.cmd_calendar),
    "campaigns": Command("the campaigns and their state", views.cmd_campaigns),
    "proposal": Command(
        "joint campaign proposals: new, list, show, accept, decline, amend, withdraw, "
        "export, verify",
        proposals.cmd_proposal,
        proposals.add_arguments,
        json=False,  # each reading action takes its own --json
    ),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, what was wrong and where to look, exit 2 (argparse prints usage too).
        # The message may quote an argument, so it is made safe to display.
        self.exit(2, f"federation: error: {escape_unsafe(message)} (see `{self.prog} --help`)\n")


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
    for name, command in COMMANDS.items():
        c = sub.add_parser(name, help=command.help, description=command.help)
        if command.json:
            c.add_argument("--json", action="store_true", help="print JSON for scripts")
        command.add_arguments(c)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = COMMANDS[args.command]
    try:
        result = asyncio.run(command.handler(args))
    except FederationError as exc:
        # The message may quote a peer (its error text, a name from its invite).
        say(f"federation: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        say("federation: interrupted", file=sys.stderr)
        return 130
    write(result, as_json=getattr(args, "json", False))
    return result.exit_code


def run() -> None:
    sys.exit(main())
