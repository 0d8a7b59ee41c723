"""The clubs' key logs in the store: reading their epochs, and applying their windows
to the logs held (protocol.md §2.2).

The rule is `core.keys`; this module reads and writes the store around it, for
ingest (a peer's key event), the node and the runtime (the authority they ask, and
request tokens: only the current key), and `node.keys` (our own key events).
"""

from __future__ import annotations

from collections.abc import Mapping

from federation.core.canonical import HEADER_BYTES, Genesis, sha256
from federation.core.keys import KeyHistory, check_key_event, first_outside, key_log_id, with_event
from federation.errors import InvalidEventError
from federation.store.base import PAGE_EVENTS, LogStore

# Where the signing key sits in a signed header: its last 32 header bytes (§3.1).
_KEY_AT = HEADER_BYTES - 32


def signing_key_of(signed: bytes) -> bytes:
    """The key a signed header names (§3.1), without decoding the rest."""
    return signed[_KEY_AT:HEADER_BYTES]


async def read_history(store: LogStore, club: bytes, genesis: Genesis) -> KeyHistory:
    """The club's epochs from its key log as held (every held event was checked at
    ingest; a node stops at the first that may not follow, should one be there)."""
    history = KeyHistory.of(genesis)
    log, after = key_log_id(club), 0
    while page := await store.events(log, after, PAGE_EVENTS):
        for e in page:
            try:
                epoch = check_key_event(history, e.header, e.payload)
            except InvalidEventError:
                return history
            history = with_event(history, epoch, e.id, e.header.time_us)
        after = page[-1].header.seq
    return history


async def load_histories(
    store: LogStore, genesis: Mapping[bytes, Genesis], held: set[bytes] | None = None
) -> dict[bytes, KeyHistory]:
    """The epochs of every club whose key log holds events (the others sign with their
    genesis key alone). `held`: the ids of the logs with events, if known."""
    if held is None:
        held = {r.id for r in await store.logs() if r.head is not None}
    found: dict[bytes, KeyHistory] = {}
    for club, g in genesis.items():
        if key_log_id(club) in held:
            history = await read_history(store, club, g)
            if history.rotated:
                found[club] = history
    return found


async def first_id(store: LogStore, log: bytes) -> bytes | None:
    event = await store.event_at(log, 1)
    return None if event is None else event.id


async def apply_windows(store: LogStore, history: KeyHistory, club: bytes, now_us: int) -> int:
    """protocol.md §2.2: move out of each of the club's logs every held event from the
    first one its key may not sign there (the events after it chain from it). Returns
    how many events moved; forks whose events all moved are resolved (the store)."""
    moved = 0
    keys = key_log_id(club)
    for record in await store.logs():
        if record.club != club or record.head is None or record.id == keys:
            continue
        first = await first_id(store, record.id)
        if first is None:
            continue
        found, after = None, 0
        while found is None and (page := await store.raw_events(record.id, after, PAGE_EVENTS)):
            found = first_outside(
                history,
                record.id,
                first,
                ((e.seq, signing_key_of(e.signed), sha256(e.signed)) for e in page),
            )
            after = page[-1].seq
        if found is not None:
            moved += await store.hold_apart(record.id, found[0], found[1], now_us)
    return moved
