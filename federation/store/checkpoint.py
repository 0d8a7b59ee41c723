"""The store's WAL copied back into the database (a checkpoint) on a connection and
thread of its own, so that a bulk sync's commits do not stop for it.

Left to SQLite, the committing connection checkpoints once the WAL passes
`wal_autocheckpoint` pages, and the commit waits for the copy and its fsync: a tenth
of a bulk sync's time (bench/RESULTS.md). Here a Checkpointer runs a PASSIVE
checkpoint, which neither waits for the writer nor stops it, each time
CHECKPOINT_EVERY_BYTES more were committed. The writer's own automatic checkpoint
stays, at WAL_BOUND_BYTES, as the bound: were this one to fall behind, the writer
catches up itself, and the WAL starts again from its beginning.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from sqlite3 import Connection

import aiosqlite
from sqlcipher3 import dbapi2 as sqlite3

# Checkpoint in the background once this much was committed since the last one.
CHECKPOINT_EVERY_BYTES = 24 * 1024 * 1024
# The writer checkpoints itself once the WAL holds this much (`wal_autocheckpoint`).
WAL_BOUND_BYTES = 128 * 1024 * 1024


class Checkpointer:
    """`connect`: a new connection to the store, keyed as the store's own."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._db: aiosqlite.Connection | None = None
        self._running: asyncio.Task[None] | None = None
        self._since = 0  # bytes committed since the last checkpoint began
        # Held by a running checkpoint, or by `held` (SQLite refuses a second
        # checkpointer at once without waiting: the loser's checkpoint does nothing).
        self._lock = asyncio.Lock()
        self._closed = False  # aclose began: no checkpoint starts, no connection opens

    def committed(self, size: int) -> None:
        """About `size` bytes were committed: checkpoint once enough were."""
        self._since += size
        if self._closed or self._since < CHECKPOINT_EVERY_BYTES:
            return
        if self._lock.locked() or (self._running is not None and not self._running.done()):
            return  # the next commit asks again
        self._since = 0
        self._running = asyncio.create_task(self._checkpoint())

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """No checkpoint of ours runs meanwhile (the running one ends first): for a
        checkpoint the writer must see done (SqliteBase.wipe_wal)."""
        async with self._lock:
            yield

    async def _checkpoint(self) -> None:
        async with self._lock:
            await self._passive()

    async def _passive(self) -> None:
        try:
            if self._closed:
                return
            if self._db is None:
                db = await aiosqlite.Connection(self._connect, 64)
                if self._closed:  # closed while it opened: it must not outlive the store
                    await db.close()
                    return
                self._db = db
                await db.execute_fetchall("PRAGMA synchronous = FULL")
            await self._db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
        except (sqlite3.Error, ValueError):  # ValueError: aiosqlite's, on a closed connection
            # Nothing is lost: the frames stay in the WAL, and the writer's own
            # checkpoint at WAL_BOUND_BYTES copies them.
            return

    async def aclose(self) -> None:
        """Let a running checkpoint end, and close the connection; even if cancelled
        meanwhile (a second Ctrl-C at a stop): no keyed connection outlives the store."""
        self._closed = True
        try:
            if self._running is not None:
                await asyncio.shield(self._running)
        finally:
            if self._running is not None and not self._running.done():
                await asyncio.wait([self._running])  # its connection is closed after it
            if self._db is not None:
                db, self._db = self._db, None
                await db.close()
