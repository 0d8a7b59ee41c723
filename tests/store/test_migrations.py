"""A store made by an older schema opens, upgrades and keeps every event."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from federation.core import canonical
from federation.store.schema import MIGRATIONS, SCHEMA_VERSION, SEQ_BITS
from federation.store.sqlite import SqliteStore
from tests.conftest import Club


def make_schema_3_store(path: Path, club: Club, events_per_log: int) -> dict[bytes, list[bytes]]:
    """A store as schema 3 left it (an id column on events), filled by hand as that
    version wrote it. Returns each log's event ids."""
    ids: dict[bytes, list[bytes]] = {}
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for migration in MIGRATIONS[:3]:
            db.executescript(migration)
        db.execute("PRAGMA user_version = 3")
        db.execute("INSERT INTO club (id, genesis) VALUES (?, ?)", (club.id, club.genesis))
        for n, audience in enumerate(("federation", "public"), start=1):
            log = club.log(audience)
            db.execute(
                "INSERT INTO log (n, id, descriptor) VALUES (?, ?, ?)",
                (n, log, club.descriptors[audience]),
            )
            events = club.chain(events_per_log, audience=audience)
            db.executemany(
                "INSERT INTO event (k, id, signed, payload) VALUES (?, ?, ?, ?)",
                [((n << SEQ_BITS) | e.header.seq, e.id, e.signed, e.payload) for e in events],
            )
            db.execute(
                "UPDATE log SET head_seq = ?, head_id = ? WHERE n = ?",
                (events[-1].header.seq, events[-1].id, n),
            )
            ids[log] = [e.id for e in events]
    return ids


async def test_schema_3_store_upgrades_and_keeps_its_events(tmp_path: Path, club: Club) -> None:
    path = tmp_path / "store.sqlite"
    ids = make_schema_3_store(path, club, events_per_log=6)
    async with await SqliteStore.open(path) as store:
        for log, expected in ids.items():
            held = await store.events(log)
            assert [e.id for e in held] == expected
            assert [canonical.event_id(e.signed) for e in held] == expected
            # every event is found by its id, the log's last one included
            for eid in expected:
                assert [e.id for e in await store.events_by_id_prefix(eid[:4])] == [eid]
        assert await store.erase(ids[club.log()][-1])
        assert await store.erase(ids[club.log()][0])
        assert not await store.erase(bytes(32))
        erased = [e.erased for e in await store.events(club.log())]
        assert erased == [True, False, False, False, False, True]
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        columns = [row[1] for row in db.execute("PRAGMA table_info(event)")]
        assert columns == ["k", "signed", "payload"]
