"""The SQLite store's one connection and its transactions (store/sqlite.py is the store).

Split from store/sqlite.py by concern: this module owns the connection every task of
a node shares and the rule by which writes take turns on it; sqlite_side.py the
tables beside the logs (peers, meta, projections, blocked clubs, snapshots);
sqlite.py the logs and events, opening and migrating.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import aiosqlite

# SQLCipher's DB-API mirrors sqlite3 (its own exception classes): every connection of
# the store goes through it, keyed or not (store.cipher).
from sqlcipher3 import dbapi2 as sqlite3


class SqliteBase:
    """The connection, `path`, and transactions that survive cancellation."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._log_numbers: dict[bytes, int] = {}
        # One connection serves every task of the node (sync loops, peer API, posts):
        # a transaction awaits between its statements, so writes take turns here, or a
        # second BEGIN fails and a lone write would join (and roll back with) another's.
        self._writing = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._writing:
            # BEGIN, COMMIT and ROLLBACK run to the end even if our task is cancelled
            # meanwhile: a BEGIN left behind would break every later write on this
            # connection (a cancelled follow loop must not wedge the node).
            try:
                await _to_the_end(self._db.execute("BEGIN IMMEDIATE"))
            except asyncio.CancelledError:
                if self._db.in_transaction:  # it began after all: end it
                    await _to_the_end(self._db.execute("ROLLBACK"))
                raise
            try:
                yield self._db
            except BaseException:
                await _to_the_end(self._db.execute("ROLLBACK"))
                raise
            try:
                await _to_the_end(self._db.execute("COMMIT"))
            except sqlite3.Error:
                if self._db.in_transaction:
                    await _to_the_end(self._db.execute("ROLLBACK"))
                raise

    async def _write(self, sql: str, parameters: tuple[object, ...]) -> aiosqlite.Cursor:
        async with self._writing:
            return await self._db.execute(sql, parameters)


async def _to_the_end(step: Awaitable[object]) -> None:
    """Await a database step; if cancelled meanwhile, let it finish, then re-raise."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
