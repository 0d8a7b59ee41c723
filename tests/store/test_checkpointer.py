"""An erasure's TRUNCATE checkpoint and the Checkpointer.

SQLite refuses a checkpoint while another connection runs one (SQLITE_BUSY, without
the busy handler), and `PRAGMA wal_checkpoint(TRUNCATE)` reports that as a row
(busy=1), not an error: an erase made while the Checkpointer copies the WAL leaves
the erased payload's old page in the -wal file (seized laptop, issue 11)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from federation.core.events import runs_of
from federation.errors import StoreError
from federation.store import checkpoint
from federation.store.sqlite import SqliteStore
from tests.conftest import Club
from tests.store.test_contract import STORE_KEY, add_club

SECRET = b"SECRET-erased-text-" * 8
FILLER = b'{"text":"' + b"f" * 60_000 + b'"}'


# Held by another process, this byte of the -shm file is SQLite's checkpoint lock
# (WAL_CKPT_LOCK: the unix VFS's shm locks start at byte 120): what any connection
# running a checkpoint holds, the node's Checkpointer for the whole of its copy.
_HOLD_CHECKPOINT_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 121)
print("held", flush=True)
sys.stdin.read()
"""


def _hold_checkpoint_lock(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLD_CHECKPOINT_LOCK, str(path) + "-shm"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("checkpointing", [False, True])
async def test_an_erase_while_another_connection_checkpoints_leaves_no_payload_on_disk(
    tmp_path: Path, club: Club, checkpointing: bool
) -> None:
    """An erase must not return with the payload still on disk; if the WAL cannot be
    emptied it says so. checkpointing=False is the positive control: the same erase
    with no checkpoint running beside it wipes the payload from both files."""
    path = tmp_path / "store.sqlite"
    wal = tmp_path / "store.sqlite-wal"
    # A plain store: the payload's bytes are seen on disk as they are.
    async with await SqliteStore.open(path, create=True) as store:
        await add_club(store, club)
        secret = club.chain(1, payloads=[b'{"text":"' + SECRET + b'"}'])
        await store.append_runs(runs_of(secret))
        await store._db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")  # now in both files
        assert SECRET in path.read_bytes()  # the positive control: it is on disk
        with _hold_checkpoint_lock(path) as holder:
            try:
                if checkpointing:
                    assert holder.stdout is not None
                    assert holder.stdout.readline() == b"held\n"
                else:
                    holder.kill()
                    holder.wait(10)
                said = ""
                try:
                    assert await store.erase(secret[0].id)
                except StoreError as exc:  # said aloud, not left silently: also right
                    said = str(exc)
                if said:
                    assert checkpointing
                    assert "WAL file" in said
                    return
                wal_bytes = wal.read_bytes() if wal.exists() else b""
                db_bytes = path.read_bytes()
            finally:
                holder.kill()
                holder.wait(10)
    assert SECRET not in wal_bytes, "the erased payload is still in the -wal file"
    assert SECRET not in db_bytes, "the erased payload is still in the database file"


def _store_threads() -> list[threading.Thread]:
    """aiosqlite's connection threads still alive (each holds a keyed connection)."""
    return [t for t in threading.enumerate() if "_connection_worker_thread" in t.name]


async def _stop(store: SqliteStore) -> None:
    """Test cleanup only: stop the Checkpointer's connection if the store left it
    open (its thread would keep the test process from exiting)."""
    ckpt = store._checkpointer
    if ckpt._running is not None:
        with contextlib.suppress(BaseException):
            await ckpt._running
    if ckpt._db is not None:
        await ckpt._db.close()


async def _no_store_threads_left() -> list[threading.Thread]:
    for _ in range(50):
        if not _store_threads():
            break
        await asyncio.sleep(0.05)
    return _store_threads()


@pytest.mark.timeout(60)
async def test_a_write_in_flight_at_close_opens_no_connection_after_it(
    tmp_path: Path, club: Club, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit queued before aclose finishes after it: its `committed()` must not
    open the Checkpointer's keyed connection on a store already closed (a thread
    that is never stopped: the process does not exit, the key stays in memory)."""
    assert _store_threads() == []
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY_BYTES", 1)
    store = await SqliteStore.open(tmp_path / "store.sqlite", create=True, key=STORE_KEY)
    await add_club(store, club)
    write = asyncio.create_task(store.append_runs(runs_of(club.chain(200))))
    await asyncio.sleep(0)  # queued on the store's thread
    await store.aclose()
    await write
    left = await _no_store_threads_left()
    await _stop(store)
    assert left == [], "a store connection's thread outlives the store's aclose"


@pytest.mark.timeout(60)
async def test_a_cancelled_close_during_a_checkpoint_closes_every_connection(
    tmp_path: Path, club: Club, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aclose` cancelled (a second Ctrl-C at shutdown) while the Checkpointer runs:
    both connections still close."""
    assert _store_threads() == []
    store = await SqliteStore.open(tmp_path / "store.sqlite", create=True, key=STORE_KEY)
    await add_club(store, club)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY_BYTES", 1 << 40)
    for _ in range(6):
        record = await store.log(club.log())
        assert record is not None
        more = club.chain(100, after=record.head, payloads=[FILLER] * 100)
        await store.append_runs(runs_of(more), durable=False)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY_BYTES", 1)
    record = await store.log(club.log())
    await store.append_runs(runs_of(club.chain(1, after=record.head if record else None)))
    await asyncio.sleep(0.05)  # the checkpoint runs
    closing = asyncio.create_task(store.aclose())
    await asyncio.sleep(0.01)
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    left = await _no_store_threads_left()
    await _stop(store)
    assert left == [], "a store connection's thread outlives a cancelled aclose"
