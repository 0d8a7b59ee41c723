"""An in-memory store for tests and simulations. Same contract as the SQLite store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from federation.core import canonical, payloads
from federation.core.canonical import Kind
from federation.core.events import Head, VerifiedEvent, VerifiedRun, runs_of
from federation.core.log import held_seq, rest_to_append
from federation.errors import InvalidEventError, StoreError
from federation.store.base import (
    ForkRecord,
    HeldEvent,
    LogRecord,
    PeerRecord,
    PeerStatus,
    ProjectionUpdate,
    RawEvent,
)


class MemoryStore:
    def __init__(self) -> None:
        self._clubs: dict[bytes, bytes] = {}
        self._logs: dict[bytes, bytes] = {}
        self._events: dict[bytes, list[VerifiedEvent]] = {}
        self._by_id: dict[bytes, tuple[bytes, int]] = {}
        self._frozen: set[bytes] = set()
        self._forks: list[ForkRecord] = []
        self._held: list[HeldEvent] = []
        self._positions: dict[bytes, int] = {}
        self._items: dict[tuple[str, str], bytes] = {}
        self._meta: dict[str, bytes] = {}
        self._peers: dict[bytes, PeerRecord] = {}
        self._blocked: dict[bytes, int] = {}
        self._missing: set[tuple[bytes, int]] = set()  # payload-less, not erased
        self._erased: dict[tuple[bytes, int], bool] = {}  # True: by its origin
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def _check_not_blocked(self, clubs: Iterable[bytes]) -> None:
        for club in clubs:
            if club in self._blocked:
                raise InvalidEventError("the club is blocked on this node", club=club)

    async def put_club(self, club: bytes, genesis: bytes) -> None:
        self._check_open()
        self._check_not_blocked([club])
        self._clubs.setdefault(club, genesis)

    async def clubs(self) -> dict[bytes, bytes]:
        return dict(self._clubs)

    async def put_log(self, log: bytes, descriptor: bytes) -> None:
        self._check_open()
        if log not in self._logs:
            self._check_not_blocked([canonical.decode_log(descriptor).club])
            self._logs[log] = descriptor
            self._events[log] = []

    def _record(self, log: bytes) -> LogRecord:
        d = canonical.decode_log(self._logs[log])
        events = self._events[log]
        head = Head(events[-1].header.seq, events[-1].id) if events else None
        return LogRecord(
            log, self._logs[log], d.club, d.name, d.audience, head, log in self._frozen
        )

    async def logs(self) -> list[LogRecord]:
        return [self._record(log) for log in self._logs]

    async def log(self, log: bytes) -> LogRecord | None:
        return self._record(log) if log in self._logs else None

    async def make_durable(self) -> None:
        self._check_open()  # nothing is on disk: nothing to wait for

    async def append_runs(
        self,
        runs: Sequence[VerifiedRun],
        *,
        clubs: Mapping[bytes, bytes] | None = None,
        logs: Mapping[bytes, bytes] | None = None,
        durable: bool = True,
    ) -> int:
        self._check_open()
        clubs, logs = clubs or {}, logs or {}
        new_clubs = [c for c in clubs if c not in self._clubs]
        new_logs = [log for log in logs if log not in self._logs]
        self._check_not_blocked(new_clubs)
        self._check_not_blocked(canonical.decode_log(logs[log]).club for log in new_logs)
        for club in new_clubs:
            await self.put_club(club, clubs[club])
        for log in new_logs:
            await self.put_log(log, logs[log])
        heads: dict[bytes, Head | None] = {}
        rests: list[VerifiedRun] = []
        try:  # check the whole batch first: all or nothing, as in one transaction
            for run in (run for run in runs if run.ids):
                if run.log not in self._logs:
                    raise InvalidEventError("unknown log: store its descriptor first", log=run.log)
                if run.log in self._frozen:
                    raise InvalidEventError(
                        "log is frozen after a fork", club=run.club, log=run.log
                    )
                if run.log not in heads:
                    heads[run.log] = self._record(run.log).head
                held = self._events[run.log]
                seq = held_seq(run, heads[run.log])
                held_id = None if seq is None else held[seq - 1].id
                club = canonical.decode_log(self._logs[run.log]).club
                rest = rest_to_append(run, heads[run.log], club, held_id)  # §3.4
                if rest is not None:
                    heads[run.log] = rest.head
                    rests.append(rest)
        except BaseException:
            for club in new_clubs:
                del self._clubs[club]
            for log in new_logs:
                del self._logs[log], self._events[log]
            raise
        erased = 0
        for rest in rests:
            for event in rest.events():
                self._events[rest.log].append(event)
                self._by_id[event.id] = (rest.log, event.header.seq)
                if event.payload is None:
                    self._missing.add((rest.log, event.header.seq))
                if event.header.kind == Kind.ERASURE:
                    erased += self._apply_erasure(rest.log, event.header.seq, event.payload)
        return erased

    def _apply_erasure(self, log: bytes, seq: int, payload: bytes | None) -> int:
        """protocol.md §3.5, as the SQLite store's `_apply_erasure`."""
        named = payloads.erasure_target(seq, payload)
        if named is None:
            return 0
        target = self._events[log][named[0] - 1]
        if not payloads.erases(named[0], target.id, target.header.kind, named):
            return 0
        self._events[log][named[0] - 1] = VerifiedEvent(
            target.id, target.header, target.signed, None
        )
        self._missing.discard((log, named[0]))
        self._erased[(log, named[0])] = True
        self._positions.pop(log, None)
        return 1

    async def fill_payload(
        self, log: bytes, seq: int, payload: bytes, *, durable: bool = True
    ) -> bool:
        self._check_open()
        if (log, seq) not in self._missing:
            return False
        held = self._events[log][seq - 1]
        self._events[log][seq - 1] = VerifiedEvent(held.id, held.header, held.signed, payload)
        self._missing.discard((log, seq))
        self._positions.pop(log, None)
        if held.header.kind == Kind.ERASURE:
            self._apply_erasure(log, seq, payload)
        return True

    async def missing_payloads(self) -> dict[bytes, int]:
        lowest: dict[bytes, int] = {}
        for log, seq in self._missing:
            if log in self._logs:  # not of a log dropped since (a blocked club's)
                lowest[log] = min(seq, lowest.get(log, seq))
        return lowest

    async def erasures(self, log: bytes) -> dict[int, bool]:
        return {seq: origin for (lg, seq), origin in self._erased.items() if lg == log}

    async def local_erasures(self) -> dict[bytes, int]:
        lowest: dict[bytes, int] = {}
        for (log, seq), origin in self._erased.items():
            if not origin and log in self._logs:
                lowest[log] = min(seq, lowest.get(log, seq))
        return lowest

    async def append(self, events: Sequence[VerifiedEvent]) -> None:
        await self.append_runs(runs_of(events))

    async def events(
        self, log: bytes, after_seq: int = 0, limit: int = 1000
    ) -> list[VerifiedEvent]:
        return self._events.get(log, [])[after_seq : after_seq + limit]

    async def raw_events(self, log: bytes, after_seq: int = 0, limit: int = 1000) -> list[RawEvent]:
        return [
            RawEvent(e.header.seq, e.signed, e.payload)
            for e in await self.events(log, after_seq, limit)
        ]

    async def event_at(self, log: bytes, seq: int) -> VerifiedEvent | None:
        held = self._events.get(log, [])
        return held[seq - 1] if 1 <= seq <= len(held) else None

    async def events_by_id_prefix(self, prefix: bytes, limit: int = 2) -> list[VerifiedEvent]:
        found = []
        for eid, (log, seq) in self._by_id.items():
            if eid.startswith(prefix):
                found.append(self._events[log][seq - 1])
                if len(found) >= limit:
                    break
        return found

    async def count_events(self) -> int:
        return len(self._by_id)

    async def erase(self, event: bytes, projection: ProjectionUpdate | None = None) -> bool:
        self._check_open()
        where = self._by_id.get(event)
        if where is None:
            return False
        log, seq = where
        held = self._events[log][seq - 1]
        self._missing.discard((log, seq))
        self._erased.setdefault((log, seq), False)  # wiped here, unless its origin erased it
        if held.payload is not None:
            self._events[log][seq - 1] = VerifiedEvent(held.id, held.header, held.signed, None)
            if projection is not None:
                await self.save_projection(projection)
        return True

    async def record_fork(self, fork: ForkRecord) -> None:
        self._check_open()
        if not any(f.log == fork.log and f.seq == fork.seq for f in self._forks):
            self._forks.append(fork)
        self._frozen.add(fork.log)

    async def forks(self) -> list[ForkRecord]:
        return list(self._forks)

    async def hold_apart(self, log: bytes, from_seq: int, reason: str, held_us: int) -> int:
        self._check_open()
        events = self._events.get(log, [])
        if from_seq < 1 or from_seq > len(events):
            return 0
        moved = events[from_seq - 1 :]
        del events[from_seq - 1 :]
        club = canonical.decode_log(self._logs[log]).club
        for e in moved:
            self._by_id.pop(e.id, None)
            self._missing.discard((log, e.header.seq))
            self._erased.pop((log, e.header.seq), None)
            self._held.append(HeldEvent(club, log, e.header.seq, e.signed, reason, held_us))
        self._forks = [
            msgspec.structs.replace(f, resolved=True) if f.log == log and f.seq >= from_seq else f
            for f in self._forks
        ]
        if not any(f.log == log and not f.resolved for f in self._forks):
            self._frozen.discard(log)
        self._positions.pop(log, None)
        return len(moved)

    async def held_apart(self) -> list[HeldEvent]:
        return list(self._held)

    async def block_club(self, club: bytes, blocked_us: int) -> int:
        self._check_open()
        dropped = 0
        for log in [
            log for log in self._logs if canonical.decode_log(self._logs[log]).club == club
        ]:
            for event in self._events.pop(log):
                del self._by_id[event.id]
                dropped += 1
            del self._logs[log]
            self._frozen.discard(log)
            self._positions.pop(log, None)
        self._clubs.pop(club, None)
        self._blocked.setdefault(club, blocked_us)
        return dropped

    async def unblock_club(self, club: bytes) -> bool:
        self._check_open()
        return self._blocked.pop(club, None) is not None

    async def blocked(self) -> dict[bytes, int]:
        return dict(self._blocked)

    async def projection_positions(self) -> dict[bytes, int]:
        return dict(self._positions)

    async def projection_items(self, name: str) -> dict[str, bytes]:
        return {k: v for (n, k), v in sorted(self._items.items()) if n == name}

    async def projection_get(self, name: str, keys: Sequence[str]) -> dict[str, bytes]:
        return {k: self._items[(name, k)] for k in keys if (name, k) in self._items}

    async def save_projection(self, update: ProjectionUpdate, *, replace: bool = False) -> None:
        self._check_open()
        if replace:
            self._items.clear()
            self._positions.clear()
        for key, value in update.items.items():
            if value is None:
                self._items.pop(key, None)
            else:
                self._items[key] = value
        self._positions.update(update.positions)

    async def put_peer(self, peer: PeerRecord) -> None:
        self._check_open()
        self._peers[peer.club] = peer

    async def peers(self) -> list[PeerRecord]:
        return sorted(self._peers.values(), key=lambda p: p.added_us)

    async def remove_peer(self, club: bytes) -> bool:
        self._check_open()
        return self._peers.pop(club, None) is not None

    async def set_peer_status(self, club: bytes, status: PeerStatus) -> None:
        self._check_open()
        if club in self._peers:
            self._peers[club] = msgspec.structs.replace(self._peers[club], status=status)

    async def get_meta(self, key: str) -> bytes | None:
        return self._meta.get(key)

    async def set_meta(self, key: str, value: bytes) -> None:
        self._check_open()
        self._meta[key] = value

    async def data_version(self) -> int:
        return 0  # one process, one connection: there is no one else to notice

    async def aclose(self) -> None:
        self._closed = True
