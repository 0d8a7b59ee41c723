"""Typed node metadata in the store's meta table, encoded and decoded here only.

The restore guard (protocol.md §3.6), for each of the club's own logs, in two kinds:

- a **claim**: a peer's frontier showed the log beyond our head. Unsigned, so only a
  warning (DESIGN principle 15), shown by `federation status`;
- **evidence**: a peer sent a validly signed event of ours beyond our head that we
  could not take (it does not continue our head). Only this holds the log back:
  `Node.post` refuses it until the node has caught up.

Either counts only while the node is behind it and the peer that showed it is an
active peer: catching up, pausing or removing that peer clears it. The roster log is
never held back (`peers remove` writes to it). `node/follow.py` writes both.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from federation.store.base import PeerStore

_GUARD_PREFIX = "own_behind:"
_CLAIM_PREFIX = "own_claim:"


class RestoreGuard(msgspec.Struct, frozen=True):
    """A peer (`peer` for people, `club` its id) showed our own log `log` up to `seq`:
    with a validly signed event of ours if `evidence`, else only in its frontier."""

    log: bytes
    seq: int
    peer: str
    club: bytes = b""
    evidence: bool = True


def _key(log: bytes, *, evidence: bool) -> str:
    return f"{_GUARD_PREFIX if evidence else _CLAIM_PREFIX}{log.hex()}"


# The value is "v2\nseq\nclub\npeer" in UTF-8, the peer's name last: it is another
# club's text and may hold anything, newlines too. Guards of stores made before
# claims and evidence were told apart are "seq\npeer", with no club: read back as
# claims, since they were written from bare frontiers, so they warn and block nothing.
_VERSION = "v2\n"


def _encode(guard: RestoreGuard) -> bytes:
    return f"{_VERSION}{guard.seq}\n{guard.club.hex()}\n{guard.peer}".encode()


def _decode(log: bytes, value: bytes, *, evidence: bool) -> RestoreGuard | None:
    if not value:
        return None  # cleared
    text = value.decode(errors="replace")
    club = b""
    if text.startswith(_VERSION):
        seq, _, rest = text.removeprefix(_VERSION).partition("\n")
        club_hex, _, peer = rest.partition("\n")
        if len(club_hex) == 64 and all(c in "0123456789abcdef" for c in club_hex):
            club = bytes.fromhex(club_hex)
    else:
        seq, _, peer = text.partition("\n")
    return RestoreGuard(
        log,
        int(seq) if seq.isascii() and seq.isdigit() else 0,
        peer,
        club,
        evidence=evidence and bool(club),
    )


async def read_restore_guard(
    store: PeerStore, log: bytes, *, evidence: bool = True
) -> RestoreGuard | None:
    """What a peer showed of our own log `log` (its evidence, or its claim), as
    recorded, or None."""
    value = await store.get_meta(_key(log, evidence=evidence))
    return None if value is None else _decode(log, value, evidence=evidence)


async def write_restore_guard(store: PeerStore, guard: RestoreGuard) -> None:
    await store.set_meta(_key(guard.log, evidence=guard.evidence), _encode(guard))


async def clear_restore_guard(store: PeerStore, log: bytes, *, evidence: bool) -> None:
    await store.set_meta(_key(log, evidence=evidence), b"")


async def restore_guards(
    store: PeerStore, heads: Iterable[tuple[bytes, int]]
) -> list[RestoreGuard]:
    """The guards that count now, for our own logs at `heads` (log, seq held): beyond
    our head, and shown by a peer that is still active. Evidence first, then claims."""
    active = {p.club for p in await store.peers() if p.state == "active"}
    found = []
    for log, held in heads:
        for evidence in (True, False):
            guard = await read_restore_guard(store, log, evidence=evidence)
            if guard is not None and guard.seq > held and guard.club in active:
                found.append(guard)
    return sorted(found, key=lambda g: not g.evidence)


async def holding_back(store: PeerStore, log: bytes, held: int) -> RestoreGuard | None:
    """The evidence that holds our own log `log` back (protocol.md §3.6), or None."""
    guards = await restore_guards(store, [(log, held)])
    return guards[0] if guards and guards[0].evidence else None


# Delivery (what `federation erase` reports, protocol.md §3.5): per peer and per log
# of our own, the last seq this node sent that peer in an events answer. A lower
# bound of who holds our events: peers may pass them on to others.
_DELIVERY_PREFIX = "delivered:"


def _delivery_key(peer: bytes, log: bytes) -> str:
    return f"{_DELIVERY_PREFIX}{log.hex()}:{peer.hex()}"


async def record_delivery(store: PeerStore, peer: bytes, log: bytes, seq: int) -> None:
    key = _delivery_key(peer, log)
    held = await store.get_meta(key)
    if held is None or int.from_bytes(held) < seq:
        await store.set_meta(key, seq.to_bytes(8))


async def delivered(store: PeerStore, peer: bytes, log: bytes) -> int:
    """The last seq of our log `log` this node sent `peer` (0: none)."""
    held = await store.get_meta(_delivery_key(peer, log))
    return 0 if held is None else int.from_bytes(held)
