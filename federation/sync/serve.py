"""The serving side of sync, pure: which frontier to show a requester, and what of a
request to serve (protocol.md §6.1). The peer API calls these for every request, so
selection happens at the network boundary and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from federation.core.canonical import sha256
from federation.core.events import Head
from federation.errors import RemoteProtocolError
from federation.sync.messages import MAX_FRONTIER_LOGS, LogHead, Want, WantLog

_digest_encoder = msgspec.msgpack.Encoder()


def frontier(visible: Iterable[tuple[bytes, Head]]) -> tuple[bytes, list[LogHead]]:
    """The requester's view, sorted by log id, and its digest (what `known` compares)."""
    heads = [LogHead(log, head.seq, head.id) for log, head in sorted(visible)]
    return sha256(_digest_encoder.encode(heads)), heads


def plan(want: Want, visible: Mapping[bytes, Head]) -> list[WantLog]:
    """Check a Want against what the requester may see. A log it may not see is
    refused exactly like a log that does not exist, so refusals leak nothing."""
    if len(want.logs) > MAX_FRONTIER_LOGS:
        raise RemoteProtocolError("want lists too many logs", code="too_large", http_status=413)
    seen: set[bytes] = set()
    for entry in want.logs:
        if entry.log in seen:
            raise RemoteProtocolError("want lists a log twice", code="malformed")
        seen.add(entry.log)
        if entry.log not in visible:
            raise RemoteProtocolError(
                f"no log {entry.log.hex()[:16]} for you here", code="unknown_log", http_status=404
            )
        if entry.after < 0 or entry.limit < 0:
            raise RemoteProtocolError("want has a negative seq or limit", code="malformed")
    return list(want.logs)
