"""Sync rounds with peers, and the loops that keep a running node in step with them.

One round (protocol.md §6.2) is the I/O around a sans-IO `sync.session.Session`,
which holds every rule of it: the shell asks a PeerTransport for what the session
asks for, feeds it what arrives, verifies and stores the batches through Ingest,
and reports the heads it then holds. A running node follows each active peer in a
loop of rounds, backing off from one that fails, and records per-peer status
(DESIGN principle 12) in the store, where `federation status` reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec

from federation.core import canonical
from federation.core.events import Head, verify_event
from federation.core.selection import roster_log_id
from federation.errors import (
    FederationError,
    ForkError,
    InvalidEventError,
    PeerUnavailableError,
)
from federation.node import delivery
from federation.node.ingest import Ingest, open_ingest
from federation.node.runtime import Runtime
from federation.node.system import jitter
from federation.node.transport import PeerTransport
from federation.store.base import PeerRecord, PeerStatus
from federation.store.meta import (
    NEW_LOGS,
    RestoreGuard,
    clear_restore_guard,
    confirm_restored,
    read_restore_guard,
    restored_logs,
    write_restore_guard,
)
from federation.sync import quota as quotas
from federation.sync.messages import Batch, ClubInfo, Done, LogHead, LogInfo, Want
from federation.sync.quota import Refusal
from federation.sync.session import Session, State, own_logs_behind

# A long-poll asks the peer to hold the frontier request this long when nothing
# changed; the peer answers at once when something does.
LONG_POLL_S = 25.0
# Backoff from a failing peer: doubling from the first to the last, with jitter so
# that clubs restarting together do not retry in step.
BACKOFF_FIRST_S = 1.0
# Rounds that changed nothing start at least this far apart: a peer that answers a
# long-poll "unchanged" at once (busy, shutting down, or hostile) is not asked again
# in a tight loop of signed requests.
MIN_POLL_INTERVAL_S = 1.0
# A whole round, long-poll included, ends within this, or fails naming the peer: no
# peer can hold a round (or `federation sync`) open, whatever it sends or how slowly.
# An honest round moves a 250,000-event answer in well under a minute here; a longer
# one is cut, keeps what it stored (§6.3), and the next round goes on from there.
ROUND_DEADLINE_S = 180.0
BACKOFF_MAX_S = 60.0

Advance = Callable[[int], None]

_log = logging.getLogger(__name__)


class RoundResult(msgspec.Struct):
    added: int = 0
    already: int = 0
    forks: int = 0
    behind: int = 0
    logs: int = 0
    changed: bool = False
    complete: bool = False
    digest: bytes | None = None
    warnings: list[str] = msgspec.field(default_factory=list)
    refused: dict[bytes, Refusal] = msgspec.field(default_factory=dict)  # log -> why
    # A key event taken this round moved events out of their logs (protocol.md §2.2):
    # the wants were computed from heads since lowered, so the next round asks again
    # with a full frontier rather than "unchanged".
    held_apart: int = 0


async def sync_round(
    rt: Runtime,
    transport: PeerTransport,
    *,
    known: bytes | None,
    wait_s: float,
    advance: Advance | None = None,
    on_behind: Callable[[int], None] | None = None,
    deadline_s: float = ROUND_DEADLINE_S,
) -> RoundResult:
    """One round with one peer, asking again while the peer says there is more, and
    over by `deadline_s` (PeerUnavailableError naming the peer)."""
    deadline = asyncio.timeout(deadline_s)
    try:
        async with deadline:
            return await _round(rt, transport, known, wait_s, advance, on_behind)
    except TimeoutError:
        if not deadline.expired():
            raise
        peer = transport.peer
        raise PeerUnavailableError(
            f"peer {peer.name} ({peer.url}) held the round past its deadline of "
            f"{deadline_s:g} s; what arrived was kept, and the next round goes on from it",
            peer=peer.name,
        ) from None


async def _round(
    rt: Runtime,
    transport: PeerTransport,
    known: bytes | None,
    wait_s: float,
    advance: Advance | None,
    on_behind: Callable[[int], None] | None,
) -> RoundResult:
    result = RoundResult()
    peer = transport.peer
    frozen = rt.frozen_logs() | rt.refused  # §6.3, §6.4
    visible = rt.visible(peer.club)
    # Logs we hold that this peer may not receive: the session acts as if we did not
    # hold them, so our wants never depend on them (protocol.md §5.4, §6.2).
    hidden = rt.logs.keys() - visible.keys()
    own = {log: r.head for log, r in visible.items() if r.club == rt.club}
    their_roster = roster_log_id(peer.club)
    refetch = dict(rt.missing)  # payloads to fill in (protocol.md §6.3)
    session = Session(rt.all_heads(), known, frozen, hidden=hidden, refetch=refetch, wait_s=wait_s)
    while session.state is not State.CLOSED:
        known = session.frontier_known()
        claims: list[LogHead] = []  # what this frontier shows of our own logs
        accepts = False  # it lists its roster log: it takes us as its peer (node/delivery.py)
        shown: list[LogHead] = []  # our own logs in it, as the runtime knows them now
        while True:  # the frontier's pages (§6.1)
            if session.pages == 0:
                answer = await transport.frontier(known, session.wait_s)
            else:
                answer = await transport.frontier(None, 0.0, session.cursor)
            want = session.on_frontier(answer)
            frontier = session.frontier
            assert frontier is not None
            if frontier.logs is not None:
                claims += (entry for entry in frontier.logs if entry.log in own)
                accepts = accepts or any(e.log == their_roster for e in frontier.logs)
                shown += (e for e in frontier.logs if _ours(rt, e.log))
            if session.state is not State.AWAIT_FRONTIER:
                break
        result.digest = session.digest
        if frontier.logs is not None:
            result.logs = session.listed
            result.changed = True
        result.behind = session.behind(session.local)
        if on_behind is not None:
            on_behind(result.behind)
        while want is not None:
            await _take(rt, transport, session, want, result, advance)
            want = session.next_want()
        if frontier.logs is not None:
            await note_own_heads(rt, peer, claims)
            # Our heads now, not at the round's start: a post made during a long-poll
            # is what the peer's frontier then shows.
            now = {log: r.head for log, r in rt.visible(peer.club).items() if r.club == rt.club}
            await delivery.note_frontier(
                rt.store, peer, accepts=accepts, heads=shown, ours=now, now_us=rt.clock()
            )
        # What this pass froze or refused for good, the next pass of a `more` answer
        # does not ask for again (§6.4).
        session.stored(rt.all_heads(), rt.frozen_logs() | rt.refused)
    result.behind = session.behind(session.local)
    result.complete = session.complete
    return result


def _ours(rt: Runtime, log: bytes) -> bool:
    record = rt.logs.get(log)
    return record is not None and record.club == rt.club


async def _take(
    rt: Runtime,
    transport: PeerTransport,
    session: Session,
    want: Want,
    result: RoundResult,
    advance: Advance | None,
) -> None:
    """Ask for `want` and store what arrives; what verified is kept, even when the
    round then fails (protocol.md §6.3)."""
    ingest: Ingest | None = None
    try:
        async with (
            open_ingest(rt.store, dict(rt.genesis), rt.clock, quota=rt.quota()) as ingest,
            contextlib.aclosing(transport.events(want)) as stream,
        ):
            async for arrived in stream:
                message = session.on_message(arrived)
                if isinstance(message, ClubInfo):
                    ingest.offer_club(message.id, message.genesis, limit=len(want.logs))
                elif isinstance(message, LogInfo):
                    await ingest.log(message.id, message.descriptor)
                elif isinstance(message, Batch):
                    taken, error = await ingest.run(message.log, message.events)
                    if advance is not None:
                        advance(taken)
                    if error is not None:
                        await _evidence(rt, transport.peer, ingest, message, taken, error)
                        raise error
                elif isinstance(message, Done):
                    break  # read no further: anything after done is not ours to take
            session.end_of_stream()
    finally:
        if ingest is not None:
            result.added += ingest.added
            result.already += ingest.already
            result.forks += len(ingest.forks)
            # Refused over a quota (§6.4): one line a reason for the whole round, however
            # many `more` passes asked.
            result.refused.update(ingest.refused)
            result.warnings = quotas.warnings(result.refused)
            result.held_apart += ingest.held_apart
            if ingest.added or ingest.forks or ingest.filled or ingest.held_apart:
                # A payload filled in, or events held apart, is no append: rosters fold
                # again (§5.4).
                await rt.refresh(appended_only=not (ingest.filled or ingest.held_apart))


async def note_own_heads(rt: Runtime, peer: PeerRecord, heads: list[LogHead]) -> None:
    """The restore guard's claims (protocol.md §3.6, rule in `own_logs_behind`), after
    the round fetched what it could: record how far the peer's frontier still shows
    our own logs beyond our heads, as a warning for `federation status` (a claim is
    unsigned: it holds nothing back). This peer's claims it no longer makes, and any
    guard we have caught up with, are cleared."""
    records = rt.store
    ours = {log: r.head for log, r in rt.visible(peer.club).items() if r.club == rt.club}
    await _confirm_restored(rt, heads, ours)
    claimed = own_logs_behind(heads, ours)
    for log, head in ours.items():
        held = head.seq if head else 0
        if log in claimed:
            claim = RestoreGuard(log, claimed[log], peer.name, peer.club, evidence=False)
            await write_restore_guard(records, claim)
            continue
        for evidence in (False, True):
            guard = await read_restore_guard(records, log, evidence=evidence)
            if guard is not None and (
                guard.seq <= held or (guard.club == peer.club and not evidence)
            ):
                await clear_restore_guard(records, log, evidence=evidence)


async def _confirm_restored(
    rt: Runtime, heads: list[LogHead], ours: dict[bytes, Head | None]
) -> None:
    """After a restore (protocol.md §3.6) a log of ours may be written again once a peer
    shows an event of ours in it at or beyond the seq held when restored, and it is the
    event we hold there: the id is the hash of the signed header, so only a node that
    holds our signed event can show it. A frontier that shows more than we could fetch
    confirms nothing. A full frontier from a peer also confirms the logs made after the
    restore: any of ours it held were in it, and were fetched."""
    waiting = await restored_logs(rt.store)
    if not waiting:
        return
    shown = {entry.log: entry for entry in heads}
    confirmed = [NEW_LOGS]
    for log, at_restore in waiting.items():
        entry = shown.get(log)
        head = ours.get(log)
        if entry is None or head is None or not at_restore <= entry.seq <= head.seq:
            continue
        if entry.seq == head.seq:
            held = head.id
        else:
            page = await rt.store.events(log, entry.seq - 1, 1)
            held = page[0].id if page else b""
        if held == entry.head:
            confirmed.append(log)
    await confirm_restored(rt.store, confirmed)


async def _evidence(
    rt: Runtime,
    peer: PeerRecord,
    ingest: Ingest,
    batch: Batch,
    taken: int,
    error: FederationError,
) -> None:
    """A batch of our own log that we could not take: if it holds a validly signed
    event of ours beyond our head, that is evidence that this node lost writes (a
    restore from an old backup), and the log is held back until it has caught up
    (protocol.md §3.6). A fork is its own evidence (the log is frozen); junk, or an
    event that does not verify, is no evidence of anything."""
    if isinstance(error, ForkError) or rt.logs.get(batch.log) is None:
        return
    if rt.logs[batch.log].club != rt.club:
        return
    head = ingest.heads.get(batch.log)
    held = head.seq if head else 0
    rest = batch.events[taken:]
    # At most two signature checks a failed batch (and a failed batch ends the round).
    for signed, _ in dict.fromkeys([rest[0], rest[-1]] if rest else []):
        try:
            header = canonical.decode_header(signed)
            if header.club != rt.club or header.log != batch.log or header.seq <= held:
                continue
            verify_event(signed, None, rt.authorized)
        except InvalidEventError:
            continue
        guard = RestoreGuard(batch.log, header.seq, peer.name, peer.club, evidence=True)
        await write_restore_guard(rt.store, guard)
        return


def status_after(status: PeerStatus, result: RoundResult, now_us: int) -> PeerStatus:
    """A peer's status after a round that answered (DESIGN principle 12)."""
    return msgspec.structs.replace(
        status,
        last_contact_us=now_us,
        last_sync_us=now_us if result.complete else status.last_sync_us,
        logs=result.logs or status.logs,
        behind=result.behind,
        received=status.received + result.added,
        known=result.digest if result.complete and not result.held_apart else None,
        last_error="" if result.complete else status.last_error,
        quota_warning="; ".join(result.warnings) or status.quota_warning,
        quota_warning_us=now_us if result.warnings else status.quota_warning_us,
    )


def with_error(status: PeerStatus, exc: FederationError, now_us: int) -> PeerStatus:
    return msgspec.structs.replace(status, last_error=str(exc), last_error_us=now_us, known=None)


def _report(log: Callable[[str], None] | None, level: int, line: str) -> None:
    # Through `logging` (`federation run` writes it with time and level, escaped);
    # `log` also receives the line (tests collect them).
    _log.log(level, "%s", line)
    if log is not None:
        log(line)


async def follow_peer(
    rt: Runtime, transport: PeerTransport, log: Callable[[str], None] | None = None
) -> None:
    """Keep in step with one peer until cancelled."""
    peer = transport.peer
    status = peer.status
    backoff = BACKOFF_FIRST_S
    while True:
        started = asyncio.get_running_loop().time()
        try:
            result = await sync_round(
                rt, transport, known=status.known, wait_s=LONG_POLL_S if status.known else 0.0
            )
        except Exception as exc:  # FederationErrors: the peer failed; others: see below
            # Anything else is a bug, but a bug met with one peer must not stop the node
            # serving and following the others: report it and back off like a failure.
            error = (
                exc
                if isinstance(exc, FederationError)
                else FederationError(
                    f"internal error ({type(exc).__name__}: {exc}); please report it"
                )
            )
            status = with_error(status, error, rt.clock())
            await rt.store.set_peer_status(peer.club, status)
            await delivery.note_error(rt.store, peer, error, rt.clock())
            _report(
                log,
                logging.WARNING if isinstance(exc, FederationError) else logging.ERROR,
                str(error)
                if str(error).startswith(f"peer {peer.name}")
                else f"peer {peer.name}: {error}",
            )
            await asyncio.sleep(backoff * jitter(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            continue
        if result.complete or result.added:
            backoff = BACKOFF_FIRST_S
        else:
            # The peer shows events it does not send (a bare claim, a log it will not
            # serve): wait as after a failure, or its frontier would spin us (§6.2).
            await asyncio.sleep(backoff * jitter(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        if not (result.changed or result.added):  # "unchanged" early: do not spin (§6.5)
            early_s = started + MIN_POLL_INTERVAL_S - asyncio.get_running_loop().time()
            await asyncio.sleep(max(0.0, early_s))
        status = status_after(status, result, rt.clock())
        if result.changed or result.added:
            await rt.store.set_peer_status(peer.club, status)
        if result.added:
            events = "event" if result.added == 1 else "events"
            _report(log, logging.INFO, f"peer {peer.name}: received {result.added} {events}")
        if result.forks:
            _report(
                log,
                logging.WARNING,
                f"peer {peer.name}: FORK detected; the log is frozen, see `federation status`",
            )
