"""Blocking a club: the operator's answer to a club whose logs are junk (protocol.md §6.3).

`block` drops the club's logs, events and genesis and records the club as blocked,
in one transaction (`Store.block_club`). From then on ingest refuses its club record,
logs and events, the store refuses them too, the sync rounds stop asking for them
(`Runtime.refused`), and the serving side never lists or serves them
(`Runtime.visible`): a blocked club's logs are not relayed.

Our own club cannot be blocked. Nor can a peer, active or paused: the operator
removes it first (`federation peers remove`). Removing signs a roster event that
every partner acts on (§5.4), a decision a block should not take silently; and a
club still in our roster would be served our federation logs and synced with while
its own logs were being dropped.
"""

from __future__ import annotations

import msgspec

from federation.core.ids import short
from federation.core.naming import full_id, resolve_club
from federation.errors import UsageError
from federation.node import naming, projector
from federation.node.node import Node


class BlockedClub(msgspec.Struct, frozen=True):
    """A club as `block` and `unblock` report it."""

    club: bytes
    blocked_us: int
    logs: int = 0  # logs dropped by the block
    events: int = 0  # events dropped by the block
    already: bool = False  # it was blocked before (block), or was not blocked (unblock)


async def find_club(node: Node, ref: str, *, blocked_only: bool = False) -> bytes:
    """A club by name or id prefix (the one naming rule, node/naming.py), among the
    clubs this node knows; a full id names any club (one that is to be refused before
    it arrives). `blocked_only`: among the blocked clubs."""
    known = await naming.known_clubs(node)
    if blocked_only:
        blocked = await node.store.blocked()
        if not blocked:
            raise UsageError(f"no blocked club {ref!r}: no club is blocked here")
        known = [n for n in known if n.id in blocked]
        return resolve_club(ref, known, what="blocked club")
    whole = full_id(ref)
    if whole is not None and whole not in {n.id for n in known}:
        return whole
    return resolve_club(ref, known)


async def block(node: Node, ref: str) -> BlockedClub:
    club = await find_club(node, ref)
    if club == node.club:
        raise UsageError("that is this club: it cannot be blocked")
    peer = next((p for p in await node.store.peers() if p.club == club), None)
    if peer is not None:
        raise UsageError(
            f"{peer.name} is a peer of this club: remove it first with "
            f"`federation peers remove {short(club)}`, then block it"
        )
    held = await node.store.blocked()
    if club in held:
        return BlockedClub(club, held[club], already=True)
    logs = sum(1 for r in await node.store.logs() if r.club == club)
    now = node.clock()
    events = await node.store.block_club(club, now)
    node.genesis.pop(club, None)
    if events:  # the views may show its events: fold them again without them
        await projector.rebuild(node.store)
    return BlockedClub(club, now, logs, events)


async def unblock(node: Node, ref: str) -> BlockedClub:
    club = await find_club(node, ref, blocked_only=True)
    since = (await node.store.blocked())[club]
    await node.store.unblock_club(club)
    return BlockedClub(club, since)


async def blocked(node: Node) -> list[BlockedClub]:
    """The blocked clubs, the earliest blocked first."""
    held = await node.store.blocked()
    return [BlockedClub(c, us) for c, us in sorted(held.items(), key=lambda item: item[1])]
