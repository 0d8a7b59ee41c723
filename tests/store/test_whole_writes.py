"""Writes run whole on the store's thread (store.sqlite_write, SqliteBase._write_whole):
one transaction in one call, all or nothing, to its end once started, and commits a
sync makes without an fsync each are made durable together (store.base append_runs)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest
from sqlcipher3 import dbapi2 as sqlcipher

from federation.core.events import VerifiedRun, runs_of
from federation.errors import InvalidEventError, StoreError
from federation.store import checkpoint, cipher, sqlite_base, sqlite_write
from federation.store.sqlite import SqliteStore
from tests.conftest import Club
from tests.store.test_contract import STORE_KEY, add_club, all_events

FULL = 2  # PRAGMA synchronous


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "store.sqlite", create=True, key=STORE_KEY)
    yield opened
    await opened.aclose()


async def _more(store: SqliteStore, club: Club, n: int) -> list[VerifiedRun]:
    """`n` events after the head the store holds, as runs."""
    record = await store.log(club.log())
    return runs_of(club.chain(n, after=record.head if record else None))


async def _synchronous(store: SqliteStore) -> int:
    [(value,)] = await store._db.execute_fetchall("PRAGMA synchronous")
    return int(value)


async def test_a_write_after_a_row_left_unread_commits(store: SqliteStore, club: Club) -> None:
    """aiosqlite's thread holds its last call's result until its next call returns:
    a cursor with an unread row there would stop a COMMIT made in one call."""
    await add_club(store, club)
    await store._db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # a row left unread
    await store.append_runs(await _more(store, club, 3))
    assert len(await all_events(store, club.log())) == 3

    # The positive control: the same write queued straight after such a call, without
    # the call that lets the cursor go, is refused by SQLite.
    await store._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    on_thread = cast("Callable[..., Awaitable[None]]", store._db._execute)
    put = (sqlite_base._whole, sqlite_write.put_club, True, (b"\x01" * 32, club.genesis))
    with pytest.raises(sqlcipher.OperationalError, match="statements in progress"):
        await on_thread(*put, store._db._conn)
    assert not store._db.in_transaction


@pytest.mark.parametrize("delay_s", [0.0, 0.0001, 0.0005, 0.002])
async def test_a_cancelled_write_is_all_or_nothing_and_leaves_no_transaction(
    store: SqliteStore, club: Club, delay_s: float
) -> None:
    await add_club(store, club)
    held = 0
    for _ in range(8):
        task = asyncio.create_task(store.append_runs(await _more(store, club, 50)))
        await asyncio.sleep(delay_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not store._db.in_transaction
        count = len(await all_events(store, club.log()))
        assert count in (held, held + 50)  # never a part of the run
        held = count
    await store.append_runs(await _more(store, club, 1))  # it still writes
    assert len(await all_events(store, club.log())) == held + 1


async def test_a_refused_write_changes_nothing(store: SqliteStore, club: Club) -> None:
    """A run of a log the store does not hold, with a new club in the same call: the
    club is not kept either (one transaction)."""
    events = club.chain(2)
    with pytest.raises(InvalidEventError, match="unknown log"):
        await store.append_runs(runs_of(events), clubs={club.id: club.genesis}, durable=False)
    assert await store.clubs() == {}
    assert await _synchronous(store) == FULL


async def test_another_connection_sees_an_undurable_commit(
    store: SqliteStore, club: Club, tmp_path: Path
) -> None:
    await add_club(store, club)
    await store.append_runs(runs_of(club.chain(4)), durable=False)
    async with await SqliteStore.open(tmp_path / "store.sqlite", key=STORE_KEY) as other:
        record = await other.log(club.log())
        assert record is not None
        assert record.head is not None
        assert record.head.seq == 4


@pytest.mark.parametrize("every_bytes", [1, checkpoint.CHECKPOINT_EVERY_BYTES])
async def test_the_checkpointer_copies_the_wal_beside_the_writer(
    store: SqliteStore, club: Club, monkeypatch: pytest.MonkeyPatch, every_bytes: int
) -> None:
    """Committed pages reach the database file by the Checkpointer's own connection,
    long before the writer's bound (WAL_BOUND_BYTES) would copy them; the positive
    control (the usual threshold, not reached here) shows they otherwise stay in the
    WAL."""
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY_BYTES", every_bytes)
    await add_club(store, club)
    await store._db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
    before = store.path.stat().st_size
    for _ in range(5):
        await store.append_runs(await _more(store, club, 200))
        async with store._checkpointer.held():  # the one running, if any, has ended
            pass
    grown = store.path.stat().st_size - before
    if every_bytes == 1:
        assert grown > 0
    else:
        assert grown == 0
    assert len(await all_events(store, club.log())) == 1000


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TRIGGER copy AFTER INSERT ON event BEGIN DELETE FROM peer; END",
        "CREATE VIEW everything AS SELECT * FROM event",
    ],
)
async def test_a_store_with_a_view_or_trigger_we_never_make_is_refused(
    tmp_path: Path, statement: str
) -> None:
    """A store restored from a crafted backup could carry SQL that runs on our own
    reads and writes: refused at open, naming it; the same store without it opens
    (the positive control)."""
    path = tmp_path / "store.sqlite"
    async with await SqliteStore.open(path, create=True, key=STORE_KEY):
        pass
    async with await SqliteStore.open(path, key=STORE_KEY) as store:
        await store._db.execute(statement)
    with pytest.raises(StoreError, match="federation never makes") as refused:
        await SqliteStore.open(path, key=STORE_KEY)
    assert "\n" not in str(refused.value)
    name = statement.split()[2]
    db = cipher.connect(path, STORE_KEY)
    try:
        db.execute(f"DROP {statement.split()[1]} {name}")
    finally:
        db.close()
    async with await SqliteStore.open(path, key=STORE_KEY) as store:
        assert await store.count_events() == 0
