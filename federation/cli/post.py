"""`federation post`: sign an event into one of the club's logs.

A club logging its month by script posts hundreds of times, so this command is kept
short: it parses its options, and sends them to the node running here through its
control socket (node/control_client.py), which signs with the key it holds and
stores the event. Only when no node runs does it open the store itself
(node/control.py `perform_here`, the same calls). On the first path this module and
what it imports are the standard library alone: no asyncio, msgspec, cryptography
or store, which together take longer than the whole round trip (bench/RESULTS.md).
The rules (which kinds, which fields, audiences and names, the restore guard) are
the node's: this module only maps options to the request.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Coroutine
from pathlib import Path

from federation.cli.output import Output, say
from federation.core.when import zoned_time
from federation.errors import ControlError, UsageError
from federation.node.control_client import call

TYPE_CHECKING = False  # not imported from typing: see the module's docstring
if TYPE_CHECKING:
    from typing import Any

_POST_FIELDS: dict[str, list[tuple[str, str, type]]] = {
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


def _datetime(option: str, text: str) -> str:
    """`text` as an ISO 8601 time with its zone, in the form the payload keeps."""
    return zoned_time(text, f"--{option}").isoformat()


def add_post_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("kind", metavar="KIND", help="note, action, report or campaign")
    c.add_argument(
        "--audience",
        default="private",
        help="private (default), federation, public, or clubs:CLUB[,CLUB...] (each a "
        "club's name or 6+ hex digits of its id)",
    )
    c.add_argument("--log", help="the log's name (default: named after the audience)")
    c.add_argument(
        "--yes",
        action="store_true",
        help="confirm without asking (scripts): e.g. a report into a public log",
    )
    seen: set[str] = set()
    for fields in _POST_FIELDS.values():
        for name, help, type_ in fields:
            if name not in seen:
                seen.add(name)
                c.add_argument(f"--{name}", type=type_, help=help)


def post_request(args: argparse.Namespace) -> dict[str, Any]:
    """The control request for the options given (node/control.py `Post`)."""
    given = {
        name: getattr(args, name)
        for fields in _POST_FIELDS.values()
        for name, _, _ in fields
        if getattr(args, name) is not None
    }
    for name in ("starts", "ends"):
        if name in given:
            given[name] = _datetime(name, given[name])
    allowed = _POST_FIELDS.get(args.kind.lower())
    if allowed is not None:  # an unknown kind is named by the node, with the known ones
        extra = sorted(set(given) - {name for name, _, _ in allowed})
        if extra:
            raise UsageError(
                f"--{extra[0]} does not apply to {args.kind.lower()}; it takes "
                + ", ".join(f"--{n}" for n, _, _ in sorted(allowed))
            )
    return {
        "op": "post",
        "kind": args.kind,
        "fields": given,
        "audience": args.audience,
        "log": args.log,
        "confirmed": args.yes,
    }


def confirm(question: str) -> bool:
    """Ask a person at a terminal to confirm (node/rails.py decides what needs it); with
    no terminal, False: the caller's refusal then says to pass --yes."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    say(f"federation: {question.removesuffix(', or pass --yes')}", file=sys.stderr)
    sys.stderr.write("post it? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_post(args: argparse.Namespace) -> Output | Coroutine[Any, Any, Output]:
    request = post_request(args)
    root = Path(args.node)
    try:
        done = call(root, request)
    except ControlError as exc:
        if exc.kind != "ConfirmationNeeded" or not confirm(str(exc)):
            raise
        done = call(root, request | {"confirmed": True})
    if done is None:  # no node runs here: open the store (and unlock the key) ourselves
        return _post_here(root, request, args.json)
    return _output(done, args.json)


async def _post_here(root: Path, request: dict[str, Any], as_json: bool) -> Output:
    from federation.node.control import perform_here

    return _output(await perform_here(root, request, confirm), as_json)


def _audience(audience: dict[str, Any]) -> str:
    """As core.log.format_audience writes it, from the result's JSON."""
    if audience["kind"] == "clubs":
        return "clubs:" + ",".join(base64.b64decode(c).hex() for c in audience["clubs"])
    return str(audience["kind"])


def _output(done: bytes, as_json: bool) -> Output:
    """The node's result (node/control.py `Posted`) for people or for scripts."""
    posted = json.loads(done)
    for warning in posted["warnings"]:
        say(f"federation: {warning}", file=sys.stderr)
    event, record = posted["event"], posted["record"]
    line = (
        f"{base64.b64decode(event['id']).hex()}  {record['name']} #{event['header']['seq']}"
        f"  ({_audience(record['audience'])})"
    )
    if not as_json:
        return Output(None, [line])
    # For scripts, the event as `show --json` prints it (cli/club.py): worth the imports.
    import msgspec

    from federation.cli.club import _event_json
    from federation.node.control import Posted

    typed = msgspec.json.decode(done, type=Posted)
    return Output(_event_json(typed.record, typed.event), [line])
