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
from collections.abc import Callable

import msgspec

from federation.core.events import Head
from federation.errors import FederationError
from federation.node.ingest import Ingest, open_ingest
from federation.node.runtime import Runtime
from federation.node.system import jitter
from federation.node.transport import PeerTransport
from federation.store.base import PeerRecord, PeerStatus
from federation.store.meta import RestoreGuard, write_restore_guard
from federation.sync.messages import Batch, ClubInfo, Done, LogHead, LogInfo, Want
from federation.sync.session import Session, State, own_logs_behind

# A long-poll asks the peer to hold the frontier request this long when nothing
# changed; the peer answers at once when something does.
LONG_POLL_S = 25.0
# Backoff from a failing peer: doubling from the first to the last, with jitter so
# that clubs restarting together do not retry in step.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0

Advance = Callable[[int], None]


class RoundResult(msgspec.Struct):
    added: int = 0
    already: int = 0
    forks: int = 0
    behind: int = 0
    logs: int = 0
    changed: bool = False
    complete: bool = False
    digest: bytes | None = None


def _heads(rt: Runtime) -> dict[bytes, Head | None]:
    return {log: r.head for log, r in rt.logs.items()}


async def sync_round(
    rt: Runtime,
    transport: PeerTransport,
    *,
    known: bytes | None,
    wait_s: float,
    advance: Advance | None = None,
    on_behind: Callable[[int], None] | None = None,
) -> RoundResult:
    """One round with one peer, asking again while the peer says there is more."""
    result = RoundResult()
    frozen = {log for log, r in rt.logs.items() if r.frozen}
    session = Session(_heads(rt), known, frozen, wait_s=wait_s)
    while session.state is not State.CLOSED:
        known = session.frontier_known()
        want = session.on_frontier(await transport.frontier(known, session.wait_s))
        frontier = session.frontier
        assert frontier is not None
        result.digest = frontier.digest
        if frontier.logs is not None:
            result.logs = len(frontier.logs)
            result.changed = True
            await note_own_heads(rt, transport.peer, frontier.logs)
        result.behind = session.behind(session.local)
        if on_behind is not None:
            on_behind(result.behind)
        if want is not None:
            await _take(rt, transport, session, want, result, advance)
        session.stored(_heads(rt))
    result.behind = session.behind(session.local)
    result.complete = session.complete
    return result


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
            open_ingest(rt.store, dict(rt.genesis), rt.clock) as ingest,
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
                        raise error
                elif isinstance(message, Done):
                    break  # read no further: anything after done is not ours to take
            session.end_of_stream()
    finally:
        if ingest is not None:
            result.added += ingest.added
            result.already += ingest.already
            result.forks += len(ingest.forks)
            if ingest.added or ingest.forks:
                await rt.refresh(appended_only=True)


async def note_own_heads(rt: Runtime, peer: PeerRecord, heads: list[LogHead]) -> None:
    """The restore guard (protocol.md §3.6, rule in `own_logs_behind`): record how far
    the peer holds our own logs beyond our heads, and who said so, so that `post`
    refuses to fork such a log until a sync has caught up."""
    ours = {log: r.head for log, r in rt.visible(peer.club).items() if r.club == rt.club}
    for log, seq in own_logs_behind(heads, ours).items():
        await write_restore_guard(rt.store, RestoreGuard(log, seq, peer.name))


def status_after(status: PeerStatus, result: RoundResult, now_us: int) -> PeerStatus:
    """A peer's status after a round that answered (DESIGN principle 12)."""
    return msgspec.structs.replace(
        status,
        last_contact_us=now_us,
        last_sync_us=now_us if result.complete else status.last_sync_us,
        logs=result.logs or status.logs,
        behind=result.behind,
        received=status.received + result.added,
        known=result.digest if result.complete else None,
        last_error="" if result.complete else status.last_error,
    )


def with_error(status: PeerStatus, exc: FederationError, now_us: int) -> PeerStatus:
    return msgspec.structs.replace(status, last_error=str(exc), last_error_us=now_us, known=None)


async def follow_peer(rt: Runtime, transport: PeerTransport, log: Callable[[str], None]) -> None:
    """Keep in step with one peer until cancelled."""
    peer = transport.peer
    status = peer.status
    backoff = BACKOFF_FIRST_S
    while True:
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
            log(
                str(error)
                if str(error).startswith(f"peer {peer.name}")
                else f"peer {peer.name}: {error}"
            )
            await asyncio.sleep(backoff * jitter(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            continue
        backoff = BACKOFF_FIRST_S
        status = status_after(status, result, rt.clock())
        if result.changed or result.added:
            await rt.store.set_peer_status(peer.club, status)
        if result.added:
            log(f"peer {peer.name}: received {result.added} events")
        if result.forks:
            log(f"peer {peer.name}: FORK detected; the log is frozen, see `federation status`")
