"""Sync rounds with peers, and the loops that keep a running node in step with them.

One round (protocol.md §6.2): ask the peer for its frontier (long-polling when we
already hold everything it had), compare with ours in the sans-IO Session, stream
what we lack, verify and store it through Ingest. A running node follows each
active peer in a loop of rounds, backing off from one that fails, and records per-
peer status (DESIGN principle 12) in the store, where `federation status` reads it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import msgspec

from federation.errors import (
    FederationError,
    RemoteProtocolError,
)
from federation.node.ingest import Ingest
from federation.node.node import own_behind_key
from federation.node.runtime import Runtime
from federation.store.base import PeerRecord, PeerStatus
from federation.sync.messages import Batch, ClubInfo, Done, LogHead, LogInfo
from federation.sync.session import Session, State, own_logs_behind
from federation.web.client import PeerClient

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


async def sync_round(
    rt: Runtime,
    client: PeerClient,
    *,
    known: bytes | None,
    wait_s: float,
    advance: Advance | None = None,
    on_behind: Callable[[int], None] | None = None,
) -> RoundResult:
    """One round with one peer; repeats the want while the peer says there is more."""
    result = RoundResult()
    while True:
        local = {log: r.head for log, r in rt.logs.items()}
        session = Session(local, known, frozen={log for log, r in rt.logs.items() if r.frozen})
        want = session.on_frontier(await client.frontier(session.frontier_known(), wait_s))
        frontier = session.frontier
        assert frontier is not None
        result.digest = frontier.digest
        if frontier.logs is not None:
            result.logs = len(frontier.logs)
            result.changed = True
            await note_own_heads(rt, client.peer, frontier.logs)
        result.behind = session.behind(local)
        if on_behind is not None:
            on_behind(result.behind)
        if want is None:
            result.complete = True
            return result
        ingest = Ingest(rt.store, dict(rt.genesis), rt.clock)
        try:
            async for message in client.events(want):
                message = session.on_message(message)
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
                    break
            if session.state is not State.DONE:
                raise RemoteProtocolError("event stream ended without done", code="truncated")
        finally:
            await ingest.aclose()
            result.added += ingest.added
            result.already += ingest.already
            result.forks += len(ingest.forks)
            if ingest.added or ingest.forks:
                await rt.refresh(appended_only=True)
        now = {log: r.head for log, r in rt.logs.items()}
        result.behind = session.behind(now)
        if not session.more:
            # Complete only if we now hold every head the frontier showed.
            result.complete = result.behind == 0
            return result
        if now == local:
            # An honest peer says `more` only after a full response; one that says it and
            # moves no head would hold the round forever (DESIGN principle 13).
            raise RemoteProtocolError(
                "peer said it holds more but sent nothing new", code="no_progress"
            )
        known, wait_s = None, 0.0


async def note_own_heads(rt: Runtime, peer: PeerRecord, heads: list[LogHead]) -> None:
    """The restore guard (protocol.md §3.6, rule in `own_logs_behind`): record how far
    the peer holds our own logs beyond our heads, and who said so, so that `post`
    refuses to fork such a log until a sync has caught up."""
    ours = {log: r.head for log, r in rt.visible(peer.club).items() if r.club == rt.club}
    for log, seq in own_logs_behind(heads, ours).items():
        await rt.store.set_meta(own_behind_key(log), f"{seq}\n{peer.name}".encode())


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


async def follow_peer(rt: Runtime, client: PeerClient, log: Callable[[str], None]) -> None:
    """Keep in step with one peer until cancelled."""
    peer = client.peer
    status = peer.status
    backoff = BACKOFF_FIRST_S
    while True:
        try:
            result = await sync_round(
                rt, client, known=status.known, wait_s=LONG_POLL_S if status.known else 0.0
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
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
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
