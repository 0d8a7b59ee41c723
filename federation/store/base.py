"""The store interface: what a node keeps, behind a small async seam.

Split by concern: `LogStore` (clubs, logs, events, forks), `ViewStore` (the views'
saved rows and read positions) and `PeerStore` (peers and node metadata); `Store`
is their union, for code that needs them all. Code that needs one concern types
against the narrow one.

Two implementations (`memory` for tests and simulations, `sqlite` for real) pass
one contract suite (tests/store/test_contract.py). Only `VerifiedEvent`s can be
appended, so nothing unverified is ever stored by mistake.

Rules every implementation keeps (protocol.md §3.4, §3.5):
- `append` is atomic: the whole batch is stored or none of it. Each event must
  extend its log's head (seq + 1, prev = head id); otherwise InvalidEventError and
  nothing changes. Appends to a frozen (forked) log raise InvalidEventError.
- Once `append` returns, the events survive a crash (durable commit).
- `erase` drops a payload and keeps the header, so the chain still verifies.
- An appended erasure event (kind erasure) that erases an earlier event of its log
  (`core.payloads.erases`, protocol.md §3.5) drops that payload in the same
  transaction, records the event as erased by its origin, and resets the log's view
  read position (the views fold the log again): a crash never leaves it served.
- An event held without its payload, not erased, is *missing*: `missing_payloads`
  lists it, and `fill_payload` may store it later (the caller checked it against the
  header's hash and size); an erased payload (by its origin, or wiped here with
  `erase`) is never stored again.
- `block_club` drops a club's logs, events and genesis and records it as blocked, in
  one transaction; from then on `put_club`, `put_log` and `append_runs` refuse that
  club's genesis and logs with InvalidEventError (protocol.md §6.3). Fork records
  are kept (evidence is never deleted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec

from federation.core.canonical import Audience
from federation.core.events import Head, VerifiedEvent, VerifiedRun

# Events per read when a node walks a whole log (the views' fold, the audit, the
# rosters, export): one query's fixed cost (a round trip to the store's thread,
# ~50 us) is then negligible per event, while a page stays a few MB of typical
# events rather than a whole log in memory.
PAGE_EVENTS = 5000


class RawEvent(msgspec.Struct, frozen=True, gc=False):
    """A stored event as bytes, not decoded: what peers are sent and `verify` audits."""

    seq: int
    signed: bytes
    payload: bytes | None


class LogRecord(msgspec.Struct, frozen=True):
    """A log the store knows, with its descriptor bytes and current head."""

    id: bytes
    descriptor: bytes
    club: bytes
    name: str
    audience: Audience
    head: Head | None
    frozen: bool


class ForkRecord(msgspec.Struct, frozen=True):
    """Proof of a fork: two signed headers for one (log, seq). Kept, never deleted."""

    club: bytes
    log: bytes
    seq: int
    ours: bytes
    theirs: bytes
    detected_us: int
    # A later key event's cut left both events outside their key's window (protocol.md
    # §2.2): the club carried the log on, and the log is no longer frozen for it.
    resolved: bool = False


class HeldEvent(msgspec.Struct, frozen=True):
    """An event moved out of its log because its key may not sign it there (a key
    event's cut, protocol.md §2.2): kept as evidence, never served or relayed."""

    club: bytes
    log: bytes
    seq: int
    signed: bytes
    reason: str
    held_us: int


class PeerStatus(msgspec.Struct, frozen=True):
    """What the last sync rounds with a peer did (DESIGN principle 12)."""

    last_contact_us: int = 0  # last time the peer answered at all
    last_sync_us: int = 0  # last complete round
    logs: int = 0  # heads exchanged: logs in the peer's last frontier for us
    behind: int = 0  # events the peer holds for us that we do not (at the last round)
    received: int = 0  # events received from the peer, in total
    last_error: str = ""
    last_error_us: int = 0
    known: bytes | None = None  # digest of the peer's frontier after our last complete round
    # The last round that refused clubs or logs over a quota (protocol.md §6.4): kept
    # until a later round refuses some again, so an operator sees it and can block.
    quota_warning: str = ""
    quota_warning_us: int = 0


class PeerRecord(msgspec.Struct, frozen=True):
    """A club this node federates with: added from its invite."""

    club: bytes
    name: str
    url: str
    fingerprint: bytes  # sha256 of the peer's TLS certificate; empty for plain HTTP
    state: str  # "active" or "paused"
    added_us: int
    status: PeerStatus = PeerStatus()


class ProjectionUpdate(msgspec.Struct, frozen=True):
    """New projection rows (None deletes) and the read positions they reach, together."""

    items: Mapping[tuple[str, str], bytes | None]
    positions: Mapping[bytes, int]


class LogStore(Protocol):
    """Events and logs: clubs, logs, appends, reads, erasure and fork proofs."""

    async def put_club(self, club: bytes, genesis: bytes) -> None: ...
    async def clubs(self) -> dict[bytes, bytes]: ...
    async def put_log(self, log: bytes, descriptor: bytes) -> None: ...
    async def logs(self) -> list[LogRecord]: ...
    async def log(self, log: bytes) -> LogRecord | None: ...

    async def append(self, events: Sequence[VerifiedEvent]) -> None:
        """Append events in one transaction: all of them or none."""
        ...

    async def append_runs(
        self,
        runs: Sequence[VerifiedRun],
        *,
        clubs: Mapping[bytes, bytes] | None = None,
        logs: Mapping[bytes, bytes] | None = None,
        durable: bool = True,
    ) -> int:
        """The same for runs (bulk ingest): each must follow its log's head
        (`core.log.rest_to_append` decides, protocol.md §3.4). `clubs` (id -> genesis)
        and `logs` (id -> descriptor) are put first, in the same transaction: a peer's
        new log is kept with its first events or not at all. Returns how many payloads
        the appended erasure events erased (§3.5).

        Every commit is durable when it returns (on disk, across a power cut), except
        with durable=False: then it is durable once a later durable commit or
        `make_durable` returns; before that a power cut may lose it, and the commits
        after it, never the ones before. Only for what can be fetched again (a peer's
        events during a sync); never for a post of ours."""
        ...

    async def make_durable(self) -> None:
        """Every commit made so far is durable when this returns (`append_runs`)."""
        ...

    async def events(
        self, log: bytes, after_seq: int = 0, limit: int = 1000
    ) -> list[VerifiedEvent]: ...
    async def raw_events(
        self, log: bytes, after_seq: int = 0, limit: int = 1000
    ) -> list[RawEvent]: ...
    async def event_at(self, log: bytes, seq: int) -> VerifiedEvent | None: ...
    async def events_by_id_prefix(self, prefix: bytes, limit: int = 2) -> list[VerifiedEvent]: ...
    async def count_events(self) -> int: ...
    async def erase(self, event: bytes, projection: ProjectionUpdate | None = None) -> bool:
        """Drop the payload and, in the same transaction, save the projection rows it
        shaped: a crash can never leave erased text in a projection."""
        ...

    async def fill_payload(
        self, log: bytes, seq: int, payload: bytes, *, durable: bool = True
    ) -> bool:
        """Store the missing payload of the event at (log, seq), already checked
        against its header; if it is an erasure, apply it. False (nothing changes)
        unless that payload is missing here: held, or erased by origin or here.
        `durable` as in `append_runs` (a sync's fills are made durable with its
        commits)."""
        ...

    async def missing_payloads(self) -> dict[bytes, int]:
        """Each log holding events whose payload is missing (not erased), with the
        lowest such seq: what a sync round asks its peer for again (§6.3)."""
        ...

    async def erasures(self, log: bytes) -> dict[int, bool]:
        """The seqs of `log` whose payload is erased: True by its origin (an erasure
        event is held), False wiped here only."""
        ...

    async def local_erasures(self) -> dict[bytes, int]:
        """Each log with a payload wiped here (not by its origin), with the lowest
        such seq: the node serves that log only up to the event before (§3.5)."""
        ...

    async def record_fork(self, fork: ForkRecord) -> None: ...
    async def forks(self) -> list[ForkRecord]: ...

    async def hold_apart(self, log: bytes, from_seq: int, reason: str, held_us: int) -> int:
        """Move the log's events from `from_seq` on out of it, into the held-apart
        evidence, in one transaction (protocol.md §2.2): the head becomes the event
        before; forks of the log at or after `from_seq` are resolved, and the log is
        unfrozen once none is left; the views fold the log again. Returns how many
        events moved."""
        ...

    async def held_apart(self) -> list[HeldEvent]:
        """The events moved out of their logs, oldest first (never served)."""
        ...

    async def block_club(self, club: bytes, blocked_us: int) -> int:
        """Drop the club's logs, events, read positions and genesis, and refuse them
        from then on, in one transaction. Returns how many events were dropped."""
        ...

    async def unblock_club(self, club: bytes) -> bool:
        """Take the club again from peers; False if it was not blocked."""
        ...

    async def blocked(self) -> dict[bytes, int]:
        """The blocked clubs, with when each was blocked (microseconds)."""
        ...


class ViewStore(Protocol):
    """The views' saved state: rows and per-log read positions, committed together
    (a follower in the eventsourcing sense)."""

    async def projection_positions(self) -> dict[bytes, int]: ...
    async def projection_items(self, name: str) -> dict[str, bytes]: ...
    async def projection_get(self, name: str, keys: Sequence[str]) -> dict[str, bytes]: ...
    async def save_projection(self, update: ProjectionUpdate, *, replace: bool = False) -> None: ...


class PeerStore(Protocol):
    """Peers with their sync status, and small named values the node itself changes
    (typed ones, such as the restore guard, are read and written by `store.meta`)."""

    async def put_peer(self, peer: PeerRecord) -> None: ...
    async def peers(self) -> list[PeerRecord]: ...
    async def remove_peer(self, club: bytes) -> bool: ...
    async def set_peer_status(self, club: bytes, status: PeerStatus) -> None: ...

    async def get_meta(self, key: str) -> bytes | None: ...
    async def set_meta(self, key: str, value: bytes) -> None: ...


class Store(LogStore, ViewStore, PeerStore, Protocol):
    """The whole store, for code that needs every concern (the node, the runtime)."""

    async def data_version(self) -> int:
        """Changes whenever another connection (e.g. the CLI) committed a change."""
        ...

    async def aclose(self) -> None: ...
