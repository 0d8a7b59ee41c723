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
from collections.abc import Callable
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

    def committed(self, size: int) -> None:
        """About `size` bytes were committed: checkpoint once enough were."""
        self._since += size
        if self._since < CHECKPOINT_EVERY_BYTES:
            return
        if self._running is not None and not self._running.done():
            return  # the next commit asks again
        self._since = 0
        self._running = asyncio.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        try:
            if self._db is None:
                self._db = await aiosqlite.Connection(self._connect, 64)
                await self._db.execute_fetchall("PRAGMA synchronous = FULL")
            await self._db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            # Nothing is lost: the frames stay in the WAL, and the writer's own
            # checkpoint at WAL_BOUND_BYTES copies them.
            return

    async def aclose(self) -> None:
        """Wait for a running checkpoint; close the connection."""
        if self._running is not None:
            await self._running
        if self._db is not None:
            await self._db.close()
            self._db = None
