"""The command line: `federation COMMAND ...` (also `python -m federation`).

Every command is one row of `COMMANDS`: its name, its help, the function that adds its
arguments and the handler that runs it. A handler parses nothing and prints nothing
for its result: it returns an `Output`, printed here (cli/output.py) as lines for
people or, with --json, one JSON document for scripts. Errors are one line on stderr
(one JSON object under --json); exit 1 for operational failures, 2 for usage and
config errors, 130 when interrupted (Ctrl-C); `run` stopped by Ctrl-C or SIGTERM
exits 0 (cli/stop.py). A closed pipe (`federation export | head`) ends quietly.

Modules: main (this table) -> club, post, views, peering, blocking, ... (the commands,
imported when chosen) -> output.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence

from federation.cli.output import Output, escape_unsafe, say, write, write_error
from federation.errors import FederationError, UsageError
from federation.node import system

# Not `from typing import TYPE_CHECKING`: the typing module is a short command's
# start-up cost too (type checkers honour this spelling).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    # A handler returns its Output, or a coroutine for it (run here under asyncio).
    Handler = Callable[[argparse.Namespace], Output | Coroutine[Any, Any, Output]]

NODE_ENV = "FEDERATION_NODE"


class Command:
    """One command. `handler` and `add_arguments` are "module:function", imported only
    when that command runs: a short command such as `post` through the running node
    must not pay for importing every other command's modules (aiohttp, cryptography,
    aiosqlite, jinja2 cost most of a second), nor asyncio when it needs none. (A
    plain class: the dataclasses module alone costs a tenth of that budget.) Either
    may also be the function itself."""

    __slots__ = ("add_arguments", "handler", "help", "json")

    def __init__(
        self,
        help: str,
        handler: str | Handler,
        add_arguments: str | Callable[[argparse.ArgumentParser], None] = "",
        json: bool = True,  # takes --json
    ) -> None:
        self.help = help
        self.handler = handler
        self.add_arguments = add_arguments
        self.json = json


def _resolve(name: str | Callable[..., Any]) -> Any:
    if not isinstance(name, str):
        return name
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


# In the order `federation --help` lists them.
COMMANDS: dict[str, Command] = {
    "init": Command(
        "create a node for a new club and print its club id",
        "federation.cli.club:cmd_init",
        "federation.cli.club:add_init_arguments",
    ),
    "post": Command(
        "sign an event into one of the club's logs",
        "federation.cli.post:cmd_post",
        "federation.cli.post:add_post_arguments",
    ),
    "log": Command(
        "list events, newest last",
        "federation.cli.club:cmd_log",
        "federation.cli.club:add_log_arguments",
    ),
    "show": Command(
        "show one event in full",
        "federation.cli.club:cmd_show",
        "federation.cli.club:add_event_argument",
    ),
    "status": Command(
        "the club, its logs, forks and what the node holds", "federation.cli.club:cmd_status"
    ),
    "verify": Command(
        "check every chain, payload and signature held", "federation.cli.club:cmd_verify"
    ),
    "verify-event": Command(
        "check a signed event saved from a feed (/events/ID), offline",
        "federation.cli.evidence:cmd_verify_event",
        "federation.cli.evidence:add_verify_event_arguments",
    ),
    "erase": Command(
        "drop an event's payload; its signed header stays and still verifies",
        "federation.cli.club:cmd_erase",
        "federation.cli.club:add_event_argument",
    ),
    "export": Command(
        "write logs as JSON lines (protocol.md §8)",
        "federation.cli.club:cmd_export",
        "federation.cli.club:add_export_arguments",
    ),
    "import": Command(
        "verify and add the events of a JSON-lines export",
        "federation.cli.club:cmd_import",
        "federation.cli.club:add_import_arguments",
    ),
    "backup": Command(
        "write an encrypted backup of this node, running or not",
        "federation.cli.safety:cmd_backup",
        "federation.cli.safety:add_backup_arguments",
    ),
    "restore": Command(
        "restore a backup into a new node directory (it writes again after a sync)",
        "federation.cli.safety:cmd_restore",
        "federation.cli.safety:add_restore_arguments",
    ),
    "declare-no-copies": Command(
        "after a restore: declare that no other node holds these logs",
        "federation.cli.safety:cmd_declare",
        "federation.cli.safety:add_declare_arguments",
    ),
    "recovery": Command(
        "the club's recovery secret: move-off (an older node's recovery.key)",
        "federation.cli.safety:cmd_recovery",
        "federation.cli.safety:add_recovery_arguments",
        json=False,  # move-off takes its own --json
    ),
    "key": Command(
        "the club's signing key: rotate, revoke (after a seizure, with the recovery "
        "secret), status",
        "federation.cli.keys:cmd_key",
        "federation.cli.keys:add_arguments",
        json=False,  # each action takes its own --json
    ),
    "invite": Command(
        "print this club's invite, to give another club in person",
        "federation.cli.peering:cmd_invite",
        "federation.cli.peering:add_invite_arguments",
    ),
    "peers": Command(
        "the clubs this club federates with",
        "federation.cli.peering:cmd_peers",
        "federation.cli.peering:add_peers_arguments",
    ),
    "sync": Command(
        "one sync round with every active peer, or one",
        "federation.cli.peering:cmd_sync",
        "federation.cli.peering:add_sync_arguments",
    ),
    "block": Command(
        "drop a club's logs and refuse them from now on (not a peer: remove it first)",
        "federation.cli.blocking:cmd_block",
        "federation.cli.blocking:add_club_argument",
    ),
    "unblock": Command(
        "take a blocked club's logs from peers again",
        "federation.cli.blocking:cmd_unblock",
        "federation.cli.blocking:add_club_argument",
    ),
    "blocked": Command("the clubs this node blocked", "federation.cli.blocking:cmd_blocked"),
    "run": Command(
        "serve peers and sync with every peer, until stopped",
        "federation.cli.peering:cmd_run",
        "federation.cli.peering:add_run_arguments",
        json=False,
    ),
    "rebuild": Command(
        "recompute campaigns and calendar from nothing", "federation.cli.views:cmd_rebuild"
    ),
    "calendar": Command(
        "upcoming actions (--past: those over), by date; --ics FILE writes iCalendar",
        "federation.cli.views:cmd_calendar",
        "federation.cli.views:add_calendar_arguments",
    ),
    "campaigns": Command("the campaigns and their state", "federation.cli.views:cmd_campaigns"),
    "proposal": Command(
        "joint campaign proposals: new, list, show, accept, decline, amend, withdraw, "
        "export, verify",
        "federation.cli.proposals:cmd_proposal",
        "federation.cli.proposals:add_arguments",
        json=False,  # each reading action takes its own --json
    ),
}


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviated options: a typo (`--nod`, `--to` for a longer option) must be an
        # error, never another option run in its place. Every command's and action's
        # parser is a _Parser (add_subparsers defaults to the parent's class).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # One line, what was wrong and where to look, exit 2 (argparse would print usage
        # too), printed as every other error is (as JSON under --json) by `main`. The
        # message may quote an argument, so it is made safe to display.
        raise UsageError(f"{escape_unsafe(message)} (see `{self.prog} --help`)")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # A misspelt command or action (`stauts`) names the close one, if there is one.
        if action.choices is not None and value not in action.choices:
            close = _close(str(value), [str(choice) for choice in action.choices])
            if close:
                raise argparse.ArgumentError(action, f"invalid choice: {value!r}{close}")
        super()._check_value(action, value)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every add_argument, and the default one imports
        # shutil (with bz2 and lzma) for the terminal's width: a fifth of `post`'s time
        # through the running node. The width as shutil reads it, less its margin of 2.
        return argparse.HelpFormatter(prog=self.prog, width=_columns() - 2)


def _close(word: str, known: Sequence[str]) -> str:
    """The words "; did you mean `X`?" for the one of `known` closest to a misspelt
    `word`, or none."""
    import difflib  # only on this error: see Command

    # 0.75, not difflib's 0.6: `--json` is not close to `--version`, `sycn` is to `sync`.
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.75)
    return f"; did you mean `{close[0]}`?" if close else ""


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """`parser.parse_args(argv)`, with an unrecognized argument pointed at the --help of
    the parser it was given to (`post note --txt`: `federation post --help`), and an
    unknown option before the command named as such: `--nod b status` is about --nod,
    not about a command `b`."""
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--" or not word.startswith("-"):
            break
        option, equals, _ = word.partition("=")
        options = parser._option_string_actions
        if option not in options:
            command = _given(parser, argparse.Namespace(command=_chosen(argv)))
            if option in command._option_string_actions:  # `--json status`
                command.error(f"{word} goes after the command, not before it")
            parser.error(f"unrecognized arguments: {word}{_close(option, list(options))}")
        known = options[option]
        skip = known.nargs != 0 and not equals
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        given = _given(parser, args)
        typos = [word.partition("=")[0] for word in unknown if word.startswith("--")]
        close = _close(typos[0], list(given._option_string_actions)) if typos else ""
        given.error(f"unrecognized arguments: {' '.join(unknown)}{close}")
    return args


def _given(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost parser `args` went through: the command's, or its action's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _given(action.choices[chosen], args)
    return parser


def _columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def _chosen(argv: Sequence[str]) -> str | None:
    """The command named in `argv`: the first word that is not an option or --node's
    value. Only its arguments are added to the parser (each command's module is
    imported to add them); the others are listed by name and help alone. None for
    `federation --help COMMAND`, which lists them all."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--node":
            skip = True
        elif word in ("-h", "--help"):
            return None
        elif not word.startswith("-"):
            return word
    return None


class _Version(argparse.Action):
    """`--version`: the installed package's version, looked up only when asked for
    (importlib.metadata costs a short command's start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("federation")
        except PackageNotFoundError:  # run from a source tree that was never installed
            found = "unknown (not installed)"
        say(f"federation {found}")
        parser.exit(0)


_NODE_HELP = f"node directory (default: ${NODE_ENV} or the current directory)"


def _node_after_command(parser: argparse.ArgumentParser) -> None:
    """`--node` after the command too (`status --node A`, `peers list --node A`), as
    README promises: on the command's parser and each of its actions' parsers, with no
    default, so that a --node given before the command stands unless one comes after."""
    if "--node" not in parser._option_string_actions:
        parser.add_argument("--node", default=argparse.SUPPRESS, help=_NODE_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in dict.fromkeys(action.choices.values()):
                _node_after_command(nested)


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    chosen = _chosen(argv)
    p = _Parser(
        prog="federation",
        description="A club's node: signed logs of actions, reports and campaigns.",
    )
    p.add_argument("--version", action=_Version, help="print the version and exit")
    p.add_argument("--node", default=os.environ.get(NODE_ENV, "."), help=_NODE_HELP)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, command in COMMANDS.items():
        # A known command gets its parser alone: argparse looks for translations on
        # disk for each parser it makes (~30 of them), more than all of `post`'s own
        # work. The full list is for --help and for a misspelt command's error.
        if chosen in COMMANDS and name != chosen:
            continue
        c = sub.add_parser(name, help=command.help, description=command.help)
        if name != chosen:
            continue
        if command.json:
            c.add_argument("--json", action="store_true", help="print JSON for scripts")
        if command.add_arguments:
            _resolve(command.add_arguments)(c)
        _node_after_command(c)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # Every file the node writes (store, WAL, SHM, keys, config, exports, backups, the
    # control socket) is its owner's alone, whatever the shell's umask (DESIGN 21).
    os.umask(0o077)
    # Nor is its memory (keys, decrypted payloads) ever written out as a core dump.
    system.keep_memory_off_disk()
    argv = sys.argv[1:] if argv is None else argv
    # `run` catches Ctrl-C and SIGTERM from its first moment (cli/stop.py): a stop
    # while the modules still load ends as cleanly as one while it serves.
    running = _chosen(argv) == "run"
    stopped: tuple[type[BaseException], ...] = ()  # what a stop raises (none: no stop)
    as_json = "--json" in argv  # until parsed: a usage error is JSON too if asked for
    try:
        if running:
            from federation.cli import stop

            stopped = (stop.Stopped,)
            stop.catch()
        args = _parse(_parser(argv), argv)
        as_json = bool(getattr(args, "json", False))
        handler: Handler = _resolve(COMMANDS[args.command].handler)
        result = handler(args)
        if not isinstance(result, Output):
            import asyncio  # only for a command that needs it: see Command

            result = asyncio.run(result)
        write(result, as_json=as_json)
    except FederationError as exc:
        # The message may quote a peer (its error text, a name from its invite).
        write_error(str(exc), int(exc.exit_code), as_json)
        return int(exc.exit_code)
    except stopped:  # `run` asked to stop before the node was up: still a stop
        from federation.cli import stop

        return stop.report_stopped(as_json="--log-json" in argv)
    except KeyboardInterrupt:
        write_error("interrupted", 130, as_json)
        return 130
    except BrokenPipeError:
        return _pipe_closed()
    return result.exit_code


def _pipe_closed() -> int:
    """The reader of our output went away (`federation export | head`): end quietly.
    As Python's documentation of SIGPIPE advises: point standard output at devnull, so
    that the flush at exit does not fail a second time, and exit 1."""
    import contextlib  # only here: see Command

    # OSError, ValueError: no real standard output to replace (a test's capture).
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


def run() -> None:
    sys.exit(main())
