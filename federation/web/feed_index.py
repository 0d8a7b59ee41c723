"""What the feed may show, held in memory: the index of public events and the views.

One task (`follow`) keeps it in step with the running node: whenever the runtime's
caches move (a post, an ingest, another process's commit) it reads the events of
the public logs past what it holds, and the calendar and campaign views, and wakes
the live streams. Requests only read this index, so what they cost, how long they
take and what they say depend on public logs alone (DESIGN principle 17): no
request reads a non-public log, and none waits for a fold of one.

Which logs are public is decided by the one rule, `core.selection.may_receive`, for
an anonymous requester (None). Nothing here writes to the store: the views are read
with `node.projector.items`, which saves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq

from federation.core.selection import may_receive
from federation.node import projector
from federation.node.runtime import Runtime
from federation.store.base import PAGE_EVENTS
from federation.views import projection
from federation.views.feed import (
    CampaignEntry,
    ClubEntry,
    Entry,
    JointCampaign,
    Upcoming,
    campaign_entries,
    club_entry,
    entry_of,
    upcoming,
)

# How long `follow` waits for a change before looking anyway (a missed wake-up costs
# at most this long; the runtime's store watcher wakes it in well under a second).
IDLE_REFRESH_S = 30.0


class FeedIndex:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.entries: list[Entry] = []  # oldest first, by (time, id): the cursor order
        self.by_id: dict[bytes, Entry] = {}
        # The same entries in the order they arrived here: what the live stream sends
        # on (a synced event may claim any time, so time order would miss it).
        self.arrived: list[Entry] = []
        self.arrival_of: dict[bytes, int] = {}  # event id -> position in `arrived`
        self.public: frozenset[bytes] = frozenset()  # the public logs indexed
        self.names: dict[bytes, str] = {}
        self.clubs: list[ClubEntry] = []
        self.campaigns: list[CampaignEntry] = []
        self.joint: dict[str, JointCampaign] = {}  # joint campaigns shown, by proposal id
        self._actions: list[tuple[str, str, str, dt.datetime, dt.datetime | None, str]] = []
        self._held: dict[bytes, int] = {}  # public log -> last seq indexed
        self.version = 0
        self.closed = False
        self.changed = asyncio.Condition()

    def public_logs(self) -> dict[bytes, int]:
        """The logs anyone may receive (§5.4, an anonymous requester), with head seqs."""
        rt = self.rt
        peers = rt.active_peers()
        return {
            log: r.head.seq
            for log, r in rt.logs.items()
            if r.head is not None
            and r.club not in rt.blocked
            and may_receive(r.audience, r.club, None, our_peers=peers, rosters=rt.rosters)
        }

    def upcoming(self, now: dt.datetime) -> list[Upcoming]:
        return upcoming(self._actions, self.names, now)

    async def update(self) -> list[Entry]:
        """Read what the public logs hold past the index; returns the new entries."""
        public = self.public_logs()
        if any(log not in public for log in self._held):  # a log dropped (a blocked club)
            self._held, self.entries, self.by_id = {}, [], {}
            self.arrived, self.arrival_of = [], {}
        new: list[Entry] = []
        for log, head in public.items():
            at = self._held.get(log, 0)
            while at < head:
                events = await self.rt.store.events(log, at, PAGE_EVENTS)
                if not events:
                    break
                new.extend(entry_of(e) for e in events)
                at = events[-1].header.seq
            self._held[log] = at
        new.sort()
        if new and self.entries and new[0] < self.entries[-1]:
            self.entries = list(heapq.merge(self.entries, new))
        else:
            self.entries.extend(new)
        self.by_id.update((e.id, e) for e in new)
        self.arrival_of.update((e.id, len(self.arrived) + i) for i, e in enumerate(new))
        self.arrived.extend(new)
        self.public = frozenset(public)
        await self._read_views()
        return new

    async def _read_views(self) -> None:
        rt = self.rt
        names = {c: p.name for c, p in rt.peers.items()}
        names[rt.club] = rt.name
        self.names = names
        public_hex = {log.hex() for log in self.public}
        shown = {e.club for e in self.entries}
        self.clubs = sorted(
            (club_entry(c, names) for c in shown), key=lambda c: (c.name.casefold(), c.id)
        )
        actions = []
        for item in await projector.items(rt.store, projection.CALENDAR):
            if (
                isinstance(item, projection.CalendarItem)
                and item.log in public_hex
                and item.starts is not None
                and not item.erased
            ):
                actions.append(
                    (item.event, item.club, item.what, item.starts, item.ends, item.where)
                )
        self._actions = actions
        self.campaigns, self.joint = campaign_entries(
            [c for c in await projector.campaigns(rt.store) if c.log in public_hex], names
        )

    async def follow(self) -> None:
        """Keep the index in step with the node until cancelled."""
        while not self.rt.closing and not self.closed:
            version = self.rt.version
            await self.update()
            self.version += 1
            async with self.changed:
                self.changed.notify_all()
            await self.rt.wait_changed(version, IDLE_REFRESH_S)

    async def close(self) -> None:
        """Wake every live stream for good: the feed is shutting down."""
        self.closed = True
        async with self.changed:
            self.changed.notify_all()

    async def wait_changed(self, version: int, timeout_s: float) -> None:
        """Return once the index moved past `version`, or after timeout_s."""
        if self.closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self.changed:
                await self.changed.wait_for(lambda: self.version != version or self.closed)
