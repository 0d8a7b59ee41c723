"""The serving side of sync, pure: which frontier to show a requester, what of a
want to serve, and the events answer's plan (protocol.md §6.1). The node's serving
functions call these for every request, so selection happens at the network boundary
and nowhere else.

The events answer is a generator over pages (sans-IO): it yields the messages to
send, and a PageRequest where it needs a page of stored events, which the caller
reads and sends back in:

    answer = stream(plan, logs, genesis)
    reply = None
    while True:
        item = answer.send(reply)          # StopIteration: the answer is complete
        if isinstance(item, PageRequest):
            reply = read(item.log, item.after, item.limit)
        else:
            reply = None
            send(item)
"""

from __future__ import annotations

import bisect
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

import msgspec

from federation.core.canonical import sha256
from federation.core.events import Head
from federation.errors import LocalProtocolError, RemoteProtocolError
from federation.sync.messages import (
    BATCH_MAX_BYTES,
    MAX_EVENTS_PER_RESPONSE,
    MAX_FRONTIER_LOGS,
    Batch,
    ClubInfo,
    Done,
    Frontier,
    LogHead,
    LogInfo,
    Message,
    Want,
    WantLog,
)

# A page's size (a batch's at most): the reader of the pages reads ahead by it.
from federation.sync.messages import BATCH_MAX_EVENTS as BATCH_MAX_EVENTS

_digest_encoder = msgspec.msgpack.Encoder()


def frontier(visible: Iterable[tuple[bytes, Head]]) -> tuple[bytes, list[LogHead]]:
    """The requester's view, sorted by log id, and its digest (what `known` compares)."""
    heads = [LogHead(log, head.seq, head.id) for log, head in sorted(visible)]
    return sha256(_digest_encoder.encode(heads)), heads


def answer(digest: bytes, heads: list[LogHead], known: bytes, after: bytes = b"") -> Frontier:
    """The frontier message: `logs` nil when the digest is the one the requester
    sent as `known`, nothing changed (protocol.md §6.6). Otherwise one page (§6.1):
    at most MAX_FRONTIER_LOGS heads of logs after `after` (empty: from the first),
    with `more` if the view goes on. `known` counts only on the first page; `digest`
    is the whole view's on every page, so a client keeps one digest however many
    pages it took."""
    if not after and digest == known:
        return Frontier(digest, None)
    start = bisect.bisect_right(heads, after, key=_log_of) if after else 0
    end = start + MAX_FRONTIER_LOGS
    return Frontier(digest, heads[start:end], more=end < len(heads))


def _log_of(head: LogHead) -> bytes:
    return head.log


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


class StoredEvent(Protocol):
    """A stored event as bytes (the store's RawEvent is one)."""

    @property
    def seq(self) -> int: ...
    @property
    def signed(self) -> bytes: ...
    @property
    def payload(self) -> bytes | None: ...


class ServedLog(Protocol):
    """What the answer needs of a log (the store's LogRecord is one)."""

    @property
    def id(self) -> bytes: ...
    @property
    def club(self) -> bytes: ...
    @property
    def descriptor(self) -> bytes: ...


class PageRequest(NamedTuple):
    """Send back up to `limit` stored events of `log` after seq `after`, in seq order."""

    log: bytes
    after: int
    limit: int


Page = Sequence[StoredEvent]
Answer = Generator[Message | PageRequest, Page | None, None]

_NO_LIMIT = 1 << 62  # a want's limit 0: all of the log


def stream(
    plan: Iterable[WantLog], logs: Mapping[bytes, ServedLog], genesis: Mapping[bytes, bytes]
) -> Answer:
    """The events answer for a planned want (protocol.md §6.1): for each entry in the
    want's order, its club's genesis (once an answer) and descriptor where asked for,
    then its events after `after`, at most `limit`, in batches of BATCH_MAX_EVENTS
    that close once they reach BATCH_MAX_BYTES; then Done, with `more` once the answer
    reached MAX_EVENTS_PER_RESPONSE. `logs`: the planned logs; `genesis`: by club."""
    sent_clubs: set[bytes] = set()
    total = 0
    for entry in plan:
        record = logs[entry.log]
        if entry.descriptor:
            if record.club not in sent_clubs:
                sent_clubs.add(record.club)
                yield ClubInfo(record.club, genesis[record.club])
            yield LogInfo(record.id, record.descriptor)
        after = entry.after
        left = entry.limit or _NO_LIMIT
        while left > 0 and total < MAX_EVENTS_PER_RESPONSE:
            # Never past MAX_EVENTS_PER_RESPONSE: the client refuses an answer over it.
            room = MAX_EVENTS_PER_RESPONSE - total
            page = yield PageRequest(entry.log, after, min(BATCH_MAX_EVENTS, left, room))
            if page is None:
                raise LocalProtocolError("a PageRequest is answered with a page")
            if not page:
                break
            batch = _batch(page)
            yield Batch(entry.log, batch)
            after = page[len(batch) - 1].seq
            left -= len(batch)
            total += len(batch)
        if total >= MAX_EVENTS_PER_RESPONSE:
            # The client commits and asks again (§6.2 step 4): no answer holds a stream
            # for long.
            yield Done(more=True)
            return
    yield Done()


def _batch(page: Page) -> list[tuple[bytes, bytes | None]]:
    """The page's first events, up to and including the one that reaches
    BATCH_MAX_BYTES (so a batch may pass it by one event, §6.1)."""
    batch: list[tuple[bytes, bytes | None]] = []
    size = 0
    for raw in page:
        batch.append((raw.signed, raw.payload))
        size += len(raw.signed) + len(raw.payload or b"")
        if size >= BATCH_MAX_BYTES:
            break
    return batch
