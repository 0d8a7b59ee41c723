"""Delivery you can see: per peer and per log of ours, whether the peer holds our
latest event, and whether it still accepts our requests (issue 12, DESIGN principle 12).

What we know, and how sure it is:

- **held by**: in its answer to our frontier request, a peer lists each log it holds
  that we may receive, with its head (protocol.md §6.1); our own shared logs are among
  them (§5.4: a club may fetch its own logs back). Where the head it shows is the id
  of our own event at that seq, the peer showed it holds our log up to there. This is
  its word (a frontier is unsigned, DESIGN principle 15), recorded by the follow loop
  (`note_frontier`) and only ever shown, never acted on. A head that is not ours at
  that seq counts as nothing held.
- **sent** (`store.meta.delivered`): the last seq an events answer of ours streamed to
  the peer. That we sent it is no proof it arrived or was kept, so it is not "held".
- **refuses us**: a peer that pauses or removes us serves us as an anonymous reader
  (§5.2): its frontier for us stops listing its own roster log, which an active peer
  it has added always receives (§5.4). And a request it refuses with `unauthenticated`,
  `expired` or `replayed` (§7) is a refusal too. Either is kept, with its time, until
  its frontier shows its roster to us again.

Only logs the peer may receive from us (`core.selection.may_receive`) count: a private
log is no one's to hold, and a log of `clubs:` that leaves a peer out is not late there.
"""

from __future__ import annotations

import msgspec

from federation.core.events import Head, VerifiedEvent
from federation.core.log import format_audience
from federation.core.selection import fold_roster, may_receive, roster_log_id
from federation.errors import FederationError, RemoteProtocolError
from federation.store.base import PAGE_EVENTS, LogRecord, PeerRecord, Store
from federation.store.meta import (
    Held,
    Refusal,
    read_held,
    read_refusal,
    write_held,
    write_refusal,
)
from federation.sync.messages import LogHead

# What a peer's refusal is called for people, by the error code it answered (§7).
REFUSING_CODES = {
    "unauthenticated": "refuses our requests (unauthenticated)",
    "expired": "refuses our requests as expired (check both clocks)",
    "replayed": "refuses our requests as replayed",
}
NOT_A_PEER = "no longer accepts our requests (paused or removed us)"


# --- recording (the follow loop) ------------------------------------------------------


async def note_frontier(
    store: Store,
    peer: PeerRecord,
    *,
    accepts: bool,
    heads: list[LogHead],
    ours: dict[bytes, Head | None],
    now_us: int,
) -> None:
    """After a round that got a new frontier from `peer`: whether it accepts us (its
    roster log was listed), and how far it holds each of our logs `ours` (those it may
    receive, at our heads). `heads`: what its frontier showed of our own logs."""
    refusal = await read_refusal(store, peer.club)
    if not accepts:
        if refusal is None or refusal.why != NOT_A_PEER:
            await write_refusal(store, peer.club, Refusal(now_us, NOT_A_PEER))
        return  # what it held stays as last shown: an anonymous view says nothing of it
    if refusal is not None:
        await write_refusal(store, peer.club, None)
    listed = {h.log: h for h in heads}
    for log, head in ours.items():
        entry = listed.get(log)
        seq = 0
        if entry is not None and head is not None and entry.seq <= head.seq:
            if entry.seq == head.seq:
                mine = head.id
            else:
                held = await store.event_at(log, entry.seq)
                mine = held.id if held is not None else b""
            seq = entry.seq if mine == entry.head else 0
        elif entry is not None:
            continue  # beyond our head: the restore guard's business (§3.6), not delivery
        before = await read_held(store, peer.club, log)
        if before.seq != seq:
            await write_held(store, peer.club, log, Held(seq, now_us))


async def note_error(store: Store, peer: PeerRecord, exc: FederationError, now_us: int) -> None:
    """A failed round: a refusal by the peer is recorded; anything else (unreachable,
    a broken answer) says nothing of whether it accepts us."""
    if isinstance(exc, RemoteProtocolError) and exc.code in REFUSING_CODES:
        why = REFUSING_CODES[exc.code]
        refusal = await read_refusal(store, peer.club)
        if refusal is None or refusal.why != why:
            await write_refusal(store, peer.club, Refusal(now_us, why))


# --- reading (status, show) -----------------------------------------------------------


class LogDelivery(msgspec.Struct, frozen=True):
    """One log of ours at one peer: our head, and what the peer showed it holds."""

    log: bytes
    name: str
    audience: str
    head_seq: int
    held_seq: int
    held_since_us: int  # when its frontier first showed that seq (0: never)

    @property
    def delivered(self) -> bool:
        return self.held_seq >= self.head_seq


class PeerDelivery(msgspec.Struct, frozen=True):
    """What one peer holds of our logs, and whether it accepts our requests."""

    club: bytes
    name: str
    state: str  # ours of it: "active" or "paused"
    last_contact_us: int
    refused: Refusal | None
    logs: list[LogDelivery]  # our logs with events that it may receive

    @property
    def delivered(self) -> bool:
        return all(entry.delivered for entry in self.logs)


async def _own_roster(store: Store, club: bytes) -> frozenset[bytes] | None:
    roster: set[bytes] = set()
    known = True
    after = 0
    while page := await store.events(roster_log_id(club), after, PAGE_EVENTS):
        after = page[-1].header.seq
        known = fold_roster(roster, page) and known
    return frozenset(roster) if known else None


async def _may_receive(
    store: Store, club: bytes
) -> tuple[list[PeerRecord], dict[bytes, set[bytes]]]:
    """Our peers, and for each of our logs with events, the peers that may receive it."""
    peers = await store.peers()
    active = frozenset(p.club for p in peers if p.state == "active")
    rosters = {club: await _own_roster(store, club)}
    allowed: dict[bytes, set[bytes]] = {}
    for record in await store.logs():
        if record.club != club or record.head is None:
            continue
        allowed[record.id] = {
            p.club
            for p in peers
            if may_receive(record.audience, club, p.club, our_peers=active, rosters=rosters)
        }
    return peers, allowed


async def deliveries(store: Store, club: bytes) -> list[PeerDelivery]:
    """For each peer, what it showed it holds of each of our logs it may receive."""
    peers, allowed = await _may_receive(store, club)
    records = {r.id: r for r in await store.logs() if r.id in allowed}
    found = []
    for p in peers:
        logs = []
        for log, record in records.items():
            if p.club not in allowed[log]:
                continue
            held = await read_held(store, p.club, log)
            logs.append(_log_delivery(record, held))
        found.append(
            PeerDelivery(
                p.club,
                p.name,
                p.state,
                p.status.last_contact_us,
                await read_refusal(store, p.club),
                sorted(logs, key=lambda entry: entry.name),
            )
        )
    return found


def _log_delivery(record: LogRecord, held: Held) -> LogDelivery:
    assert record.head is not None
    return LogDelivery(
        record.id,
        record.name,
        format_audience(record.audience),
        record.head.seq,
        held.seq,
        held.seen_us,
    )


class EventDelivery(msgspec.Struct, frozen=True):
    """Which peers showed they hold one event of ours, which may receive it but did
    not show it yet, and whether the log leaves this node at all."""

    held_by: list[bytes]
    not_yet: list[bytes]
    leaves_node: bool


async def event_delivery(store: Store, club: bytes, event: VerifiedEvent) -> EventDelivery | None:
    """For one of our own events (None for another club's: its origin knows)."""
    h = event.header
    if h.club != club:
        return None
    peers, allowed = await _may_receive(store, club)
    record = await store.log(h.log)
    if record is None:
        return None
    if record.audience.kind == "private":
        return EventDelivery([], [], leaves_node=False)
    held_by: list[bytes] = []
    not_yet: list[bytes] = []
    for p in peers:
        if p.club not in allowed.get(h.log, set()):
            continue
        held = await read_held(store, p.club, h.log)
        (held_by if held.seq >= h.seq else not_yet).append(p.club)
    return EventDelivery(held_by, not_yet, leaves_node=True)


# --- for people (cli/club.py draws the lines) ------------------------------------------


def by_log(found: list[PeerDelivery]) -> dict[str, list[tuple[PeerDelivery, LogDelivery]]]:
    """The same records, log by log (by log name): `status` draws a line of each."""
    logs: dict[str, list[tuple[PeerDelivery, LogDelivery]]] = {}
    for p in found:
        for entry in p.logs:
            logs.setdefault(entry.name, []).append((p, entry))
    return dict(sorted(logs.items()))
