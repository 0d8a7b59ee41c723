"""`federation key rotate | revoke | status`: the club's signing key (protocol.md §2.2).

`rotate` hands the club over to a new key, signed by the key in force; it also carries
on every frozen own log (a fork), cut just below its fork. `revoke` is for a seized
key: signed by the club's recovery key, from its words or k of its shares, typed in
here and never stored; a revocation the club already made is refused, not made twice,
unless `--again` says the key it put in was seized too. `status` shows the key in use
and the club's key events.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from federation.cli.output import Output, plural
from federation.core import crypto
from federation.core.ids import short
from federation.core.keys import KeyHistory
from federation.core.when import zoned_time
from federation.errors import UsageError
from federation.node import keys as node_keys
from federation.node import lock, recovery
from federation.node.node import Node, NodePaths, load_config


def add_arguments(c: argparse.ArgumentParser) -> None:
    sub = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate = sub.add_parser(
        "rotate", help="hand the club over to a new signing key (and carry forked logs on)"
    )
    revoke = sub.add_parser(
        "revoke", help="after a seizure: revoke the key with the club's recovery secret"
    )
    status = sub.add_parser("status", help="the key in use and the club's key events")
    for p in (rotate, revoke, status):
        p.add_argument("--json", action="store_true", help="print JSON for scripts")
    revoke.add_argument("--words-file", metavar="FILE", help="read the 24 recovery words from FILE")
    revoke.add_argument(
        "--share",
        metavar="FILE",
        action="append",
        default=[],
        help="a file holding one member's recovery share (repeat: k of them)",
    )
    revoke.add_argument(
        "--before",
        metavar="TIME",
        help="revoke from this time on (RFC 3339, e.g. 2026-12-01T18:00+00:00): each "
        "log keeps its events made before it; default: this node's heads",
    )
    revoke.add_argument(
        "--again",
        action="store_true",
        help="the key the club's last revocation put in was seized too: revoke it as "
        "well (without it, a revocation the club already made is refused)",
    )


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from None


def recovery_key(args: argparse.Namespace) -> crypto.SigningKey:
    """The recovery key from --share files, --words-file, or words typed at a prompt."""
    if args.share and args.words_file:
        raise UsageError("give the recovery words or shares, not both")
    if args.share:
        return recovery.signing_key_from_shares([_read(f, "share file") for f in args.share])
    if args.words_file:
        return recovery.signing_key_from_words(_read(args.words_file, "words file"))
    if not sys.stdin.isatty():
        raise UsageError(
            "no terminal to type the recovery words at: give --words-file FILE or "
            "--share FILE (k times)"
        )
    return recovery.signing_key_from_words(getpass.getpass("Recovery words: "))


def _before(text: str | None) -> int | None:
    if text is None:
        return None
    return int(zoned_time(text, "--before").timestamp() * 1_000_000)


def _result(result: node_keys.KeyChangeResult) -> Output:
    what = "rotated" if result.action == "rotate" else "revoked"
    lines = [
        f"{what} key {short(result.old)}: the club signs with key {short(result.new)} from "
        f"now on (seq {result.seq} of its keys log; the cut names {plural(result.logs, 'log')})",
    ]
    for name, n in sorted(result.dropped.items()):
        lines.append(
            f"log {name!r}: {plural(n, 'event')} of ours after the cut held apart, not served "
            "(outside the old key's window)"
        )
    lines.append("peers follow at their next sync; run `federation sync` to tell them now")
    data = {
        "action": result.action,
        "old": result.old.hex(),
        "new": result.new.hex(),
        "seq": result.seq,
        "event": result.event.hex(),
        "logs": result.logs,
        "dropped": result.dropped,
    }
    return Output(data, lines)


def _finished(history: KeyHistory) -> Output:
    """A rotation or revocation a crash cut off after its key event, which opening the
    node finished (node/node.py `Node.open`): said as done, with nothing signed again."""
    epoch = history.current
    old = history.epochs[-2].key  # a revocation follows the epoch of the key it revokes
    what = "rotation" if epoch.action == "rotate" else "revocation"
    lines = [
        f"finished the key {what} that was cut off: key {short(old)} is replaced, the "
        f"club signs with key {short(epoch.key)} (seq {epoch.n} of its keys log); "
        "nothing new was signed",
        "peers follow at their next sync; run `federation sync` to tell them now",
    ]
    data = {
        "action": epoch.action,
        "old": old.hex(),
        "new": epoch.key.hex(),
        "seq": epoch.n,
        "event": epoch.event.hex(),
        "finished": True,
    }
    return Output(data, lines)


async def cmd_key(args: argparse.Namespace) -> Output:
    root = Path(args.node)
    if args.action == "status":
        async with await Node.open(root) as node:
            return await _status(node)
    command = f"key {args.action}"
    load_config(NodePaths(root))  # no node here: that error, not the lock's
    lock.refuse_running(root, command)  # before the recovery words are asked for
    key = recovery_key(args) if args.action == "revoke" else None  # before anything opens
    before = _before(args.before) if args.action == "revoke" else None
    async with await Node.open(root) as node:
        finished = node.finished_key_change  # Node.open finished one a crash cut off
        if finished is not None and finished.current.action == args.action:
            return _finished(finished)  # the same command again: done, not done twice
        if key is not None:  # refused before the lock is taken: nothing written
            recovery.check_recovery(key, node.genesis[node.club])
            await node_keys.check_revoke(node, key, before_us=before, again=args.again)
        # A running node would go on signing with the key it unlocked (§2.2): refused.
        with lock.hold_stopped(root, command):
            if key is None:
                return _result(await node_keys.rotate(node))
            return _result(await node_keys.revoke(node, key, before_us=before, again=args.again))


async def _status(node: Node) -> Output:
    history = node.keys.history(node.club)
    assert history is not None
    epochs: list[dict[str, Any]] = [
        {"key": e.key.hex(), "seq": e.n, "action": e.action} for e in history.epochs
    ]
    current = history.current
    since = "the club's genesis" if current.n == 0 else f"seq {current.n} of its keys log"
    lines = [f"key in use: {short(current.key)} (since {since})"]
    lines += [f"  seq {e.n}: {e.action}, key {short(e.key)}" for e in history.epochs[1:]]
    held = [h for h in await node.store.held_apart() if h.club == node.club]
    if held:
        lines.append(
            f"{plural(len(held), 'event')} of ours held apart (outside their key's window)"
        )
    return Output({"key": current.key.hex(), "since": current.n, "epochs": epochs}, lines)
