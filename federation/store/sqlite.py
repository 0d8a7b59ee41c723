"""The SQLite store, on aiosqlite: WAL, durable commits, versioned schema, atomic appends.

Its tables, their migrations and how rows are keyed are in `store.schema`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from sqlite3 import Connection as StdlibConnection
from types import TracebackType
from typing import Any, cast

import aiosqlite

# SQLCipher's DB-API mirrors sqlite3 (its own exception classes): every connection of
# the store goes through it, keyed or not (store.cipher).
from sqlcipher3 import dbapi2 as sqlite3

from federation.core import canonical
from federation.core.events import Head, VerifiedEvent, VerifiedRun, runs_of
from federation.errors import StoreError
from federation.store import cipher
from federation.store import sqlite_write as write
from federation.store.base import (
    ForkRecord,
    HeldEvent,
    LogRecord,
    ProjectionUpdate,
    RawEvent,
)
from federation.store.checkpoint import CHECKPOINT_EVERY_BYTES, WAL_BOUND_BYTES, Checkpointer
from federation.store.schema import (
    MAX_SEQ,
    MIGRATIONS,
    SCHEMA_VERSION,
    SEQ_BITS,
)
from federation.store.sqlite_base import _to_the_end
from federation.store.sqlite_side import SideTables

# Page cache per connection: a sync's batch of 20,000 events and the B-tree pages it
# touches fit, so a commit does not write and re-read pages mid-transaction.
CACHE_KIB = 32 * 1024
# Row keys per `k IN (...)` query: well under SQLite's limit on bound parameters.
_KEYS_PER_QUERY = 500
# How long a writer waits for another process's write (e.g. the CLI while the node runs).
BUSY_TIMEOUT_MS = 10_000


def _row_event(signed: bytes, payload: bytes | None) -> VerifiedEvent:
    # Rows were verified before they were stored; decoding the header restores the type.
    return VerifiedEvent(
        canonical.event_id(signed), canonical.decode_header(signed), signed, payload
    )


class SqliteStore(SideTables):
    """Open with `await SqliteStore.open(path)` or `async with await SqliteStore.open(...)`."""

    @classmethod
    async def open(
        cls, path: Path | str, *, create: bool = False, key: bytes | None = None
    ) -> SqliteStore:
        """`key`: the 32-byte store key (store.cipher); None opens a plain SQLite file."""
        path = Path(path)
        if not create and not path.exists():
            raise StoreError(
                f"no store at {path}; is this a node directory? (`federation init` makes one)",
                path=str(path),
            )
        if not path.exists():
            cipher.create_private(path)
        cipher.make_private(path)
        try:
            # aiosqlite takes a connector (its `connect` would use the stdlib's sqlite3);
            # SQLCipher's connection has the same DB-API.
            connector = cast(
                "Callable[[], StdlibConnection]", lambda: cipher.connect(path, key, check=False)
            )
            db = await aiosqlite.Connection(connector, 64)
            checkpointer = Checkpointer(connector)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}", path=str(path)) from exc
        try:  # the key works (or, with no key, the file is plain SQLite)
            await db.execute(cipher.CHECK_KEY)
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise cipher.unreadable(path, key, exc) from None
        except BaseException:
            await db.close()
            raise
        store = cls(db, path, checkpointer)
        try:
            await store._setup()
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise StoreError(
                f"store {path} is not a readable SQLite database ({exc}); restore it from a backup",
                path=str(path),
            ) from exc
        except BaseException:
            await db.close()
            raise
        return store

    async def _setup(self) -> None:
        db = self._db
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk when append returns, even across a power cut.
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        # Erased payloads are overwritten with zeros, not just unlinked (seized laptops).
        await db.execute("PRAGMA secure_delete = ON")
        page = (await (await db.execute("PRAGMA page_size")).fetchone() or (4096,))[0]
        # The writer checkpoints once the WAL holds WAL_BOUND_BYTES (in pages of the
        # store's size) rather than SQLite's default 1,000 pages; before that, a
        # Checkpointer does it beside the writer (store.checkpoint).
        await db.execute(f"PRAGMA wal_autocheckpoint = {WAL_BOUND_BYTES // int(page)}")
        # A WAL that starts over is cut back to this size: a long sync's WAL (up to
        # WAL_BOUND_BYTES) does not stay that large on disk.
        await db.execute(f"PRAGMA journal_size_limit = {CHECKPOINT_EVERY_BYTES}")
        # Sorts and temporary tables stay in memory: nothing of the store in a temp file.
        await db.execute("PRAGMA temp_store = MEMORY")
        try:  # what INSERT_RUN needs: JSON (built in since 3.38)
            await db.execute("SELECT key, value FROM json_each('[1]')")
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"this Python's SQLite {sqlite3.sqlite_version} lacks JSON functions "
                f"({exc}); use a Python built with SQLite 3.38 or later",
                path=str(self.path),
            ) from exc
        version = (await (await db.execute("PRAGMA user_version")).fetchone() or (0,))[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema {version}, newer than this program "
                f"({SCHEMA_VERSION}); upgrade federation",
                path=str(self.path),
            )
        # The schema is ours: no view, no trigger. One there came from elsewhere (a
        # store restored from a crafted backup) and would run on our reads or writes.
        foreign = list(
            await db.execute_fetchall(
                "SELECT type, name FROM sqlite_master WHERE type IN ('view', 'trigger')"
            )
        )
        if foreign:
            kind, name = foreign[0]
            raise StoreError(
                f"store {self.path} has a {kind} {name!r} that federation never makes, so "
                "it was changed outside federation; restore it from a backup you made",
                path=str(self.path),
            )
        for number in range(version, SCHEMA_VERSION):
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number + 1}")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def data_version(self) -> int:
        rows = list(await self._db.execute_fetchall("PRAGMA data_version"))
        return int(rows[0][0])

    async def aclose(self) -> None:
        try:
            await self._checkpointer.aclose()
        finally:
            await _to_the_end(self._close_after_writes())

    async def _close_after_writes(self) -> None:
        async with self._writing:  # a write under way ends first, whole
            await self._db.close()

    # --- clubs and logs -------------------------------------------------------------

    async def put_club(self, club: bytes, genesis: bytes) -> None:
        await self._write_whole(write.put_club, club, genesis)

    async def clubs(self) -> dict[bytes, bytes]:
        rows = await self._db.execute_fetchall("SELECT id, genesis FROM club")
        return {bytes(r[0]): bytes(r[1]) for r in rows}

    async def put_log(self, log: bytes, descriptor: bytes) -> None:
        await self._write_whole(write.put_log, log, descriptor)

    @staticmethod
    def _log_record(row: Any) -> LogRecord:  # a row of SQLCipher's or aiosqlite's type
        log, descriptor, head_seq, head_id, frozen = row
        assert isinstance(descriptor, bytes)
        assert isinstance(head_seq, int)
        d = canonical.decode_log(descriptor)
        head = Head(head_seq, bytes(head_id)) if head_seq and isinstance(head_id, bytes) else None
        return LogRecord(bytes(log), descriptor, d.club, d.name, d.audience, head, bool(frozen))

    async def logs(self) -> list[LogRecord]:
        rows = await self._db.execute_fetchall(
            "SELECT id, descriptor, head_seq, head_id, frozen FROM log ORDER BY n"
        )
        return [self._log_record(r) for r in rows]

    async def log(self, log: bytes) -> LogRecord | None:
        rows = list(
            await self._db.execute_fetchall(
                "SELECT id, descriptor, head_seq, head_id, frozen FROM log WHERE id = ?", (log,)
            )
        )
        return self._log_record(rows[0]) if rows else None

    async def _log_number(self, log: bytes) -> int | None:
        n = self._log_numbers.get(log)
        if n is None:
            rows = list(await self._db.execute_fetchall("SELECT n FROM log WHERE id = ?", (log,)))
            if not rows:
                return None
            n = self._log_numbers[log] = int(rows[0][0])
        return n

    # --- events ---------------------------------------------------------------------

    async def append(self, events: Sequence[VerifiedEvent]) -> None:
        await self.append_runs(runs_of(events))

    async def append_runs(
        self,
        runs: Sequence[VerifiedRun],
        *,
        clubs: Mapping[bytes, bytes] | None = None,
        logs: Mapping[bytes, bytes] | None = None,
        durable: bool = True,
    ) -> int:
        runs = [run for run in runs if run.ids]
        if not runs and not clubs and not logs:
            return 0
        erased, written = await self._write_whole(
            write.append_runs, runs, clubs or {}, logs or {}, durable=durable
        )
        self._checkpointer.committed(written)
        if erased:
            await self._wipe_wal()
        return erased

    async def events(
        self, log: bytes, after_seq: int = 0, limit: int = 1000
    ) -> list[VerifiedEvent]:
        return [
            _row_event(r.signed, r.payload) for r in await self.raw_events(log, after_seq, limit)
        ]

    async def raw_events(self, log: bytes, after_seq: int = 0, limit: int = 1000) -> list[RawEvent]:
        n = await self._log_number(log)
        if n is None or after_seq >= MAX_SEQ:  # past any seq (a peer's want may say so)
            return []
        base = n << SEQ_BITS
        rows = await self._db.execute_fetchall(
            "SELECT k, signed, payload FROM event WHERE k > ? AND k <= ? ORDER BY k LIMIT ?",
            (base + after_seq, base + MAX_SEQ, limit),
        )
        return [RawEvent(k & MAX_SEQ, s, p) for k, s, p in rows]  # BLOBs are bytes

    async def event_at(self, log: bytes, seq: int) -> VerifiedEvent | None:
        n = await self._log_number(log)
        if n is None or not 1 <= seq <= MAX_SEQ:
            return None
        rows = list(
            await self._db.execute_fetchall(
                "SELECT signed, payload FROM event WHERE k = ?", ((n << SEQ_BITS) | seq,)
            )
        )
        return _row_event(*rows[0]) if rows else None

    async def events_by_id_prefix(self, prefix: bytes, limit: int = 2) -> list[VerifiedEvent]:
        found: list[VerifiedEvent] = []
        keys = await self._keys_by_id_prefix(self._db, prefix)
        for at in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[at : at + _KEYS_PER_QUERY]
            rows = await self._db.execute_fetchall(
                f"SELECT signed, payload FROM event WHERE k IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            found += [_row_event(*r) for r in rows]
        return sorted(found, key=lambda e: e.id)[:limit]

    @staticmethod
    async def _keys_by_id_prefix(db: aiosqlite.Connection, prefix: bytes) -> list[int]:
        """Row keys of the events whose id starts with `prefix`. Every event's id is
        the `prev` of the event after it (row key + 1) or, for the last, its log's head:
        a scan of both finds them without an id column or index (migration 4)."""
        rows = await db.execute_fetchall(
            f"SELECT k - 1 FROM event WHERE (k & {MAX_SEQ}) > 1 "
            f"AND substr(signed, {canonical.PREV_OFFSET + 1}, ?) = ? "
            f"UNION ALL SELECT (n << {SEQ_BITS}) | head_seq FROM log "
            "WHERE head_seq > 0 AND substr(head_id, 1, ?) = ?",
            (len(prefix), prefix, len(prefix), prefix),
        )
        return [int(r[0]) for r in rows]

    async def count_events(self) -> int:
        rows = list(await self._db.execute_fetchall("SELECT count(*) FROM event"))
        return int(rows[0][0])

    async def erase(self, event: bytes, projection: ProjectionUpdate | None = None) -> bool:
        if len(event) != canonical.HASH_BYTES:
            return False
        async with self._transaction() as db:
            keys = await self._keys_by_id_prefix(db, event)
            erased = 0
            if keys:
                cursor = await db.execute(
                    "UPDATE event SET payload = NULL WHERE k = ? AND payload IS NOT NULL", keys[:1]
                )
                erased = cursor.rowcount
                # Wiped here, unless its origin erased it already: never asked for again.
                await db.execute("DELETE FROM payload_missing WHERE k = ?", keys[:1])
                await db.execute(
                    "INSERT OR IGNORE INTO payload_erased (k, origin) VALUES (?, 0)", keys[:1]
                )
            if erased and projection is not None:
                await self._apply_projection(db, projection)
        if erased:
            await self._wipe_wal()
        return bool(keys)

    async def fill_payload(
        self, log: bytes, seq: int, payload: bytes, *, durable: bool = True
    ) -> bool:
        n = await self._log_number(log)
        if n is None or not 1 <= seq <= MAX_SEQ:
            return False
        erased = await self._write_whole(write.fill_payload, n, log, seq, payload, durable=durable)
        if erased:
            await self._wipe_wal()
        return erased is not None

    async def missing_payloads(self) -> dict[bytes, int]:
        rows = await self._db.execute_fetchall(
            f"SELECT log.id, min(m.k) & {MAX_SEQ} FROM payload_missing AS m "
            f"JOIN log ON log.n = m.k >> {SEQ_BITS} GROUP BY log.n"
        )
        return {bytes(r[0]): int(r[1]) for r in rows}

    async def erasures(self, log: bytes) -> dict[int, bool]:
        n = await self._log_number(log)
        if n is None:
            return {}
        base = n << SEQ_BITS
        rows = await self._db.execute_fetchall(
            "SELECT k, origin FROM payload_erased WHERE k > ? AND k <= ?", (base, base + MAX_SEQ)
        )
        return {int(k) & MAX_SEQ: bool(origin) for k, origin in rows}

    async def local_erasures(self) -> dict[bytes, int]:
        rows = await self._db.execute_fetchall(
            f"SELECT log.id, min(e.k) & {MAX_SEQ} FROM payload_erased AS e "
            f"JOIN log ON log.n = e.k >> {SEQ_BITS} WHERE e.origin = 0 GROUP BY log.n"
        )
        return {bytes(r[0]): int(r[1]) for r in rows}

    # --- forks ----------------------------------------------------------------------

    async def record_fork(self, fork: ForkRecord) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO fork (log, seq, club, ours, theirs, detected_us) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (fork.log, fork.seq, fork.club, fork.ours, fork.theirs, fork.detected_us),
            )
            await db.execute("UPDATE log SET frozen = 1 WHERE id = ?", (fork.log,))

    async def forks(self) -> list[ForkRecord]:
        rows = await self._db.execute_fetchall(
            "SELECT club, log, seq, ours, theirs, detected_us, resolved FROM fork "
            "ORDER BY detected_us"
        )
        return [
            ForkRecord(bytes(c), bytes(lg), s, bytes(o), bytes(t), d, bool(r))
            for c, lg, s, o, t, d, r in rows
        ]

    async def hold_apart(self, log: bytes, from_seq: int, reason: str, held_us: int) -> int:
        n = await self._log_number(log)
        if n is None or not 1 <= from_seq <= MAX_SEQ:
            return 0
        lo, hi = (n << SEQ_BITS) | from_seq, (n << SEQ_BITS) | MAX_SEQ
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT k, signed, payload FROM event WHERE k >= ? AND k <= ? ORDER BY k",
                    (lo, hi),
                )
            )
            if not rows:
                return 0
            club = canonical.decode_header(bytes(rows[0][1])).club
            await db.executemany(
                "INSERT INTO held_apart (log, seq, club, signed, payload, reason, held_us) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(log, k & MAX_SEQ, club, sg, p, reason, held_us) for k, sg, p in rows],
            )
            for table in ("event", "payload_missing", "payload_erased"):
                await db.execute(f"DELETE FROM {table} WHERE k >= ? AND k <= ?", (lo, hi))
            first = bytes(rows[0][1])
            prev = first[canonical.PREV_OFFSET : canonical.PREV_OFFSET + canonical.HASH_BYTES]
            head_id = None if from_seq == 1 else prev
            await db.execute(
                "UPDATE log SET head_seq = ?, head_id = ? WHERE n = ?", (from_seq - 1, head_id, n)
            )
            await db.execute(
                "UPDATE fork SET resolved = 1 WHERE log = ? AND seq >= ?", (log, from_seq)
            )
            await db.execute(
                "UPDATE log SET frozen = 0 WHERE n = ? AND NOT EXISTS "
                "(SELECT 1 FROM fork WHERE fork.log = ? AND resolved = 0)",
                (n, log),
            )
            await db.execute("DELETE FROM projection_position WHERE log = ?", (log,))
        return len(rows)

    async def held_apart(self) -> list[HeldEvent]:
        rows = await self._db.execute_fetchall(
            "SELECT club, log, seq, signed, reason, held_us FROM held_apart ORDER BY rowid"
        )
        return [
            HeldEvent(bytes(c), bytes(lg), int(s), bytes(sg), str(r), int(h))
            for c, lg, s, sg, r, h in rows
        ]
