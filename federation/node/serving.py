"""The node's side of the peer API, below any transport (protocol.md §6.1).

Each function answers one request of an authenticated (or anonymous) requester from
the runtime's cached state and the store; the rules are `sync.serve`'s. The aiohttp
handlers (`web.peer_api`) and the in-memory transport (`node.transport`) both call
these, so the many-node tests run the code that serves real peers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

from federation.core.keys import key_log_id
from federation.node.runtime import Runtime
from federation.node.system import Clock
from federation.store.base import RawEvent
from federation.store.meta import record_delivery
from federation.sync import serve
from federation.sync.messages import Done, Frontier, Message, Want


async def frontier(
    rt: Runtime,
    requester: bytes | None,
    known: bytes,
    wait_s: float,
    *,
    after: bytes = b"",
    clock: Clock | None = None,
) -> Frontier:
    """The requester's frontier once it differs from `known`, or after `wait_s`
    seconds by `clock` (the runtime's by default), or at shutdown: the long-poll
    (protocol.md §6.5). The caller bounds `wait_s`. `after`: the page after this
    log id (§6.1), answered at once: only a first page waits."""
    now = clock or rt.clock
    wait_us = max(0, round(wait_s * 1_000_000))
    deadline_us = now() + wait_us
    while True:
        version = rt.version
        digest, heads = serve.frontier(rt.heads(rt.visible(requester)).items())
        # Never past the wait asked for, even if the clock steps back meanwhile.
        remaining_us = min(deadline_us - now(), wait_us)
        if after or digest != known or remaining_us <= 0 or rt.closing:
            # What a frontier shows, a peer may take as delivered (`status`, `erase`):
            # on disk first, though our sync's commits are made durable at its end.
            await rt.store.make_durable()
            return serve.answer(digest, heads, known, after)
        await rt.wait_changed(version, remaining_us / 1_000_000)


def events(rt: Runtime, requester: bytes | None, want: Want) -> AsyncGenerator[Message, None]:
    """The events answer to `want`, as messages to frame. A want the requester may not
    have is refused here, before anything is streamed (RemoteProtocolError, with the
    status to answer); the answer is read from the store as it is sent."""
    visible = rt.visible(requester)
    plan = serve.plan(want, rt.heads(visible))
    # A club's key log goes first (protocol.md §2.2, §6.3): the receiver then knows the
    # club's keys before it verifies the club's other logs of this answer.
    keys = {key_log_id(club) for club in {visible[entry.log].club for entry in plan}}
    plan.sort(key=lambda entry: entry.log not in keys)
    sent: dict[bytes, int] = {}  # our own logs: the last seq this answer sent
    ahead = _ReadAhead(rt)

    async def read(log: bytes, after: int, limit: int) -> serve.Page:
        page = await ahead.read(log, after, limit)
        up_to = rt.served_up_to(log)  # a payload wiped here: not beyond it (§3.5)
        if up_to is not None:
            page = [e for e in page if e.seq <= up_to]
        if page and requester is not None and visible[log].club == rt.club:
            sent[log] = page[-1].seq
        return page

    async def delivered() -> None:
        # What `erase` reports: which clubs our events reached (store.meta).
        for log, seq in sent.items():
            assert requester is not None
            await record_delivery(rt.store, requester, log, seq)

    return _read(read, serve.stream(plan, visible, rt.genesis_raw), delivered, ahead.close)


class _ReadAhead:
    """Reads a log's next page from the store while the page before it is framed and
    sent: the store's thread and the event loop then work at once, instead of one
    waiting for the other (bulk sync's sender; bench/RESULTS.md, "Ingest into the
    encrypted store").

    A page read ahead is used only if it is the page asked for next, and only if the
    runtime's caches did not change meanwhile (a refresh follows every erasure, held
    apart event and ingest, once it is committed): otherwise it is read again. Where
    a batch ended inside the last page (BATCH_MAX_BYTES), the page's unsent tail is
    the next page, under the same rule. Only a whole batch's page is read ahead: a
    smaller one is the last this answer wants of its log."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._next: tuple[bytes, int, int, int] | None = None  # log, after, limit, version
        self._task: asyncio.Task[list[RawEvent]] | None = None
        self._last: tuple[bytes, int, list[RawEvent]] = (b"", -1, [])  # log, version, page

    async def read(self, log: bytes, after: int, limit: int) -> list[RawEvent]:
        version = self.rt.version
        last_log, last_version, last = self._last
        if (log, version) == (last_log, last_version) and last and last[0].seq <= after:
            tail = last[after - last[0].seq + 1 :][:limit]  # a page's events are contiguous
            if tail:
                return tail
        task, self._task = self._task, None
        if task is not None and self._next == (log, after, limit, version):
            page = await task
        else:
            _drop(task)
            page = await self.rt.store.raw_events(log, after, limit)
        self._last = (log, version, page)
        if len(page) == limit == serve.BATCH_MAX_EVENTS:  # a whole page: the log may go on
            self._next = (log, page[-1].seq, limit, version)
            self._task = asyncio.ensure_future(self.rt.store.raw_events(log, page[-1].seq, limit))
        return page

    def close(self) -> None:
        task, self._task = self._task, None
        _drop(task)


def _drop(task: asyncio.Task[list[RawEvent]] | None) -> None:
    """A page read ahead and not used: cancelled, and its outcome taken when it ends,
    so a failed read is not reported as an exception never retrieved."""
    if task is not None:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


ReadPage = Callable[[bytes, int, int], Awaitable[serve.Page]]


async def _read(
    read: ReadPage,
    answer: serve.Answer,
    before_done: Callable[[], Awaitable[None]],
    close: Callable[[], None],
) -> AsyncGenerator[Message, None]:
    """Drive the answer's plan against the store: pages in, messages out. `close` runs
    however the answer ends (sent, refused, or the requester gone)."""
    reply: serve.Page | None = None
    try:
        while True:
            try:
                item = answer.send(reply)
            except StopIteration:
                return
            if isinstance(item, serve.PageRequest):
                reply = await read(item.log, item.after, item.limit)
            else:
                reply = None
                if isinstance(item, Done):
                    await before_done()
                yield item
    finally:
        close()
