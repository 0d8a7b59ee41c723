"""The SQLite store's layout: its tables, their migrations, and the statements that
depend on how rows are keyed. Kept apart from the store's I/O so the layout reads
in one place.

An event's row key packs (log number, seq) into one integer, so a log's events are
one contiguous range of the table's own B-tree: appends go at the end of a range
and a sync reads a range, with no second index to keep in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import lshift, or_
from typing import Any, cast

import msgspec

from federation.core import canonical
from federation.core.events import VerifiedRun

# Row keys are (log number << SEQ_BITS) | seq: 2^40 events per log, 2^23 logs per node.
SEQ_BITS = 40
MAX_SEQ = (1 << SEQ_BITS) - 1

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE club (id BLOB PRIMARY KEY, genesis BLOB NOT NULL);
    CREATE TABLE log (
        n INTEGER PRIMARY KEY,
        id BLOB NOT NULL UNIQUE,
        descriptor BLOB NOT NULL,
        head_seq INTEGER NOT NULL DEFAULT 0,
        head_id BLOB,
        frozen INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE event (
        k INTEGER PRIMARY KEY,
        id BLOB NOT NULL,
        signed BLOB NOT NULL,
        payload BLOB
    );
    CREATE INDEX event_by_id ON event (id);
    CREATE TABLE fork (
        log BLOB NOT NULL,
        seq INTEGER NOT NULL,
        club BLOB NOT NULL,
        ours BLOB NOT NULL,
        theirs BLOB NOT NULL,
        detected_us INTEGER NOT NULL,
        PRIMARY KEY (log, seq)
    );
    CREATE TABLE projection_item (
        name TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (name, key)
    ) WITHOUT ROWID;
    CREATE TABLE projection_position (log BLOB PRIMARY KEY, seq INTEGER NOT NULL);
    """,
    # 2: peers, with their sync status as one msgpack value (it grows with the product)
    """
    CREATE TABLE peer (
        club BLOB PRIMARY KEY,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        state TEXT NOT NULL,
        added_us INTEGER NOT NULL,
        status BLOB NOT NULL
    );
    """,
    # 3: no index on event ids. It cost ~40% of bulk ingest speed (a random insert per
    # event); only people's lookups by id prefix (`show`, `erase`) used it, and a scan
    # answers them in well under a second even at a million events.
    """
    DROP INDEX event_by_id;
    """,
    # 4: no event id column either. An event's id is the hash of its signed header,
    # and it is stored already: in the next event's `prev`, or as the log's head. The
    # 32 bytes a row and their copying cost bulk ingest ~8%; lookups by id now match
    # `prev` (events_by_id_prefix).
    """
    ALTER TABLE event DROP COLUMN id;
    """,
    # 5: which payload-less events are missing (asked for again, filled in) and which
    # are erased (by the origin's erasure event, or wiped here), keyed like event
    # rows. Payloads already absent: a roster event's is missing (it cannot be
    # erased, protocol.md §3.5); any other was wiped here.
    f"""
    CREATE TABLE payload_missing (k INTEGER PRIMARY KEY);
    CREATE TABLE payload_erased (k INTEGER PRIMARY KEY, origin INTEGER NOT NULL);
    INSERT INTO payload_missing SELECT k FROM event
        WHERE payload IS NULL AND substr(signed, {canonical.KIND_OFFSET + 1}, 2) = x'0005';
    INSERT INTO payload_erased SELECT k, 0 FROM event
        WHERE payload IS NULL AND substr(signed, {canonical.KIND_OFFSET + 1}, 2) != x'0005';
    """,
    # 6: clubs the operator blocked (protocol.md §6.3): their logs are dropped and
    # refused from then on.
    """
    CREATE TABLE blocked (club BLOB PRIMARY KEY, blocked_us INTEGER NOT NULL);
    """,
    # 7: key events (protocol.md §2.2). Events a key may not sign where they stand are
    # moved out of their logs into `held_apart` (evidence, never served); a fork whose
    # both events fell outside their key's window is `resolved`.
    """
    CREATE TABLE held_apart (
        log BLOB NOT NULL,
        seq INTEGER NOT NULL,
        club BLOB NOT NULL,
        signed BLOB NOT NULL,
        payload BLOB,
        reason TEXT NOT NULL,
        held_us INTEGER NOT NULL
    );
    ALTER TABLE fork ADD COLUMN resolved INTEGER NOT NULL DEFAULT 0;
    """,
    # 8: empty payloads put back. INSERT_RUN cut a run of 32 events or more whose
    # payloads were all empty out of an empty blob, and SQLite's substr of an empty
    # blob is NULL, not an empty blob: those events read as payload-less, neither
    # missing nor erased, and were served so. An empty payload is one whose header
    # says size 0 and that no erasure or missing mark explains.
    f"""
    UPDATE event SET payload = x''
        WHERE payload IS NULL
        AND substr(signed, {canonical.PAYLOAD_SIZE_OFFSET + 1}, 4) = x'00000000'
        AND k NOT IN (SELECT k FROM payload_missing)
        AND k NOT IN (SELECT k FROM payload_erased);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


# One statement inserts a whole run, its rows cut out of a few joined blobs inside
# SQLite. Python's sqlite3 binds parameters holding the GIL and releases it while
# SQLite steps: with four parameters a run instead of three an event, the worker
# thread inserts a run of thousands of events without the GIL, and the event loop
# verifies the next batch meanwhile (bulk ingest's hot path: bench/RESULTS.md).
# `places` is a JSON array, one integer an event: its payload's offset in `payloads`
# shifted left by SIZE_BITS, or'd with its size; -1 for an erased payload. Computed
# in Python (C-level map and accumulate), not by a window function in SQLite, which
# cost a third of the statement (bench/RESULTS.md, "rows placed without a window
# function").
SIZE_BITS = canonical.MAX_PAYLOAD_BYTES.bit_length()
_SIZE_MASK = (1 << SIZE_BITS) - 1
_ROWS = f"""
INSERT INTO event (k, signed, payload)
SELECT :first + key,
       substr(:signed, key * {canonical.SIGNED_HEADER_BYTES} + 1, {canonical.SIGNED_HEADER_BYTES}),
       {{payload}}
FROM json_each(:places)
"""
_CUT = f"substr(:payloads, (value >> {SIZE_BITS}) + 1, value & {_SIZE_MASK})"
INSERT_RUN = _ROWS.format(payload=_CUT)
# The same with erased payloads among the run's (rare: a bulk run has none).
INSERT_RUN_ERASED = _ROWS.format(payload=f"CASE WHEN value < 0 THEN NULL ELSE {_CUT} END")
_places_encoder = msgspec.json.Encoder()


def placed(payloads: Sequence[bytes | None]) -> tuple[str, str]:
    """INSERT_RUN (or INSERT_RUN_ERASED) for a run of these payloads, and its
    `places` parameter."""
    if None in payloads:
        sizes = [0 if p is None else len(p) for p in payloads]
        places = [
            -1 if p is None else ((end - size) << SIZE_BITS) | size
            for p, end, size in zip(payloads, accumulate(sizes), sizes, strict=True)
        ]
        return INSERT_RUN_ERASED, _places_encoder.encode(places).decode()
    # The bulk case: map, accumulate and the operators, no Python frame per event.
    sizes = [*map(len, cast("Sequence[bytes]", payloads))]
    starts = map(lshift, accumulate(sizes, initial=0), repeat(SIZE_BITS))
    return INSERT_RUN, _places_encoder.encode([*map(or_, starts, sizes)]).decode()


def run_statement(first: int, run: VerifiedRun) -> tuple[str, dict[str, Any]]:
    """The statement inserting a run whose first row key is `first`, and its
    parameters."""
    statement, places = placed(run.payloads)
    return statement, {
        "first": first,
        "signed": b"".join(run.signed),
        # Never an empty blob: SQLite's substr of one is NULL, where an empty payload
        # must come out as an empty blob (migration 8). No place points at the pad.
        "payloads": b"".join(filter(None, run.payloads)) or b"\0",
        "places": places,
    }
