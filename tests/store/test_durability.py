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
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.core.events import VerifiedRun, runs_of
from federation.store.sqlite import SqliteStore
from tests.conftest import Club
from tests.store.test_contract import STORE_KEY, add_club, all_events


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "store.sqlite", create=True, key=STORE_KEY)
    yield opened
    await opened.aclose()


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


async def _more(store: SqliteStore, club: Club, n: int) -> list[VerifiedRun]:
    record = await store.log(club.log())
    return runs_of(club.chain(n, after=record.head if record else None))


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
