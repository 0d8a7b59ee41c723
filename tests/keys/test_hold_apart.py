"""The store's side of a key event (protocol.md §2.2): events moved out of a log are
held apart as evidence, the head falls back, a fork they carried is resolved and the
log unfrozen; never served again. Run against every store of the contract suite."""

from __future__ import annotations

import msgspec

from federation.core.events import Head
from federation.store.base import ForkRecord, Store
from tests.conftest import Club
from tests.store.test_contract import open_store as open_store
from tests.store.test_contract import store as store


async def test_hold_apart_moves_events_out_and_resolves_a_fork(store: Store) -> None:
    a = Club.make(b"hold apart club")
    await store.put_club(a.id, a.genesis)
    log = a.log("public")
    await store.put_log(log, a.descriptors["public"])
    events = a.chain(4, audience="public")
    await store.append(events)
    other = a.chain(1, audience="public", after=Head(2, events[1].id))[0]
    await store.record_fork(ForkRecord(a.id, log, 3, events[2].signed, other.signed, 5))
    assert (await store.log(log)).frozen  # type: ignore[union-attr]

    assert await store.hold_apart(log, 3, "signed by a key the club revoked", 7) == 2
    record = await store.log(log)
    assert record is not None
    assert record.head == Head(2, events[1].id)
    assert not record.frozen
    assert [e.id for e in await store.events(log)] == [e.id for e in events[:2]]
    held = await store.held_apart()
    assert [(h.seq, h.signed, h.reason) for h in held] == [
        (3, events[2].signed, "signed by a key the club revoked"),
        (4, events[3].signed, "signed by a key the club revoked"),
    ]
    assert [f.resolved for f in await store.forks()] == [True]
    assert await store.hold_apart(log, 3, "again", 8) == 0  # nothing left there
    # the log goes on from its new head
    await store.append([other])
    assert (await store.log(log)).head == Head(3, other.id)  # type: ignore[union-attr]
    assert msgspec.structs.asdict(held[0])["club"] == a.id

    assert await store.hold_apart(log, 1, "all of it", 9) == 3
    record = await store.log(log)
    assert record is not None
    assert record.head is None
