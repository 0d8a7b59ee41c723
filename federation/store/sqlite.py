"""The SQLite store, on aiosqlite: WAL, durable commits, versioned schema, atomic appends.

Its tables, their migrations and how rows are keyed are in `store.schema`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from sqlite3 import Connection as StdlibConnection
from types import TracebackType
from typing import Any, cast

import aiosqlite

# SQLCipher's DB-API mirrors sqlite3 (its own exception classes): every connection of
# the store goes through it, keyed or not (store.cipher).
from sqlcipher3 import dbapi2 as sqlite3

from federation.core import canonical, payloads
from federation.core.canonical import Kind
from federation.core.events import Head, VerifiedEvent, VerifiedRun, runs_of
from federation.core.log import held_seq, rest_to_append
from federation.errors import InvalidEventError, StoreError
from federation.store import cipher
from federation.store.base import (
    ForkRecord,
    HeldEvent,
    LogRecord,
    ProjectionUpdate,
    RawEvent,
)
from federation.store.schema import (
    INSERT_RUN,
    MAX_SEQ,
    MIGRATIONS,
    SCHEMA_VERSION,
    SEQ_BITS,
    run_parameters,
)
from federation.store.sqlite_side import SideTables

# Page cache per connection: a sync's batch of 20,000 events and the B-tree pages it
# touches fit, so a commit does not write and re-read pages mid-transaction.
CACHE_KIB = 32 * 1024
# Checkpoint the WAL into the database once it holds this much (in pages of the
# store's size) rather than SQLite's default 1,000 pages: a bulk sync then
# checkpoints (and fsyncs) less often, and the WAL stays bounded.
WAL_CHECKPOINT_BYTES = 32 * 1024 * 1024
# A run this long is inserted by one INSERT_RUN statement; shorter ones (a post, or
# interleaved events of several logs) row by row, where one statement's fixed cost
# (a round trip to the store's thread, ~50 us) would outweigh binding their rows.
RUN_STATEMENT_EVENTS = 32
# Row keys per `k IN (...)` query: well under SQLite's limit on bound parameters.
_KEYS_PER_QUERY = 500
# How long a writer waits for another process's write (e.g. the CLI while the node runs).
BUSY_TIMEOUT_MS = 10_000

# An erasure event is found in a run by the low byte of its kind: verified events
# have known kinds, all under 256.
_KIND_AT = canonical.KIND_OFFSET
_KIND_LOW = _KIND_AT + 1
_ERASURE_KIND = int(Kind.ERASURE)
_kind_low = itemgetter(_KIND_LOW)


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
        store = cls(db, path)
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
        await db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_BYTES // int(page)}")
        # Sorts and temporary tables stay in memory: nothing of the store in a temp file.
        await db.execute("PRAGMA temp_store = MEMORY")
        try:  # what INSERT_RUN needs: JSON (built in since 3.38) and window functions
            await db.execute("SELECT sum(value) OVER (ORDER BY key) FROM json_each('[1]')")
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"this Python's SQLite {sqlite3.sqlite_version} lacks JSON or window "
                f"functions ({exc}); use a Python built with SQLite 3.38 or later",
                path=str(self.path),
            ) from exc
        version = (await (await db.execute("PRAGMA user_version")).fetchone() or (0,))[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema {version}, newer than this program "
                f"({SCHEMA_VERSION}); upgrade federation",
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
        await self._db.close()

    # --- clubs and logs -------------------------------------------------------------

    async def put_club(self, club: bytes, genesis: bytes) -> None:
        async with self._transaction() as db:
            await self._check_not_blocked(db, [club])
            await db.execute(
                "INSERT OR IGNORE INTO club (id, genesis) VALUES (?, ?)", (club, genesis)
            )

    @staticmethod
    async def _check_not_blocked(db: aiosqlite.Connection, clubs: Sequence[bytes]) -> None:
        """Refuse a blocked club's genesis and logs (the operator's `block`)."""
        if not clubs:
            return
        rows = list(
            await db.execute_fetchall(
                f"SELECT club FROM blocked WHERE club IN ({', '.join('?' * len(clubs))})",
                clubs,
            )
        )
        if rows:
            raise InvalidEventError("the club is blocked on this node", club=bytes(rows[0][0]))

    async def clubs(self) -> dict[bytes, bytes]:
        rows = await self._db.execute_fetchall("SELECT id, genesis FROM club")
        return {bytes(r[0]): bytes(r[1]) for r in rows}

    async def put_log(self, log: bytes, descriptor: bytes) -> None:
        async with self._transaction() as db:
            if await db.execute_fetchall("SELECT 1 FROM log WHERE id = ?", (log,)):
                return  # held already: the descriptor given again is ignored
            await self._check_not_blocked(db, [canonical.decode_log(descriptor).club])
            await db.execute("INSERT INTO log (id, descriptor) VALUES (?, ?)", (log, descriptor))

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
    ) -> int:
        runs = [run for run in runs if run.ids]
        if not runs and not clubs and not logs:
            return 0
        erased = 0
        async with self._transaction() as db:
            if clubs or logs:  # new clubs and logs are few: one query for them all
                named = {
                    *(clubs or {}),
                    *(canonical.decode_log(d).club for d in (logs or {}).values()),
                }
                await self._check_not_blocked(db, list(named))
            if clubs:
                await db.executemany(
                    "INSERT OR IGNORE INTO club (id, genesis) VALUES (?, ?)", clubs.items()
                )
            if logs:
                await db.executemany(
                    "INSERT OR IGNORE INTO log (id, descriptor) VALUES (?, ?)", logs.items()
                )
            if not runs:
                return 0
            # log id -> [log number, club, head], kept as the batch goes
            state = await self._append_state(db, runs)
            rows: list[tuple[int, bytes, bytes | None]] = []  # short runs
            statements = []  # long runs, one INSERT_RUN each
            missing: list[tuple[int]] = []  # row keys of events that came payload-less
            erasures: list[tuple[int, bytes, int, bytes | None]] = []  # n, log, seq, payload
            for run in runs:
                at = state[run.log]
                seq = held_seq(run, at[2])  # None on the hot path: no lookup
                held = None if seq is None else await self._held_id(db, at[0], seq)
                rest = rest_to_append(run, at[2], at[1], held)  # the chain rule (§3.4)
                if rest is None:
                    continue  # held already (another peer's ingest was first)
                run = rest
                head = run.head
                assert head is not None  # runs hold at least one event
                if head.seq > MAX_SEQ:
                    raise InvalidEventError("seq beyond what this store holds", log=run.log)
                first = (at[0] << SEQ_BITS) | run.first
                if None in run.payloads:  # a tuple scan in C: nothing on the hot path
                    missing += [(first + i,) for i, p in enumerate(run.payloads) if p is None]
                if _ERASURE_KIND in map(_kind_low, run.signed):  # a scan in C, as above
                    erasures += [
                        (at[0], run.log, run.first + i, run.payloads[i])
                        for i, signed in enumerate(run.signed)
                        if signed[_KIND_LOW] == _ERASURE_KIND
                    ]
                if len(run) >= RUN_STATEMENT_EVENTS:
                    statements.append(run_parameters(first, run))
                else:
                    keys = range(first, first + len(run))
                    rows.extend(zip(keys, run.signed, run.payloads, strict=True))
                at[2] = head
            if rows:
                await db.executemany(
                    "INSERT INTO event (k, signed, payload) VALUES (?, ?, ?)", rows
                )
            # Queued all at once, the statements run back to back on the worker
            # thread; awaited one by one, each would wait for the event loop to turn
            # (a peer's next batch being verified) before the next could start.
            await asyncio.gather(*(db.execute(INSERT_RUN, params) for params in statements))
            await db.executemany(
                "UPDATE log SET head_seq = ?, head_id = ? WHERE n = ?",
                [(head.seq, head.id, n) for n, _, head in state.values()],
            )
            if missing:
                await db.executemany(
                    "INSERT OR IGNORE INTO payload_missing (k) VALUES (?)", missing
                )
            for n, log, seq, payload in erasures:
                erased += await self._apply_erasure(db, n, log, seq, payload)
        if erased:
            await self._checkpoint()
        return erased

    @staticmethod
    async def _held_id(db: aiosqlite.Connection, n: int, seq: int) -> bytes | None:
        """The id of the event log number `n` holds at `seq`, if any."""
        rows = list(
            await db.execute_fetchall(
                "SELECT signed FROM event WHERE k = ?", ((n << SEQ_BITS) | seq,)
            )
        )
        return canonical.event_id(rows[0][0]) if rows else None

    async def _append_state(
        self, db: aiosqlite.Connection, runs: Sequence[VerifiedRun]
    ) -> dict[bytes, list[Any]]:
        """Each log's [number, club, head], read inside the write transaction."""
        logs = list(dict.fromkeys(run.log for run in runs))
        found = {
            bytes(row[0]): row[1:]
            for row in await db.execute_fetchall(
                "SELECT id, n, head_seq, head_id, frozen, descriptor FROM log "
                f"WHERE id IN ({', '.join('?' * len(logs))})",
                logs,
            )
        }
        state: dict[bytes, list[Any]] = {}
        for run in runs:
            if run.log in state:
                continue
            if run.log not in found:
                raise InvalidEventError("unknown log: store its descriptor first", log=run.log)
            n, head_seq, head_id, frozen, descriptor = found[run.log]
            if frozen:
                raise InvalidEventError("log is frozen after a fork", club=run.club, log=run.log)
            club = canonical.decode_log(descriptor).club
            state[run.log] = [n, club, Head(head_seq, bytes(head_id)) if head_seq else None]
        return state

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
            await self._checkpoint()
        return bool(keys)

    async def _checkpoint(self) -> None:
        # Move the erased page into the database now and empty the WAL, so the
        # payload does not wait in the WAL file until the next checkpoint.
        async with self._writing:
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    async def _apply_erasure(
        db: aiosqlite.Connection, n: int, log: bytes, seq: int, payload: bytes | None
    ) -> int:
        """An erasure event at (log, seq) is held with `payload`: drop the payload it
        erases, if it erases one (protocol.md §3.5). Inside the caller's transaction.
        Returns 1 if a payload was dropped or was already gone, else 0."""
        named = payloads.erasure_target(seq, payload)
        if named is None:
            return 0
        k = (n << SEQ_BITS) | named[0]
        rows = list(await db.execute_fetchall("SELECT signed FROM event WHERE k = ?", (k,)))
        if not rows:
            return 0
        signed = bytes(rows[0][0])
        kind = int.from_bytes(signed[_KIND_AT : _KIND_AT + 2])
        if not payloads.erases(named[0], canonical.event_id(signed), kind, named):
            return 0
        await db.execute("UPDATE event SET payload = NULL WHERE k = ?", (k,))
        await db.execute("DELETE FROM payload_missing WHERE k = ?", (k,))
        await db.execute("INSERT OR REPLACE INTO payload_erased (k, origin) VALUES (?, 1)", (k,))
        # The views fold this log again: the erased text leaves them (node.projector).
        await db.execute("DELETE FROM projection_position WHERE log = ?", (log,))
        return 1

    async def fill_payload(self, log: bytes, seq: int, payload: bytes) -> bool:
        n = await self._log_number(log)
        if n is None or not 1 <= seq <= MAX_SEQ:
            return False
        k = (n << SEQ_BITS) | seq
        async with self._transaction() as db:
            if not list(
                await db.execute_fetchall("SELECT 1 FROM payload_missing WHERE k = ?", (k,))
            ):
                return False  # held, or erased by its origin or here: never stored again
            await db.execute(
                "UPDATE event SET payload = ? WHERE k = ? AND payload IS NULL", (payload, k)
            )
            await db.execute("DELETE FROM payload_missing WHERE k = ?", (k,))
            await db.execute("DELETE FROM projection_position WHERE log = ?", (log,))
            erased = await self._apply_erasure(db, n, log, seq, payload)
        if erased:
            await self._checkpoint()
        return True

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
