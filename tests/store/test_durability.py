"""`make_durable` must fsync the WAL whenever a commit made with
durable=False is not yet on disk (store.base append_runs).

SQLite syncs the WAL only when a commit writes frames: a "durable" commit that
changes nothing (a payload already held, a club or log held already) syncs nothing,
so it cannot stand for the undurable commits before it; and a commit that ran on the
store's thread counts even if the task that asked for it was cancelled meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from federation.core.events import VerifiedEvent, verify_run
from federation.store.sqlite import SqliteStore
from tests.conftest import Club, run_of
from tests.store.test_contract import add_club, all_events
from tests.store.test_whole_writes import FULL, _more, _synchronous
from tests.store.test_whole_writes import store as store  # the fixture


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files fsynced from Python (make_durable's fsync of the WAL)."""
    seen: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def _size(path: Path) -> int:
    return path.stat().st_size


@pytest.mark.parametrize("between", ["fill_payload", "put_club", "put_log"])
async def test_a_durable_write_that_writes_nothing_does_not_stand_for_an_undurable_one(
    store: SqliteStore, club: Club, synced: list[str], between: str
) -> None:
    await add_club(store, club)
    wal = Path(str(store.path) + "-wal")
    runs = await _more(store, club, 3)
    await store.append_runs(runs, durable=False)  # not on disk yet
    size = _size(wal)
    if between == "fill_payload":  # the payload is held: nothing changes (a peer sends it)
        event = runs[0]
        assert event.payloads[0] is not None
        assert not await store.fill_payload(event.log, event.first, event.payloads[0])
    elif between == "put_club":
        await store.put_club(club.id, club.genesis)  # held already
    else:
        descriptor = club.descriptors["federation"]
        await store.put_log(club.log(), descriptor)  # held already
    # No frame was written, so SQLite synced nothing: the undurable commit is not on disk.
    assert _size(wal) == size
    await store.make_durable()
    assert synced == [str(wal)], "make_durable returned without syncing the WAL"


async def test_a_cancelled_undurable_commit_is_still_made_durable(
    store: SqliteStore, club: Club, synced: list[str]
) -> None:
    await add_club(store, club)
    wal = str(store.path) + "-wal"
    held = 0
    for _ in range(20):
        task = asyncio.create_task(store.append_runs(await _more(store, club, 500), durable=False))
        await asyncio.sleep(0)  # queued to the store's thread
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        count = len(await all_events(store, club.log()))
        if count > held:  # it committed though cancelled: it must be made durable
            await store.make_durable()
            assert synced == [wal], "make_durable returned without syncing the WAL"
            return
    pytest.fail("no cancelled commit was seen to commit: the scenario was not reached")


async def test_commits_without_fsync_are_made_durable_together(
    store: SqliteStore, club: Club, synced: list[str]
) -> None:
    await add_club(store, club)
    wal = str(store.path) + "-wal"
    await store.append_runs(await _more(store, club, 2), durable=False)
    await store.append_runs(await _more(store, club, 2), durable=False)
    assert await _synchronous(store) == FULL  # what comes next is durable again
    assert synced == []
    await store.make_durable()
    assert synced == [wal]
    await store.make_durable()  # nothing new since: no second fsync
    assert synced == [wal]

    # A durable commit after an undurable one makes both durable (the WAL is synced up
    # to it): nothing is left to make durable.
    await store.append_runs(await _more(store, club, 1), durable=False)
    await store.append_runs(await _more(store, club, 1))
    await store.make_durable()
    assert synced == [wal]
    assert [e.header.seq for e in await all_events(store, club.log())] == list(range(1, 7))


async def test_a_payload_filled_without_fsync_is_made_durable_with_the_rest(
    store: SqliteStore, club: Club, synced: list[str]
) -> None:
    """A sync fills missing payloads with durable=False (node/ingest.py): no fsync
    each, and `make_durable` syncs them with the answer's commits."""
    await add_club(store, club)
    events = club.chain(3)
    payload = events[1].payload
    assert payload is not None
    gone = [
        e if i != 1 else VerifiedEvent(e.id, e.header, e.signed, None) for i, e in enumerate(events)
    ]
    run, error = verify_run(club.log(), None, run_of(gone), club.authorized)
    assert error is None
    await store.append_runs([run])
    assert await store.missing_payloads() == {club.log(): 2}
    synced.clear()
    assert await store.fill_payload(club.log(), 2, payload, durable=False)
    assert synced == []  # positive control below: the spy sees make_durable's fsync
    assert await _synchronous(store) == FULL
    await store.make_durable()
    assert synced == [str(store.path) + "-wal"]
    assert await store.missing_payloads() == {}
    assert (await all_events(store, club.log()))[1].payload == payload
