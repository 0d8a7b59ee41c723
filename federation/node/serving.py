"""The node's side of the peer API, below any transport (protocol.md §6.1).

Each function answers one request of an authenticated (or anonymous) requester from
the runtime's cached state and the store; the rules are `sync.serve`'s. The aiohttp
handlers (`web.peer_api`) and the in-memory transport (`node.transport`) both call
these, so the many-node tests run the code that serves real peers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

from federation.node.runtime import Runtime
from federation.node.system import Clock
from federation.sync import serve
from federation.sync.messages import Frontier, Message, Want


async def frontier(
    rt: Runtime, requester: bytes | None, known: bytes, wait_s: float, *, clock: Clock | None = None
) -> Frontier:
    """The requester's frontier once it differs from `known`, or after `wait_s`
    seconds by `clock` (the runtime's by default), or at shutdown: the long-poll
    (protocol.md §6.5). The caller bounds `wait_s`."""
    now = clock or rt.clock
    wait_us = max(0, round(wait_s * 1_000_000))
    deadline_us = now() + wait_us
    while True:
        version = rt.version
        digest, heads = serve.frontier(rt.heads(rt.visible(requester)).items())
        # Never past the wait asked for, even if the clock steps back meanwhile.
        remaining_us = min(deadline_us - now(), wait_us)
        if digest != known or remaining_us <= 0 or rt.closing:
            return serve.answer(digest, heads, known)
        await rt.wait_changed(version, remaining_us / 1_000_000)


def events(rt: Runtime, requester: bytes | None, want: Want) -> AsyncGenerator[Message, None]:
    """The events answer to `want`, as messages to frame. A want the requester may not
    have is refused here, before anything is streamed (RemoteProtocolError, with the
    status to answer); the answer is read from the store as it is sent."""
    visible = rt.visible(requester)
    plan = serve.plan(want, rt.heads(visible))
    return _read(rt.store.raw_events, serve.stream(plan, visible, rt.genesis_raw))


ReadPage = Callable[[bytes, int, int], Awaitable[serve.Page]]


async def _read(read: ReadPage, answer: serve.Answer) -> AsyncGenerator[Message, None]:
    """Drive the answer's plan against the store: pages in, messages out."""
    reply: serve.Page | None = None
    while True:
        try:
            item = answer.send(reply)
        except StopIteration:
            return
        if isinstance(item, serve.PageRequest):
            reply = await read(item.log, item.after, item.limit)
        else:
            reply = None
            yield item
