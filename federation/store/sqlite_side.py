"""The SQLite store's tables beside the logs: blocked clubs, projections, peers, meta,
and the snapshot `federation backup` takes (store/sqlite.py is the store).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aiosqlite
import msgspec
from sqlcipher3 import dbapi2 as sqlite3

from federation.core import canonical
from federation.errors import StoreError
from federation.store import cipher
from federation.store.base import PeerRecord, PeerStatus, ProjectionUpdate
from federation.store.schema import MAX_SEQ, SEQ_BITS
from federation.store.sqlite_base import SqliteBase, _to_the_end

_status_encoder = msgspec.msgpack.Encoder()
_status_decoder = msgspec.msgpack.Decoder(PeerStatus)


class SideTables(SqliteBase):
    """What SqliteStore keeps beside its logs (store.base PeerStore, ViewStore)."""

    # --- blocked clubs --------------------------------------------------------------

    async def block_club(self, club: bytes, blocked_us: int) -> int:
        async with self._transaction() as db:
            rows = await db.execute_fetchall("SELECT id, n, descriptor FROM log")
            numbers = {
                bytes(log): int(n)
                for log, n, descriptor in rows
                if canonical.decode_log(descriptor).club == club
            }
            dropped = 0
            for log, n in numbers.items():
                keys = (n << SEQ_BITS, (n << SEQ_BITS) | MAX_SEQ)
                cursor = await db.execute("DELETE FROM event WHERE k > ? AND k <= ?", keys)
                dropped += cursor.rowcount
                for table in ("payload_missing", "payload_erased"):  # keyed like events
                    await db.execute(f"DELETE FROM {table} WHERE k > ? AND k <= ?", keys)
                await db.execute("DELETE FROM log WHERE n = ?", (n,))
                await db.execute("DELETE FROM projection_position WHERE log = ?", (log,))
                self._log_numbers.pop(log, None)
            await db.execute("DELETE FROM club WHERE id = ?", (club,))
            await db.execute(
                "INSERT OR IGNORE INTO blocked (club, blocked_us) VALUES (?, ?)", (club, blocked_us)
            )
        if dropped:  # as erase: the dropped pages leave the WAL now
            await self._wipe_wal()
        return dropped

    async def unblock_club(self, club: bytes) -> bool:
        cursor = await self._write("DELETE FROM blocked WHERE club = ?", (club,))
        return bool(cursor.rowcount)

    async def blocked(self) -> dict[bytes, int]:
        rows = await self._db.execute_fetchall("SELECT club, blocked_us FROM blocked")
        return {bytes(r[0]): int(r[1]) for r in rows}

    # --- projections ----------------------------------------------------------------

    async def projection_positions(self) -> dict[bytes, int]:
        rows = await self._db.execute_fetchall("SELECT log, seq FROM projection_position")
        return {bytes(r[0]): int(r[1]) for r in rows}

    async def projection_items(self, name: str) -> dict[str, bytes]:
        rows = await self._db.execute_fetchall(
            "SELECT key, value FROM projection_item WHERE name = ? ORDER BY key", (name,)
        )
        return {str(r[0]): bytes(r[1]) for r in rows}

    async def projection_get(self, name: str, keys: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for key in keys:
            rows = list(
                await self._db.execute_fetchall(
                    "SELECT value FROM projection_item WHERE name = ? AND key = ?", (name, key)
                )
            )
            if rows:
                found[key] = bytes(rows[0][0])
        return found

    async def save_projection(self, update: ProjectionUpdate, *, replace: bool = False) -> None:
        async with self._transaction() as db:
            if replace:
                await db.execute("DELETE FROM projection_item")
                await db.execute("DELETE FROM projection_position")
            await self._apply_projection(db, update)

    @staticmethod
    async def _apply_projection(db: aiosqlite.Connection, update: ProjectionUpdate) -> None:
        await db.executemany(
            "DELETE FROM projection_item WHERE name = ? AND key = ?",
            [k for k, v in update.items.items() if v is None],
        )
        await db.executemany(
            "INSERT OR REPLACE INTO projection_item (name, key, value) VALUES (?, ?, ?)",
            [(n, k, v) for (n, k), v in update.items.items() if v is not None],
        )
        await db.executemany(
            "INSERT OR REPLACE INTO projection_position (log, seq) VALUES (?, ?)",
            list(update.positions.items()),
        )

    # --- peers ----------------------------------------------------------------------

    async def put_peer(self, peer: PeerRecord) -> None:
        await self._write(
            "INSERT OR REPLACE INTO peer (club, name, url, fingerprint, state, added_us, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                peer.club,
                peer.name,
                peer.url,
                peer.fingerprint,
                peer.state,
                peer.added_us,
                _status_encoder.encode(peer.status),
            ),
        )

    async def peers(self) -> list[PeerRecord]:
        rows = await self._db.execute_fetchall(
            "SELECT club, name, url, fingerprint, state, added_us, status FROM peer "
            "ORDER BY added_us"
        )
        return [
            PeerRecord(bytes(c), n, u, bytes(f), s, a, _status_decoder.decode(st))
            for c, n, u, f, s, a, st in rows
        ]

    async def remove_peer(self, club: bytes) -> bool:
        cursor = await self._write("DELETE FROM peer WHERE club = ?", (club,))
        return bool(cursor.rowcount)

    async def set_peer_status(self, club: bytes, status: PeerStatus) -> None:
        await self._write(
            "UPDATE peer SET status = ? WHERE club = ?", (_status_encoder.encode(status), club)
        )

    # --- snapshot (federation backup) --------------------------------------------------

    async def snapshot(self, path: Path) -> None:
        """A consistent copy of the whole store at `path` (a new file), taken while other
        connections (a running node's) read and write: the export runs in one read
        transaction, so WAL writers go on. An encrypted store's copy is encrypted with
        the same store key and settings (an attached database without KEY takes the
        main one's key; the settings are set on it as `cipher.connect` sets them), so
        it opens with the same key file; node/backup.py seals it with age besides."""
        encrypted = not cipher.is_plaintext(self.path)
        cipher.create_private(path)  # 0600 from the first byte, like the store
        async with self._writing:
            db = self._db
            try:
                await db.execute("ATTACH DATABASE ? AS snapshot", (str(path),))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot snapshot the store into {path}: {exc}") from exc
            try:
                if encrypted:
                    for pragma in cipher.CIPHER_SETTINGS:
                        await db.execute(pragma.replace("PRAGMA ", "PRAGMA snapshot.", 1))
                await _to_the_end(db.execute("BEGIN"))
                try:
                    row = await (await db.execute("PRAGMA main.user_version")).fetchone()
                    await db.execute("SELECT sqlcipher_export('snapshot')")
                    # sqlcipher_export copies tables and rows, not the schema version.
                    await db.execute(f"PRAGMA snapshot.user_version = {int((row or (0,))[0])}")
                finally:
                    await _to_the_end(db.execute("COMMIT"))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot snapshot the store into {path}: {exc}") from exc
            finally:
                await _to_the_end(db.execute("DETACH DATABASE snapshot"))

    # --- meta -----------------------------------------------------------------------

    async def get_meta(self, key: str) -> bytes | None:
        rows = list(await self._db.execute_fetchall("SELECT value FROM meta WHERE key = ?", (key,)))
        return bytes(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: bytes) -> None:
        await self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
