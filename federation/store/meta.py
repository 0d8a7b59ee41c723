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

from federation.errors import StoreError
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


# A node restored from a backup (protocol.md §3.6): for each of the club's own logs, the
# seq it held when restored. `Node.post` refuses such a log until a peer has shown it
# that log's head as an event of its own (`node/follow.py`), or the operator declares
# that no other node holds it (`federation declare-no-copies`). The entry for b""
# (NEW_LOGS) stands for logs the node did not hold when restored: the lost writes may
# have opened one. One key, a JSON object of log id (hex) to seq, -1 once confirmed;
# absent or empty: nothing waits.
_RESTORED_KEY = "restored"
NEW_LOGS = b""
_CONFIRMED = -1
_restored_decoder = msgspec.json.Decoder(dict[str, int])


async def _restore_record(store: PeerStore) -> dict[bytes, int]:
    value = await store.get_meta(_RESTORED_KEY)
    if not value:
        return {}
    try:
        return {bytes.fromhex(k): v for k, v in _restored_decoder.decode(value).items()}
    except (msgspec.DecodeError, ValueError):
        # Unknown is not "nothing waits": fail closed (DESIGN principle 16).
        raise StoreError(
            "the store's restore record is unreadable; run `federation declare-no-copies "
            "--all` once you have synced with every peer"
        ) from None


async def restored_logs(store: PeerStore) -> dict[bytes, int]:
    """The own logs still waiting after a restore, with the seq each held then
    (NEW_LOGS: logs this node did not hold then)."""
    return {log: seq for log, seq in (await _restore_record(store)).items() if seq >= 0}


async def waits_after_restore(store: PeerStore, log: bytes) -> int | None:
    """If `log` may not be written yet after a restore: the seq it held then (0 for a
    log it did not hold). None: it may be written."""
    record = await _restore_record(store)
    if not record:
        return None
    seq = record.get(log, record.get(NEW_LOGS, _CONFIRMED))
    return None if seq < 0 else seq


async def mark_restored(store: PeerStore, heads: dict[bytes, int]) -> None:
    await _write_record(store, {NEW_LOGS: 0, **heads})


async def _write_record(store: PeerStore, record: dict[bytes, int]) -> None:
    value = b""  # every log confirmed: nothing waits any more
    if any(seq >= 0 for seq in record.values()):
        value = msgspec.json.encode({log.hex(): seq for log, seq in sorted(record.items())})
    await store.set_meta(_RESTORED_KEY, value)


async def confirm_restored(store: PeerStore, logs: Iterable[bytes]) -> list[bytes]:
    """Stop holding back `logs` (a peer showed their heads, or the operator declared
    there are no other copies; NEW_LOGS for logs made after the restore); returns those
    that were waiting."""
    record = await _restore_record(store)
    done = [log for log in dict.fromkeys(logs) if record.get(log, _CONFIRMED) >= 0]
    if done:
        record.update(dict.fromkeys(done, _CONFIRMED))
        await _write_record(store, record)
    return done


# Held by a peer (node/delivery.py): per peer and per log of our own, the highest seq
# the peer's own frontier, in its answer to our request, showed with our event's id at
# that seq, and when. Its word, not signed evidence (DESIGN principle 15): it may only
# be shown (`status`, `show`), never acted on. Value: seq and time_us, 8 bytes each.
_HELD_PREFIX = "held:"


class Held(msgspec.Struct, frozen=True):
    seq: int = 0
    seen_us: int = 0


def _held_key(peer: bytes, log: bytes) -> str:
    return f"{_HELD_PREFIX}{log.hex()}:{peer.hex()}"


async def read_held(store: PeerStore, peer: bytes, log: bytes) -> Held:
    value = await store.get_meta(_held_key(peer, log))
    if not value or len(value) != 16:
        return Held()
    return Held(int.from_bytes(value[:8]), int.from_bytes(value[8:]))


async def write_held(store: PeerStore, peer: bytes, log: bytes, held: Held) -> None:
    await store.set_meta(_held_key(peer, log), held.seq.to_bytes(8) + held.seen_us.to_bytes(8))


# A peer that no longer accepts our requests (node/delivery.py): since when, and why
# in words. Empty: it accepts them (or we never saw otherwise). Value: "since\nwhy",
# the reason last: it may quote the peer's own error text.
_REFUSAL_PREFIX = "refused_by:"


class Refusal(msgspec.Struct, frozen=True):
    since_us: int
    why: str


async def read_refusal(store: PeerStore, peer: bytes) -> Refusal | None:
    value = await store.get_meta(f"{_REFUSAL_PREFIX}{peer.hex()}")
    if not value:
        return None
    since, _, why = value.decode(errors="replace").partition("\n")
    return Refusal(int(since) if since.isdigit() else 0, why)


async def write_refusal(store: PeerStore, peer: bytes, refusal: Refusal | None) -> None:
    value = b"" if refusal is None else f"{refusal.since_us}\n{refusal.why}".encode()
    await store.set_meta(f"{_REFUSAL_PREFIX}{peer.hex()}", value)
