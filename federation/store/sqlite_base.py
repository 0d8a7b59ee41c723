"""The SQLite store's one connection and its transactions (store/sqlite.py is the store).

Split from store/sqlite.py by concern: this module owns the connection every task of
a node shares and the rule by which writes take turns on it; sqlite_side.py the
tables beside the logs (peers, meta, projections, blocked clubs, snapshots);
sqlite.py the logs and events, opening and migrating.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from sqlite3 import Connection
from typing import Any, TypeVar, cast

import aiosqlite

# SQLCipher's DB-API mirrors sqlite3 (its own exception classes): every connection of
# the store goes through it, keyed or not (store.cipher).
from sqlcipher3 import dbapi2 as sqlite3

from federation.errors import StoreError
from federation.store.checkpoint import Checkpointer

T = TypeVar("T")
# A TRUNCATE checkpoint another connection holds off (SQLite reports busy) is tried
# again this many times, this long apart (SqliteBase._wipe_wal).
WIPE_ATTEMPTS = 3
WIPE_RETRY_S = 0.5


class SqliteBase:
    """The connection, `path`, and transactions that survive cancellation."""

    def __init__(self, db: aiosqlite.Connection, path: Path, checkpointer: Checkpointer) -> None:
        self._db = db
        self.path = path
        self._checkpointer = checkpointer
        self._log_numbers: dict[bytes, int] = {}
        # One connection serves every task of the node (sync loops, peer API, posts):
        # a transaction awaits between its statements, so writes take turns here, or a
        # second BEGIN fails and a lone write would join (and roll back with) another's.
        self._writing = asyncio.Lock()
        # A commit was made with durable=False since the last durable one (_write_whole).
        self._undurable = False

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

    async def _write_whole(self, write: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """`write(connection, *args)` in one transaction, run whole on the store's
        thread (store.sqlite_write says why): BEGIN IMMEDIATE, the write, COMMIT, or
        ROLLBACK if it raised. It runs to its end even if our task is cancelled.

        durable=False: the commit is not fsynced. A power cut may then lose it (the
        WAL keeps a prefix of the commits, never a torn one) until the next durable
        commit or `make_durable`, which make it durable with them. Only for what can
        be fetched again: a peer's events during a sync (node.ingest)."""
        async with self._writing:
            whole = functools.partial(_whole, write, durable, args)
            # aiosqlite runs its own methods this way: a function queued to the
            # connection's thread, given the connection; its public API has no call
            # for a function of ours, so the two private names are used here alone.
            on_thread = cast("Callable[..., Awaitable[T | None]]", self._db._execute)
            # Its thread holds the previous call's result until the next call returns:
            # a cursor still stepping there (a PRAGMA's row left unread, say) would
            # stop our COMMIT ("SQL statements in progress"). A first call returning
            # nothing lets it go; queued together, the two still make one hop.
            if not durable:  # set first: a commit made while our task is cancelled counts
                self._undurable = True
            both = asyncio.gather(on_thread(_nothing), on_thread(whole, self._db._conn))
            result, wrote = cast("tuple[T, bool]", (await _to_the_end(both))[1])
            if durable and wrote:  # its fsync of the WAL makes every commit before it durable
                self._undurable = False
            return result

    async def make_durable(self) -> None:
        """Every commit made so far is on disk when this returns (store.base)."""
        if not self._undurable:
            return  # nothing to wait for: no write's lock taken
        async with self._writing:
            if self._undurable:
                wal = self.path.with_name(self.path.name + "-wal")
                on_thread = cast("Callable[..., Awaitable[None]]", self._db._execute)
                await _to_the_end(on_thread(_fsync, wal))
                self._undurable = False

    async def _wipe_wal(self) -> None:
        """Copy the WAL into the database and empty it, now: after an erasure or a
        blocked club's drop, whose old pages secure_delete zeroed in the database but
        whose frames would wait in the WAL file for the next checkpoint (a seized
        disk). Our background checkpoint is let finish first and held off meanwhile:
        SQLite refuses a second checkpointer at once, and TRUNCATE says so only in its
        result row. A reader in another process holds it off too (each try waits up
        to the busy timeout for it): writes go on between the tries."""
        async with self._checkpointer.held():
            for attempt in range(WIPE_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(WIPE_RETRY_S)
                async with self._writing:
                    rows = await self._db.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
                [(busy, _, _)] = rows
                if not busy:
                    return
        raise StoreError(
            f"what was just erased or dropped is gone from {self.path}, but another program "
            "has the store open, so its old pages stay in the store's WAL file until that "
            "program closes it; close it (stop the node if another command holds the store)",
            path=str(self.path),
        )

    async def _write(self, sql: str, parameters: tuple[object, ...]) -> aiosqlite.Cursor:
        async with self._writing:
            return await self._db.execute(sql, parameters)


async def _to_the_end(step: Awaitable[T]) -> T:
    """Await a database step; if cancelled meanwhile, let it finish, then re-raise."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def _whole(
    write: Callable[..., T], durable: bool, args: tuple[Any, ...], db: Connection
) -> tuple[T, bool]:
    """On the store's thread: `write` in one transaction (SqliteBase._write_whole).
    Returns its result, and whether it changed a row: a commit that changed none
    writes nothing to the WAL, and so syncs nothing, durable or not."""
    if not durable:
        db.execute("PRAGMA synchronous = NORMAL")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            result = write(db, *args)
            wrote = db.total_changes != before
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result, wrote
    finally:
        # Not inside a transaction a failed ROLLBACK left open (SQLite refuses it there,
        # and that error would hide the first): the connection is unusable then anyway.
        if not durable and not db.in_transaction:
            db.execute("PRAGMA synchronous = FULL")


def _nothing() -> None:
    """A call to the store's thread that returns nothing (SqliteBase._write_whole)."""


def _fsync(path: Path) -> None:
    """fsync a file, if it is there (the WAL: SqliteBase.make_durable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # no WAL: every commit was checkpointed and synced already
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
