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


async def test_empty_payloads_a_long_run_lost_are_put_back(tmp_path: Path, club: Club) -> None:
    """Schema 8: a run of 32 events or more whose payloads were all empty was stored
    with NULL payloads (SQLite's substr of an empty blob), read as neither missing nor
    erased. The upgrade puts them back as empty blobs, and leaves an erased one erased."""
    path = tmp_path / "store.sqlite"
    events = club.chain(40, payloads=[b""] * 40)
    async with await SqliteStore.open(path, create=True) as store:
        await store.put_club(club.id, club.genesis)
        await store.put_log(club.log(), club.descriptors["federation"])
        await store.append(events)
        assert await store.erase(events[7].id)
    # What the old INSERT_RUN left: every empty payload NULL, at schema 7.
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("UPDATE event SET payload = NULL WHERE payload = x''")
        db.execute("PRAGMA user_version = 7")
        assert db.execute("SELECT count(*) FROM event WHERE payload IS NULL").fetchone() == (40,)
    async with await SqliteStore.open(path) as store:
        held = await store.events(club.log())
        assert [e.payload for e in held] == [None if i == 7 else b"" for i in range(40)]
        assert [e.erased for e in held] == [i == 7 for i in range(40)]
        assert await store.missing_payloads() == {}
