"""A relaying peer for the quota and block attacks: honestly signed logs of many clubs,
served as protocol.md §6.1-§6.3 writes it.

`RelayPeer` is tests/sync/hostile.py's scripted server whose events answer is
computed from the want, as an honest relay's is: a `club` and a `log` message where
the want asks for the descriptor, then the events after `after`, then `done`. The
attack is in what it holds: many one-event logs, signed by their clubs, which a
relay cannot forge but can pile up (about 40,000 signatures a second: a few
thousand logs take a fraction of a second to make).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from federation.core import canonical
from federation.core.canonical import Audience, Kind
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.log import descriptor_bytes
from federation.sync import messages
from federation.sync.messages import Batch, ClubInfo, Done, LogHead, LogInfo, Want
from federation.web.peer_api import CONTENT_TYPE
from tests.conftest import BASE_TIME_US, Club
from tests.harness import serve_app
from tests.sync.hostile import HostilePeer, frontier_answer


@dataclass(frozen=True)
class RelayedLog:
    club: Club
    id: bytes
    descriptor: bytes
    events: list[VerifiedEvent]


def one_event_logs(club: Club, n: int, *, prefix: str = "junk") -> list[RelayedLog]:
    """`n` public logs of `club`, one signed event each."""
    out = []
    for i in range(n):
        descriptor = descriptor_bytes(club.id, f"{prefix}-{i}", Audience("public"))
        log = canonical.log_id(descriptor)
        event = sign_event(
            club.key,
            club=club.id,
            log=log,
            head=None,
            time_us=BASE_TIME_US + 1_000_000,
            kind=Kind.NOTE,
            payload=b'{"text":"%d"}' % i,
        )
        out.append(RelayedLog(club, log, descriptor, [event]))
    return out


def standard_log(club: Club, events: list[VerifiedEvent], audience: str) -> RelayedLog:
    return RelayedLog(club, club.log(audience), club.descriptors[audience], events)


def many_clubs(n: int, seed: bytes = b"crowd") -> list[RelayedLog]:
    """One public one-event log each of `n` clubs."""
    return [one_event_logs(Club.make(seed + b"%d" % i), 1)[0] for i in range(n)]


class RelayPeer(HostilePeer):
    """Serves `logs` (set before a round) for whatever the honest node wants."""

    logs: dict[bytes, RelayedLog]

    def relay(self, logs: list[RelayedLog]) -> None:
        self.logs = {r.id: r for r in logs}
        heads = [LogHead(r.id, len(r.events), r.events[-1].id) for r in logs]
        self.frontier = frontier_answer(heads)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.raw_path))
        want = messages.decode(await request.read())
        assert isinstance(want, Want), want
        self.wants.append(want)
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
        await response.prepare(request)
        sent_clubs: set[bytes] = set()
        for w in want.logs:
            r = self.logs[w.log]
            if w.descriptor:
                if r.club.id not in sent_clubs:
                    sent_clubs.add(r.club.id)
                    await response.write(messages.frame(ClubInfo(r.club.id, r.club.genesis)))
                await response.write(messages.frame(LogInfo(r.id, r.descriptor)))
            events = [(e.signed, e.payload) for e in r.events[w.after :]]
            if events:
                await response.write(messages.frame(Batch(r.id, events)))
        await response.write(messages.frame(Done()))
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def open_relay(club: Club, name: str = "Mallory") -> AsyncIterator[RelayPeer]:
    """Serve a relay on 127.0.0.1, on a free port (as tests/sync/hostile.open_hostile)."""
    peer = RelayPeer(club, name)
    peer.logs = {}
    async with serve_app(peer.app()) as port:
        peer.url = f"http://127.0.0.1:{port}"
        yield peer


def head_of(events: list[VerifiedEvent]) -> Head:
    return Head(events[-1].header.seq, events[-1].id)
