"""One contract suite, run against every store (HOUSE_STYLE: eventsourcing's idea)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from federation.core import canonical
from federation.core.canonical import Kind
from federation.core.events import Head, VerifiedEvent, runs_of, sign_event, verify_run
from federation.core.payloads import make_payload
from federation.errors import InvalidEventError, StoreError
from federation.store.base import (
    ForkRecord,
    LogStore,
    PeerStore,
    ProjectionUpdate,
    Store,
    ViewStore,
)
from federation.store.memory import MemoryStore
from federation.store.meta import RestoreGuard, read_restore_guard, write_restore_guard
from federation.store.sqlite import SqliteStore
from federation.store.sqlite_write import RUN_STATEMENT_EVENTS
from tests.conftest import BASE_TIME_US, Club, run_of

Opener = Callable[[], Awaitable[Store]]


# The store key of the encrypted runs: any 32 bytes (store.cipher).
STORE_KEY = bytes(range(32))


@pytest.fixture(params=["memory", "sqlite", "encrypted"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the store under test; for SQLite (plain, or SQLCipher with a store key as
    a node opens it), each call reopens the same file."""
    if request.param == "memory":
        memory = MemoryStore()

        async def open_memory() -> Store:
            return memory

        return open_memory

    key = STORE_KEY if request.param == "encrypted" else None

    async def open_sqlite() -> Store:
        return await SqliteStore.open(tmp_path / "store.sqlite", create=True, key=key)

    return open_sqlite


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[Store]:
    opened = await open_store()
    yield opened
    await opened.aclose()


async def add_club(store: Store, club: Club) -> None:
    await store.put_club(club.id, club.genesis)
    for descriptor in club.descriptors.values():
        await store.put_log(canonical.log_id(descriptor), descriptor)


async def all_events(store: Store, log: bytes) -> list[VerifiedEvent]:
    return await store.events(log, 0, 10_000)


def fork_of(club: Club, held: VerifiedEvent) -> ForkRecord:
    other = club.chain(1, payloads=[b"equivocation"])[0]
    assert other.header.seq == held.header.seq == 1
    return ForkRecord(club.id, held.header.log, 1, held.signed, other.signed, 1_000)


# --- clubs and logs -----------------------------------------------------------------


async def test_put_club_and_log_are_idempotent(store: Store, club: Club) -> None:
    assert await store.clubs() == {}
    assert await store.logs() == []
    await add_club(store, club)
    await add_club(store, club)
    await store.put_club(club.id, b"another genesis is ignored")
    await store.put_log(club.log(), b"another descriptor is ignored")
    assert await store.clubs() == {club.id: club.genesis}

    logs = await store.logs()
    assert [r.id for r in logs] == [club.log(a) for a in ("private", "federation", "public")]
    record = await store.log(club.log("public"))
    assert record is not None
    assert record.descriptor == club.descriptors["public"]
    assert (record.club, record.name, record.audience.kind) == (club.id, "public", "public")
    assert (record.head, record.frozen) == (None, False)
    assert await store.log(b"\x00" * 32) is None


# --- append -------------------------------------------------------------------------


async def test_append_and_read(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(5)
    await store.append(events[:2])
    await store.append(events[2:])
    await store.append([])
    assert await all_events(store, club.log()) == events
    record = await store.log(club.log())
    assert record is not None
    assert record.head == Head(5, events[-1].id)
    assert await store.count_events() == 5
    assert await all_events(store, club.log("public")) == []
    assert await all_events(store, b"\x00" * 32) == []


async def test_append_to_several_logs_in_one_batch(store: Store, club: Club) -> None:
    await add_club(store, club)
    federation, public = club.chain(3), club.chain(2, audience="public")
    batch = [federation[0], public[0], federation[1], public[1], federation[2]]
    await store.append(batch)
    assert await all_events(store, club.log()) == federation
    assert await all_events(store, club.log("public")) == public
    record = await store.log(club.log("public"))
    assert record is not None
    assert record.head == Head(2, public[-1].id)


async def test_append_is_atomic(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(6)
    await store.append(events[:1])
    public = club.chain(2, audience="public")
    # events 2, 3 and a public event are fine; event 5 skips seq 4
    batch = [events[1], public[0], events[2], events[4], events[5]]
    with pytest.raises(InvalidEventError, match="does not extend the log") as caught:
        await store.append(batch)
    assert caught.value.seq == 5
    assert await all_events(store, club.log()) == events[:1]
    assert await all_events(store, club.log("public")) == []
    assert await store.count_events() == 1
    record = await store.log(club.log())
    assert record is not None
    assert record.head == Head(1, events[0].id)
    # and the store still takes the good events afterwards
    await store.append(events[1:])
    assert await all_events(store, club.log()) == events


async def test_append_runs_from_verification(store: Store, club: Club) -> None:
    """Bulk ingest's path: runs as verify_run makes them, several in one transaction,
    long (one statement each in SQLite) and short (row by row) together."""
    await add_club(store, club)
    events, public = club.chain(RUN_STATEMENT_EVENTS + 2), club.chain(3, audience="public")
    first, _ = verify_run(club.log(), None, run_of(events[:2]), club.authorized)
    rest, _ = verify_run(club.log(), first.head, run_of(events[2:]), club.authorized)
    other, _ = verify_run(club.log("public"), None, run_of(public), club.authorized)
    empty, _ = verify_run(club.log("public"), None, [], club.authorized)
    await store.append_runs([first, other, rest, empty])
    assert await all_events(store, club.log()) == events
    assert await all_events(store, club.log("public")) == public
    record = await store.log(club.log())
    assert record is not None
    assert record.head == rest.head
    # a run that does not follow the head refuses the whole call
    more = club.chain(2, after=rest.head)
    skipped = Head(len(events) + 1, more[0].id)
    late, _ = verify_run(club.log(), skipped, run_of(more[1:]), club.authorized)
    tail = club.chain(1, audience="public", after=other.head)
    ok, _ = verify_run(club.log("public"), other.head, run_of(tail), club.authorized)
    with pytest.raises(InvalidEventError, match="does not extend the log"):
        await store.append_runs([ok, late])
    assert await store.count_events() == len(events) + len(public)


@pytest.mark.parametrize("length", [5, RUN_STATEMENT_EVENTS + 3])
@pytest.mark.parametrize("erasing", [True, False], ids=["erased", "whole"])
async def test_payloads_of_every_size_and_erased_ones_come_back_exactly(
    store: Store, club: Club, length: int, erasing: bool
) -> None:
    """The SQLite store binds a short run row by row and cuts a long one out of joined
    blobs, with a statement of its own when some are erased: check each boundary both
    ways (empty, 64 KiB and erased payloads)."""
    await add_club(store, club)
    payloads = [b"", b"x", bytes(range(256)) * 256] + [b"%d" % i for i in range(length - 5)]
    payloads += [b"", b"last"]
    events = club.chain(length, payloads=payloads)
    gone = {1, length - 2} if erasing else set()
    erased = [
        VerifiedEvent(e.id, e.header, e.signed, None) if i in gone else e
        for i, e in enumerate(events)
    ]
    run, error = verify_run(club.log(), None, run_of(erased), club.authorized)
    assert error is None
    await store.append_runs([run])
    held = await all_events(store, club.log())
    assert held == erased
    assert [e.payload for e in held] == [None if i in gone else p for i, p in enumerate(payloads)]
    assert all(type(e.payload) is bytes for i, e in enumerate(held) if i not in gone)


async def test_append_runs_puts_new_clubs_and_logs_with_the_events(
    store: Store, club: Club, other_club: Club
) -> None:
    """A peer's new club and log are kept with their first events, or not at all."""
    await add_club(store, club)
    log = other_club.log()
    descriptor = other_club.descriptors["federation"]
    events = other_club.chain(3)
    first, _ = verify_run(log, None, run_of(events[:1]), other_club.authorized)
    gap, _ = verify_run(log, Head(2, events[1].id), run_of(events[2:]), other_club.authorized)
    with pytest.raises(InvalidEventError, match="does not extend the log"):
        await store.append_runs(
            [gap], clubs={other_club.id: other_club.genesis}, logs={log: descriptor}
        )
    assert other_club.id not in await store.clubs()
    assert await store.log(log) is None
    await store.append_runs(
        [first], clubs={other_club.id: other_club.genesis}, logs={log: descriptor}
    )
    assert (await store.clubs())[other_club.id] == other_club.genesis
    assert await all_events(store, log) == events[:1]
    # already held: put again without harm
    rest, _ = verify_run(log, first.head, run_of(events[1:]), other_club.authorized)
    await store.append_runs(
        [rest], clubs={other_club.id: other_club.genesis}, logs={log: descriptor}
    )
    assert await all_events(store, log) == events


async def test_chain_rule_is_enforced(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(3)
    with pytest.raises(InvalidEventError, match="head is seq 0"):
        await store.append(events[1:2])  # seq 2 on an empty log
    await store.append(events[:2])
    # seq 2 at seq 2 again, but another event: a fork is refused
    fork = club.chain(1, after=Head(1, events[0].id), payloads=[b"fork"])
    with pytest.raises(InvalidEventError, match="head is seq 2"):
        await store.append(fork)
    # seq 3 that follows a different seq 2
    other = club.chain(1, after=Head(1, events[0].id), payloads=[b"other"])[0]
    stray = club.chain(1, after=Head(2, other.id))[0]
    with pytest.raises(InvalidEventError, match="does not extend the log"):
        await store.append([stray])
    with pytest.raises(InvalidEventError, match="unknown log"):
        await store.append(Club.make(b"stranger").chain(1))
    assert await all_events(store, club.log()) == events[:2]


async def test_events_held_already_are_a_no_op(store: Store, club: Club) -> None:
    """Two peers' ingests of the same events race: the second commit must not fail."""
    await add_club(store, club)
    events = club.chain(5)
    await store.append(events[:3])
    await store.append(events[1:2])  # held: nothing to do
    await store.append(events[:3])
    first, _ = verify_run(club.log(), None, run_of(events[:2]), club.authorized)
    through, _ = verify_run(club.log(), None, run_of(events), club.authorized)
    await store.append_runs([first, through])  # one held, one that passes the head
    assert await all_events(store, club.log()) == events
    record = await store.log(club.log())
    assert record is not None
    assert record.head == Head(5, events[-1].id)


async def test_a_branch_below_the_head_is_refused(store: Store, club: Club) -> None:
    """A run that ends before the head is held already only if the store holds its
    last event (core.log.rest_to_append with the id the store looks up)."""
    await add_club(store, club)
    events = club.chain(4)
    await store.append(events)
    branch = club.chain(2, after=Head(1, events[0].id), payloads=[b"x", b"y"])
    with pytest.raises(InvalidEventError, match="head is seq 4"):
        await store.append(branch)
    await store.append(events[1:3])  # the same seqs, held: a no-op
    assert await all_events(store, club.log()) == events


async def test_events_of_another_club_are_refused(
    store: Store, club: Club, other_club: Club
) -> None:
    """protocol.md §3.4: every event names its log's owning club."""
    await add_club(store, club)
    stranger = sign_event(
        other_club.key,
        club=other_club.id,
        log=club.log("public"),
        head=None,
        time_us=BASE_TIME_US,
        kind=Kind.NOTE,
        payload=b"{}",
    )
    with pytest.raises(InvalidEventError, match="another club than its log's"):
        await store.append([stranger])
    assert await all_events(store, club.log("public")) == []


async def test_frozen_log_refuses_appends(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(3)
    await store.append(events[:1])
    assert await store.forks() == []
    fork = fork_of(club, events[0])
    await store.record_fork(fork)
    await store.record_fork(fork)  # idempotent: one proof per (log, seq)
    assert await store.forks() == [fork]
    record = await store.log(club.log())
    assert record is not None
    assert record.frozen
    with pytest.raises(InvalidEventError, match="frozen"):
        await store.append(events[1:2])
    assert await all_events(store, club.log()) == events[:1]
    # other logs of the same club are not frozen
    await store.append(club.chain(1, audience="public"))
    public = await store.log(club.log("public"))
    assert public is not None
    assert not public.frozen


# --- reading ------------------------------------------------------------------------


async def test_events_paging(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(25)
    await store.append(events)
    assert await store.events(club.log(), 0, 10) == events[:10]
    assert await store.events(club.log(), 10, 10) == events[10:20]
    assert await store.events(club.log(), 20, 10) == events[20:]
    assert await store.events(club.log(), 25, 10) == []
    assert await store.events(club.log(), 3) == events[3:]
    paged: list[VerifiedEvent] = []
    while page := await store.events(club.log(), len(paged), 7):
        paged += page
    assert paged == events


async def test_event_at(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(3)
    await store.append(events)
    for event in events:
        assert await store.event_at(club.log(), event.header.seq) == event
    assert await store.event_at(club.log(), 0) is None
    assert await store.event_at(club.log(), 4) is None
    assert await store.event_at(club.log("public"), 1) is None
    assert await store.event_at(b"\x00" * 32, 1) is None


async def test_events_by_id_prefix(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(40) + club.chain(10, audience="public")
    await store.append(events)
    by_id = {e.id: e for e in events}
    for event in events[:5]:
        assert await store.events_by_id_prefix(event.id) == [event]
        assert await store.events_by_id_prefix(event.id[:8]) == [event]
    for first in {e.id[:1] for e in events}:
        expected = {i for i in by_id if i.startswith(first)}
        found = await store.events_by_id_prefix(first, limit=100)
        assert {e.id for e in found} == expected
        assert all(by_id[e.id] == e for e in found)
        assert len(await store.events_by_id_prefix(first, limit=1)) == 1
    assert len(await store.events_by_id_prefix(b"", limit=100)) == 50
    assert len(await store.events_by_id_prefix(b"")) == 2  # default limit: enough to see ambiguity
    missing = next(bytes([b]) for b in range(256) if all(i[0] != b for i in by_id))
    assert await store.events_by_id_prefix(missing) == []
    # prefixes ending in 0xff have no simple upper bound
    for event in events:
        assert await store.events_by_id_prefix(event.id[:1] + b"\xff", limit=100) == [
            e for e in events if e.id.startswith(event.id[:1] + b"\xff")
        ]


async def test_erase_keeps_the_header(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(4)
    await store.append(events)
    assert await store.erase(events[1].id) is True
    assert await store.erase(events[1].id) is True  # already erased: still known
    assert await store.erase(b"\x00" * 32) is False
    erased = await store.event_at(club.log(), 2)
    assert erased is not None
    assert erased.erased
    assert (erased.id, erased.header, erased.signed) == (
        events[1].id,
        events[1].header,
        events[1].signed,
    )
    assert await store.count_events() == 4
    held = await all_events(store, club.log())
    assert [e.payload for e in held] == [events[0].payload, None, *(e.payload for e in events[2:])]
    # the chain still verifies, signatures and all
    run = [(e.signed, e.payload) for e in held]
    verified, error = verify_run(club.log(), None, run, club.authorized, every_signature=True)
    assert error is None
    assert verified.events() == held
    # and the log still grows
    await store.append(club.chain(1, after=Head(4, events[-1].id)))
    assert await store.count_events() == 5


async def test_count_events(store: Store, club: Club, other_club: Club) -> None:
    assert await store.count_events() == 0
    await add_club(store, club)
    await add_club(store, other_club)
    await store.append(club.chain(3))
    await store.append(other_club.chain(4, audience="private"))
    assert await store.count_events() == 7


# --- projections and meta -----------------------------------------------------------


async def test_projection_save_replace_and_positions(store: Store) -> None:
    assert await store.projection_positions() == {}
    assert await store.projection_items("campaigns") == {}
    log_a, log_b = b"a" * 32, b"b" * 32
    await store.save_projection(
        ProjectionUpdate(
            {("campaigns", "b"): b"2", ("campaigns", "a"): b"1", ("feed", "x"): b"9"},
            {log_a: 3},
        )
    )
    assert await store.projection_items("campaigns") == {"a": b"1", "b": b"2"}
    assert list(await store.projection_items("campaigns")) == ["a", "b"]
    assert await store.projection_items("feed") == {"x": b"9"}
    assert await store.projection_get("campaigns", ["a", "zz"]) == {"a": b"1"}
    assert await store.projection_positions() == {log_a: 3}

    await store.save_projection(
        ProjectionUpdate({("campaigns", "a"): None, ("campaigns", "c"): b"3"}, {log_b: 1, log_a: 5})
    )
    assert await store.projection_items("campaigns") == {"b": b"2", "c": b"3"}
    assert await store.projection_positions() == {log_a: 5, log_b: 1}

    await store.save_projection(
        ProjectionUpdate({("campaigns", "d"): b"4"}, {log_b: 2}), replace=True
    )
    assert await store.projection_items("campaigns") == {"d": b"4"}
    assert await store.projection_items("feed") == {}
    assert await store.projection_positions() == {log_b: 2}


async def test_meta(store: Store) -> None:
    assert await store.get_meta("restored") is None
    await store.set_meta("restored", b"1")
    await store.set_meta("other", b"")
    await store.set_meta("restored", b"0")
    assert await store.get_meta("restored") == b"0"
    assert await store.get_meta("other") == b""


async def test_restore_guard(open_store: Opener, club: Club) -> None:
    """A typed record (protocol.md §3.6), per log, kept across reopening."""
    store = await open_store()
    log, other = club.log(), club.log("public")
    b, c = bytes([0xB]) * 32, bytes([0xC]) * 32
    assert await read_restore_guard(store, log) is None
    await write_restore_guard(store, RestoreGuard(log, 7, "Club B", b))
    await write_restore_guard(store, RestoreGuard(other, 2, "", b, evidence=False))
    await write_restore_guard(store, RestoreGuard(log, 9, "Club C\nwith a newline", c))
    await store.aclose()
    store = await open_store()
    guard = RestoreGuard(log, 9, "Club C\nwith a newline", c)
    assert await read_restore_guard(store, log) == guard
    assert await read_restore_guard(store, other) is None  # a claim only
    claim = RestoreGuard(other, 2, "", b, evidence=False)
    assert await read_restore_guard(store, other, evidence=False) == claim
    await store.aclose()


async def test_restore_guards_written_before_evidence_read_as_claims(store: Store) -> None:
    """Stores in use hold guards written as "seq\npeer" text, from bare frontiers:
    they read back as claims (no peer club, no evidence), which hold nothing back
    (protocol.md §3.6)."""
    log = bytes(range(32))
    await store.set_meta(f"own_behind:{log.hex()}", b"12\nClub B")
    assert await read_restore_guard(store, log) == RestoreGuard(log, 12, "Club B", evidence=False)
    await store.set_meta(f"own_behind:{log.hex()}", b"garbage")
    assert await read_restore_guard(store, log) == RestoreGuard(log, 0, "", evidence=False)


def test_each_store_offers_every_concern() -> None:
    """`Store` is the union of the narrow seams; both implementations satisfy each."""
    for implementation in (MemoryStore, SqliteStore):
        for seam in (LogStore, ViewStore, PeerStore, Store):
            members = {
                name
                for name, value in vars(seam).items()
                if callable(value) and not name.startswith("_")
            }
            assert members, seam
            assert members <= set(dir(implementation)), (implementation, seam)
    assert {name for name in vars(Store) if not name.startswith("_")} == {"data_version", "aclose"}
    assert {LogStore, ViewStore, PeerStore} <= set(Store.__mro__)


def _seams(memory: MemoryStore, sqlite: SqliteStore) -> None:
    """Checked by mypy, never run: each store is each seam."""
    seams: list[LogStore | ViewStore | PeerStore | Store] = [memory, sqlite]
    logs: list[LogStore] = [memory, sqlite]
    views: list[ViewStore] = [memory, sqlite]
    peers: list[PeerStore] = [memory, sqlite]
    assert seams + logs + views + peers


# --- persistence --------------------------------------------------------------------


async def test_reopen_sees_everything(open_store: Opener, club: Club) -> None:
    """Close and open again: the SQLite store keeps it all (the memory store trivially)."""
    store = await open_store()
    await add_club(store, club)
    events = club.chain(5)
    public = club.chain(2, audience="public")
    await store.append(events + public)
    await store.erase(events[2].id)
    fork = fork_of(club, public[0])
    await store.record_fork(fork)
    await store.save_projection(ProjectionUpdate({("p", "k"): b"v"}, {club.log(): 5}))
    await store.set_meta("key", b"value")
    before = (await store.clubs(), await store.logs(), await all_events(store, club.log()))
    if isinstance(store, SqliteStore):
        await store.aclose()
        store = await open_store()
    try:
        assert (await store.clubs(), await store.logs()) == before[:2]
        assert await all_events(store, club.log()) == before[2]
        assert await all_events(store, club.log("public")) == public
        held = await store.event_at(club.log(), 3)
        assert held is not None
        assert held.erased
        assert await store.forks() == [fork]
        assert await store.projection_items("p") == {"k": b"v"}
        assert await store.projection_positions() == {club.log(): 5}
        assert await store.get_meta("key") == b"value"
        assert await store.count_events() == 7
        with pytest.raises(InvalidEventError, match="frozen"):
            await store.append(club.chain(1, audience="public", after=Head(2, public[1].id)))
        await store.append(club.chain(1, after=Head(5, events[-1].id)))
    finally:
        await store.aclose()


async def test_sqlite_store_must_exist_unless_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        await SqliteStore.open(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a readable SQLite database"):
        await SqliteStore.open(tmp_path / "junk.sqlite")


async def test_erase_saves_its_projection_update_with_it(store: Store, club: Club) -> None:
    """The payload and the projection rows it shaped go in one step, or not at all."""
    await add_club(store, club)
    events = club.chain(2)
    await store.append(events)
    await store.save_projection(ProjectionUpdate({("calendar", "x"): b"secret what"}, {}))
    update = ProjectionUpdate({("calendar", "x"): b"erased"}, {})
    assert await store.erase(events[0].id, update) is True
    assert await store.projection_items("calendar") == {"x": b"erased"}
    # Erasing again changes nothing, not even the projection.
    again = ProjectionUpdate({("calendar", "x"): b"changed"}, {})
    assert await store.erase(events[0].id, again) is True
    assert await store.projection_items("calendar") == {"x": b"erased"}


# --- blocked clubs (protocol.md §6.3) --------------------------------------------------


async def test_block_drops_a_club_and_refuses_it_from_then_on(
    open_store: Opener, club: Club, other_club: Club
) -> None:
    store = await open_store()
    await add_club(store, club)
    await add_club(store, other_club)
    ours, theirs = club.chain(2), other_club.chain(3)
    await store.append(ours + theirs + other_club.chain(1, audience="public"))
    fork = fork_of(other_club, theirs[0])
    await store.record_fork(fork)
    await store.save_projection(ProjectionUpdate({}, {other_club.log(): 3, club.log(): 2}))
    assert await store.blocked() == {}

    assert await store.block_club(other_club.id, 5_000) == 4
    assert await store.blocked() == {other_club.id: 5_000}
    assert other_club.id not in await store.clubs()
    assert {r.club for r in await store.logs()} == {club.id}
    assert await all_events(store, other_club.log()) == []
    assert await store.events_by_id_prefix(theirs[0].id) == []
    assert await store.count_events() == 2
    assert await store.projection_positions() == {club.log(): 2}
    assert await store.forks() == [fork]  # evidence is kept
    assert await all_events(store, club.log()) == ours  # another club's logs are untouched
    # Refused from then on: its genesis, its logs, its events with a new log.
    with pytest.raises(InvalidEventError, match="blocked"):
        await store.put_club(other_club.id, other_club.genesis)
    with pytest.raises(InvalidEventError, match="blocked"):
        await store.put_log(other_club.log(), other_club.descriptors["federation"])
    first, _ = verify_run(other_club.log(), None, run_of(theirs[:1]), other_club.authorized)
    with pytest.raises(InvalidEventError, match="blocked"):
        await store.append_runs(
            [first],
            clubs={other_club.id: other_club.genesis},
            logs={other_club.log(): other_club.descriptors["federation"]},
        )
    assert other_club.id not in await store.clubs()
    assert await store.log(other_club.log()) is None
    # Blocking again changes nothing; the record survives a reopen.
    assert await store.block_club(other_club.id, 6_000) == 0
    if isinstance(store, SqliteStore):
        await store.aclose()
        store = await open_store()
    assert await store.blocked() == {other_club.id: 5_000}

    assert await store.unblock_club(other_club.id)
    assert not await store.unblock_club(other_club.id)
    assert await store.blocked() == {}
    await store.append_runs(
        [first],
        clubs={other_club.id: other_club.genesis},
        logs={other_club.log(): other_club.descriptors["federation"]},
    )
    assert await all_events(store, other_club.log()) == theirs[:1]
    await store.aclose()


# --- missing payloads, fill-in and erasure by the origin (protocol.md §3.5, §6.3) ------


def _erasure(club: Club, after: VerifiedEvent, target: VerifiedEvent) -> VerifiedEvent:
    payload = make_payload(Kind.ERASURE, {"seq": target.header.seq, "event": target.id.hex()})
    return sign_event(
        club.key,
        club=club.id,
        log=after.header.log,
        head=Head(after.header.seq, after.id),
        time_us=BASE_TIME_US + 99_000_000,
        kind=Kind.ERASURE,
        payload=payload,
    )


def _stripped(event: VerifiedEvent) -> VerifiedEvent:
    return msgspec.structs.replace(event, payload=None)


async def test_a_missing_payload_is_listed_and_filled_in(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(3)
    log = events[0].header.log
    await store.append([events[0], _stripped(events[1]), _stripped(events[2])])
    assert await store.missing_payloads() == {log: 2}
    assert await store.fill_payload(log, 2, events[1].payload or b"") is True
    assert await store.fill_payload(log, 2, events[1].payload or b"") is False  # held now
    assert await store.missing_payloads() == {log: 3}
    assert [e.payload for e in await all_events(store, log)] == [
        events[0].payload,
        events[1].payload,
        None,
    ]


async def test_an_erasure_event_drops_its_target_and_blocks_a_fill_in(
    store: Store, club: Club
) -> None:
    await add_club(store, club)
    events = club.chain(2)
    log = events[0].header.log
    await store.append(events)
    await store.save_projection(ProjectionUpdate({}, {log: 2}))
    erasure = _erasure(club, events[1], events[0])
    assert await store.append_runs(runs_of([erasure])) == 1
    held = await all_events(store, log)
    assert held[0].payload is None
    assert held[2].payload == erasure.payload
    assert await store.erasures(log) == {1: True}
    assert await store.missing_payloads() == {}
    assert await store.fill_payload(log, 1, events[0].payload or b"") is False
    assert log not in await store.projection_positions(), "the views fold the log again"


async def test_a_stripped_erasure_applies_once_filled_in(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(2)
    log = events[0].header.log
    erasure = _erasure(club, events[1], events[0])
    await store.append([*events, _stripped(erasure)])
    assert await store.missing_payloads() == {log: 3}
    assert await store.fill_payload(log, 3, erasure.payload or b"") is True
    assert (await all_events(store, log))[0].payload is None
    assert await store.erasures(log) == {1: True}


async def test_an_erasure_naming_another_event_erases_nothing(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(2)
    wrong = msgspec.structs.replace(events[1], id=events[0].id)  # seq 2, id of seq 1
    await store.append([*events, _erasure(club, events[1], wrong)])
    assert [e.payload is None for e in await all_events(store, events[0].header.log)] == [
        False,
        False,
        False,
    ]


async def test_a_local_wipe_is_no_missing_payload(store: Store, club: Club) -> None:
    await add_club(store, club)
    events = club.chain(3)
    log = events[0].header.log
    await store.append(events)
    assert await store.erase(events[1].id)
    assert await store.erasures(log) == {2: False}
    assert await store.local_erasures() == {log: 2}
    assert await store.missing_payloads() == {}
    assert await store.fill_payload(log, 2, events[1].payload or b"") is False
