"""The running node's shared state: what the peer API and the sync loops both read.

It caches what every request needs (logs and heads, peers, every club's roster)
and refreshes the cache whenever the store changes, waking every waiter on
`changed` (long-polls, follow loops, the feed): at once after our own ingest and
after every command the control socket carries out (`post`, `erase`, `peers`, ...:
node/control.py), so a new event is pushed to waiting peers without a poll
(protocol.md §6.5). Only a process writing to the store directly while the node
runs (`import`, `sync`, `rebuild`) is noticed by polling SQLite's data_version,
every STORE_POLL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Mapping

from federation.core import canonical
from federation.core.canonical import Genesis
from federation.core.crypto import SigningKey
from federation.core.events import Head
from federation.core.keys import KeyAuthority
from federation.core.selection import KnownRoster, fold_roster, may_receive, roster_log_id
from federation.errors import FederationError
from federation.node import keylog
from federation.node.node import Node
from federation.node.system import Clock
from federation.store import base as store_base
from federation.store.base import LogRecord, PeerRecord, Store
from federation.sync.auth import ReplayGuard
from federation.sync.quota import Limits, Quota

# How often to look for commits by other processes. The commands that write while
# the node runs go through it (node/control.py) and wake waiters at once; what is
# left (`import`, `sync`, `rebuild` run beside the node) is rare and not urgent, so
# the poll is slow: it costs an idle node a query a second, not five.
STORE_POLL_S = 1.0
# Requesters whose view of our logs is kept between two changes: our peers and the
# anonymous reader; anyone else is computed afresh (strangers cannot fill memory).
MAX_VISIBLE_KEPT = 256


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
        # log -> the lowest seq held without its payload: what rounds ask for again
        # (§6.3), kept here so that a round that changes nothing reads no store.
        self.missing: dict[bytes, int] = {}
        self._visible: dict[bytes | None, dict[bytes, LogRecord]] = {}
        self._visible_version = -1
        self._heads_version = -1
        self._all_heads: Mapping[bytes, Head | None] = {}
        self._frozen_logs: frozenset[bytes] = frozenset()
        self.peers: dict[bytes, PeerRecord] = {}
        # None: the club's roster is unknown here (a roster payload is missing), §5.4
        self.rosters: dict[bytes, KnownRoster] = {}
        self.genesis: dict[bytes, Genesis] = {}
        self.genesis_raw: dict[bytes, bytes] = {}
        self.version = 0
        self.closing = False  # set at shutdown: long-polls answer at once
        self.blocked: frozenset[bytes] = frozenset()  # clubs the operator blocked
        # Logs a round refused for good (a blocked club, a quota reached): later rounds
        # do not ask for them again (protocol.md §6.3). Asked once more after a restart.
        self.refused: set[bytes] = set()
        self.limits = Limits()  # the quotas of sync.quota; a test may choose smaller ones
        self._data_version = -1
        self._roster_heads: dict[bytes, Head | None] = {}  # each roster's log at its fold
        # Logs with a payload wiped here: served up to this head only (§3.5; None: none)
        self.caps: dict[bytes, Head | None] = {}

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
        # Each club's key epochs (protocol.md §2.2): what request tokens are checked by.
        held = {log for log, r in self.logs.items() if r.head is not None}
        self.node.histories = await keylog.load_histories(self.store, self.genesis, held)
        self._follow_key_change()
        self.missing = await self.store.missing_payloads()
        self.peers = {p.club: p for p in await self.store.peers()}
        blocked = frozenset(await self.store.blocked())
        if blocked != self.blocked:  # an unblocked club's logs may be asked for again
            self.refused.clear()
        self.blocked = blocked
        rosters: dict[bytes, KnownRoster] = {}
        heads: dict[bytes, Head | None] = {}  # the last roster event folded, per club
        for club in list(self.genesis):  # shared with the node: peering.add may add to it
            log = roster_log_id(club)
            if log not in self.logs:
                continue
            roster: set[bytes] = set()
            known = True
            folded = self._roster_heads.get(club)
            before = self.rosters.get(club)
            # An unknown roster stays unknown on an append: only a refold (after a
            # payload is filled in, which is not an append) can make it known.
            if not (appended_only and club in self.rosters and folded is not None):
                folded = None
            elif folded == self.logs[log].head:
                rosters[club], heads[club] = before, folded
                continue
            elif before is None:
                known = False
            else:
                roster = set(before)  # fold on from where it was
            # Not imported by name: this module's constants are its §6.4 sync limits.
            page_events = store_base.PAGE_EVENTS
            while page := await self.store.events(log, folded.seq if folded else 0, page_events):
                known = fold_roster(roster, page) and known
                folded = Head(page[-1].header.seq, page[-1].id)
            # protocol.md §5.4: a roster event without its payload makes the roster
            # unknown, and an unknown roster lets nobody but its club in.
            rosters[club], heads[club] = (frozenset(roster) if known else None), folded
        self.rosters, self._roster_heads = rosters, heads
        caps: dict[bytes, Head | None] = {}
        for log, seq in (await self.store.local_erasures()).items():
            wiped = await self.store.event_at(log, seq)
            if wiped is not None:
                caps[log] = Head(seq - 1, wiped.header.prev) if seq > 1 else None
        self.caps = caps
        self.version += 1
        async with self.changed:
            self.changed.notify_all()

    def _follow_key_change(self) -> None:
        """Our club's key changed (`federation key rotate`, maybe in another process,
        protocol.md §2.2): sign with the key in force from now on. A node whose key was
        revoked keeps the key it has, which its peers now refuse."""
        current = KeyAuthority(self.genesis, self.node.histories).signing_key(self.club)
        if current is None or current == self.key.public:
            return
        with contextlib.suppress(FederationError):
            self.key = self.node.reload_key()

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
        """The logs `requester` may receive from us (protocol.md §5.4), with heads.
        Every input is a cache that `refresh` sets, bumping `version`: the answer is
        kept per requester until then (a no-change round asks for it on both sides).
        Callers must not change the dict returned."""
        if self._visible_version != self.version:
            self._visible_version, self._visible = self.version, {}
        found = self._visible.get(requester)
        if found is None:
            peers = self.active_peers()
            found = {
                log: r
                for log, r in self.logs.items()
                if r.head is not None
                and r.club not in self.blocked  # never relayed (dropped from the store too)
                and may_receive(
                    r.audience, r.club, requester, our_peers=peers, rosters=self.rosters
                )
            }
            if len(self._visible) < MAX_VISIBLE_KEPT:
                self._visible[requester] = found
        return found

    def all_heads(self) -> Mapping[bytes, Head | None]:
        """Every log we hold with its head; kept until the caches change (a round
        that stores nothing asks for it twice). Callers must not change it."""
        if self._heads_version != self.version:
            self._heads_version = self.version
            self._all_heads = {log: r.head for log, r in self.logs.items()}
            self._frozen_logs = frozenset(log for log, r in self.logs.items() if r.frozen)
        return self._all_heads

    def frozen_logs(self) -> frozenset[bytes]:
        """Our forked logs, which take nothing more (protocol.md §3.6)."""
        self.all_heads()
        return self._frozen_logs

    def quota(self) -> Quota:
        """What one answer of a peer may add (protocol.md §6.4), counted from the
        caches; its lasting refusals go into `refused`."""
        logs_of = Counter(r.club for r in self.logs.values() if r.club != self.club)
        return Quota(
            clubs=len(self.genesis.keys() - {self.club}),
            logs=sum(logs_of.values()),
            logs_of=logs_of,
            own=self.club,
            peers=self.active_peers(),
            blocked=self.blocked,
            limits=self.limits,
            lasting=self.refused,
        )

    def heads(self, records: dict[bytes, LogRecord]) -> dict[bytes, Head]:
        """The heads we serve: a log with a payload wiped here (not by its origin) is
        served only up to the event before it (protocol.md §3.5, `served_up_to`)."""
        heads = {log: r.head for log, r in records.items() if r.head is not None}
        for log, cap in self.caps.items():
            if log in heads:
                if cap is None:
                    del heads[log]
                elif cap.seq < heads[log].seq:
                    heads[log] = cap
        return heads

    def served_up_to(self, log: bytes) -> int | None:
        """The last seq of `log` we serve, if a payload wiped here cuts it short: we
        serve neither that event without its payload (peers would take it as missing
        everywhere, or worse) nor what follows it, which needs it in the chain."""
        if log not in self.caps:
            return None
        cap = self.caps[log]
        return 0 if cap is None else cap.seq

    def authorized(self, club: bytes, key: bytes) -> bool:
        """Who may sign a request for a club (protocol.md §5.2), decided by `core.keys`
        over the clubs this node holds: the club's current key only, so after a
        revocation the seized key's requests are served as anonymous (§2.2)."""
        return KeyAuthority(self.genesis, self.node.histories).is_signing_key(club, key)
