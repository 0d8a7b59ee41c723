"""`federation verify-event FILE`: check a signed event downloaded from a feed, offline.

The file is what a feed serves at `/events/{id}` (`core.evidence.Evidence`): the
signed header, the payload, the club's genesis and the log's descriptor. The checks
are the node's own (`core.evidence.check_evidence`); no node directory is needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from federation.cli.output import Output
from federation.core.evidence import check_evidence, decode_evidence, kind_name
from federation.core.payloads import summary
from federation.errors import InvalidEventError, UsageError


def add_verify_event_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("file", metavar="FILE", help="an event saved from a feed's /events/ID, or -")


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None


async def cmd_verify_event(args: argparse.Namespace) -> Output:
    data = _read(args.file)
    try:
        doc = decode_evidence(data)
        event = check_evidence(doc)
    except InvalidEventError as exc:
        if not args.json:
            raise InvalidEventError(f"{args.file}: does not verify: {exc}") from None
        return Output({"ok": False, "file": args.file, "error": str(exc)}, [], exit_code=1)
    h = event.header
    data_out = {
        "ok": True,
        "id": event.id.hex(),
        "club": h.club.hex(),
        "log": h.log.hex(),
        "seq": h.seq,
        "audience": doc.audience,
        "kind": kind_name(h.kind),
        "erased": event.payload is None,
    }
    lines = [
        f"ok: event {event.id.hex()} verifies",
        f"club {h.club.hex()} (from its genesis), log {h.log.hex()[:16]} "
        f"({doc.audience}), seq {h.seq}, {kind_name(h.kind)}",
        f"payload: {summary(h.kind, event.payload)}",
    ]
    return Output(data_out, lines)
