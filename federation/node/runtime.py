"""The running node's shared state: what the peer API and the sync loops both read.

It caches what every request needs (logs and heads, peers, every club's roster)
and refreshes the cache whenever the store changes: through our own ingest, or
through another process such as `federation post`, which SQLite's data_version
reveals (polled every STORE_POLL_S). Waiters on `changed` are woken each time.
"""

from __future__ import annotations

import asyncio
import contextlib

from federation.core import canonical
from federation.core.canonical import Genesis
from federation.core.crypto import SigningKey
from federation.core.events import Head
from federation.core.keys import KeyAuthority
from federation.core.selection import Roster, fold_roster, may_receive, roster_log_id
from federation.node.node import Node
from federation.node.system import Clock
from federation.store import base as store_base
from federation.store.base import LogRecord, PeerRecord, Store
from federation.sync.auth import ReplayGuard

# How often to look for commits by other processes (e.g. `federation post`): a new
# event reaches the peers' long-polls within about this long.
STORE_POLL_S = 0.2


class Runtime:
    def __init__(self, node: Node, key: SigningKey, clock: Clock) -> None:
        self.node = node
        self.store: Store = node.store
        self.club = node.club
        self.name = node.config.club.name
        self.key = key
        self.clock = clock
        self.replay = ReplayGuard(start_us=clock())
        self.changed = asyncio.Condition()
        self.logs: dict[bytes, LogRecord] = {}
        self.peers: dict[bytes, PeerRecord] = {}
        self.rosters: dict[bytes, Roster] = {}
        self.genesis: dict[bytes, Genesis] = {}
        self.genesis_raw: dict[bytes, bytes] = {}
        self.version = 0
        self.closing = False  # set at shutdown: long-polls answer at once
        self._data_version = -1
        self._roster_heads: dict[bytes, Head | None] = {}  # each roster's log at its fold

    async def refresh(self, *, appended_only: bool = False) -> None:
        """Reload the caches from the store and wake everyone waiting for a change.

        `appended_only`: the change was our own ingest, which only appends (and
        freezes): a roster is folded on from where it was, not again from seq 1.
        Any other change, such as an erase by the CLI, refolds every roster.
        """
        version = await self.store.data_version()
        if version != self._data_version:
            appended_only = False  # another process committed too: it may have erased
        self._data_version = version
        self.genesis_raw = await self.store.clubs()
        self.genesis = {c: canonical.decode_genesis(g) for c, g in self.genesis_raw.items()}
        self.node.genesis = self.genesis
        self.logs = {r.id: r for r in await self.store.logs()}
        self.peers = {p.club: p for p in await self.store.peers()}
        rosters: dict[bytes, Roster] = {}
        heads: dict[bytes, Head | None] = {}  # the last roster event folded, per club
        for club in list(self.genesis):  # shared with the node: peering.add may add to it
            log = roster_log_id(club)
            if log not in self.logs:
                continue
            roster: set[bytes] = set()
            folded = self._roster_heads.get(club)
            if not (appended_only and club in self.rosters and folded is not None):
                folded = None
            elif folded == self.logs[log].head:
                rosters[club], heads[club] = self.rosters[club], folded
                continue
            else:
                roster = set(self.rosters[club])  # fold on from where it was
            # Not imported by name: this module's constants are its §6.4 sync limits.
            page_events = store_base.PAGE_EVENTS
            while page := await self.store.events(log, folded.seq if folded else 0, page_events):
                fold_roster(roster, page)
                folded = Head(page[-1].header.seq, page[-1].id)
            rosters[club], heads[club] = frozenset(roster), folded
        self.rosters, self._roster_heads = rosters, heads
        self.version += 1
        async with self.changed:
            self.changed.notify_all()

    async def watch_store(self) -> None:
        """Refresh whenever another process commits to the store."""
        while True:
            await asyncio.sleep(STORE_POLL_S)
            if await self.store.data_version() != self._data_version:
                await self.refresh()

    async def close(self) -> None:
        """Wake every waiter for good, so a shutdown never waits out a long-poll."""
        self.closing = True
        async with self.changed:
            self.changed.notify_all()

    async def wait_changed(self, version: int, timeout_s: float) -> None:
        """Return once the caches moved past `version`, or after timeout_s."""
        if self.closing:
            return
        # asyncio.timeout, not wait_for: on 3.11, wait_for swallows a cancellation that
        # arrives as the condition is notified, and a follow loop cancelled at shutdown
        # would then wait on for an hour.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self.changed:
                await self.changed.wait_for(lambda: self.version != version or self.closing)

    def active_peers(self) -> frozenset[bytes]:
        return frozenset(c for c, p in self.peers.items() if p.state == "active")

    def visible(self, requester: bytes | None) -> dict[bytes, LogRecord]:
        """The logs `requester` may receive from us (protocol.md §5.4), with heads."""
        peers = self.active_peers()
        return {
            log: r
            for log, r in self.logs.items()
            if r.head is not None
            and may_receive(r.audience, r.club, requester, our_peers=peers, rosters=self.rosters)
        }

    def heads(self, records: dict[bytes, LogRecord]) -> dict[bytes, Head]:
        return {log: r.head for log, r in records.items() if r.head is not None}

    def authorized(self, club: bytes, key: bytes) -> bool:
        """protocol.md §2.2, decided by `core.keys`, over the clubs this node holds."""
        return KeyAuthority(self.genesis).may_sign(club, key)
