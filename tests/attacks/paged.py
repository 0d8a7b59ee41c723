"""A relay whose frontier comes in pages and whose answers a test may tamper with,
for the attacks on a round of several events answers (test_multi_answer.py).

`PagedRelay` is tests/attacks/relay.py's RelayPeer with a frontier paged as protocol.md
§6.1 writes it (serve.answer, `after` the cursor), so that under `small_pages` a few
logs make a round of several wants, one events answer each. Its answers are the
honest ones (serve.py's batches), optionally cut after `step` events a log with
`more`, then passed through a test's `tamper`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from unittest import mock

from aiohttp import web

from federation.sync import messages, serve
from federation.sync import session as session_module
from federation.sync.messages import Batch, ClubInfo, Done, LogInfo, Message, Want
from federation.web.peer_api import CONTENT_TYPE
from tests.attacks.relay import RelayedLog, RelayPeer, head_of

PAGE = 2  # logs per frontier page and per want under small_pages
Tamper = Callable[[int, list[Message]], list[Message]]  # (answer, from 1; honest messages)
Pairs = list[tuple[bytes, bytes | None]]
BATCH_BYTES = messages.BATCH_MAX_BYTES


def batches(events: Pairs) -> list[Pairs]:
    """As serve.py cuts them: BATCH_MAX_EVENTS at most, closed at BATCH_MAX_BYTES."""
    out: list[Pairs] = [[]]
    for signed, payload in events:
        last = out[-1]
        last.append((signed, payload))
        if len(last) == messages.BATCH_MAX_EVENTS or sum(map(_size, last)) >= BATCH_BYTES:
            out.append([])
    return [b for b in out if b]


def _size(event: tuple[bytes, bytes | None]) -> int:
    return len(event[0]) + len(event[1] or b"")


class PagedRelay(RelayPeer):
    """A relay whose frontier comes in pages of PAGE logs, and whose events answers
    are the honest ones (`step`: at most that many events a log, then `more`), passed
    through `tamper`."""

    tamper: Tamper | None = None
    step: int | None = None

    def relay(self, logs: list[RelayedLog]) -> None:
        self.logs = {r.id: r for r in logs}
        self.digest, self.heads = serve.frontier((r.id, head_of(r.events)) for r in logs)

    async def _frontier(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.raw_path))
        after = bytes.fromhex(request.query.get("after", ""))
        page = serve.answer(self.digest, self.heads, b"", after)
        return web.Response(body=messages.encode(page), content_type=CONTENT_TYPE)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        want = messages.decode(await request.read())
        assert isinstance(want, Want), want
        self.wants.append(want)
        sent = self.honest(want)
        if self.tamper is not None:
            sent = self.tamper(len(self.wants), sent)
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        await response.prepare(request)
        for message in sent:
            await response.write(messages.frame(message))
        await response.write_eof()
        return response

    def honest(self, want: Want) -> list[Message]:
        sent: list[Message] = []
        clubs: set[bytes] = set()
        more = False
        for w in want.logs:
            r = self.logs[w.log]
            if w.descriptor:
                if r.club.id not in clubs:
                    clubs.add(r.club.id)
                    sent.append(ClubInfo(r.club.id, r.club.genesis))
                sent.append(LogInfo(r.id, r.descriptor))
            rest = r.events[w.after :]
            if self.step is not None and len(rest) > self.step:
                rest, more = rest[: self.step], True
            sent += [Batch(r.id, b) for b in batches([(e.signed, e.payload) for e in rest])]
        return [*sent, Done(more=more)]


@contextlib.contextmanager
def small_pages(logs: int = PAGE) -> Iterator[None]:
    with (
        mock.patch.object(serve, "MAX_FRONTIER_LOGS", logs),
        mock.patch.object(session_module, "MAX_FRONTIER_LOGS", logs),
    ):
        yield
