"""`python -m bench.rows [--events N] [--runs K]`: what SQLite's rows cost the store.

CPU seconds (this process) per million events to insert N events of bench size into
a new encrypted store in runs of 2,000 and transactions of 20,000 (as a bulk ingest
does), then checkpoint it, at 4 KiB and 32 KiB pages, two ways:

- `rows`: one row an event, through the store's own INSERT_RUN (what the store does);
- `runs`: one row a run, its headers and payloads as two blobs: the same bytes, pages,
  encryption and I/O without SQLite's per-row work. The gap is what storing a run's
  events as one row could save (bench/RESULTS.md, "Ingest into the encrypted store").

synchronous=OFF: fsync is the same for both and would only add noise. Interleaved run
by run so both see the same machine; one line each: the median and the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from federation.core.canonical import SIGNED_HEADER_BYTES
from federation.store import cipher
from federation.store.schema import placed

_KEY = bytes(range(32))
_PAYLOAD_BYTES = 266  # a mean bench payload
_RUN, _TRANSACTION = 2_000, 20_000
_CREATE = "CREATE TABLE event (k INTEGER PRIMARY KEY, signed BLOB NOT NULL, payload BLOB)"


def one_run(directory: Path, events: int, page: int, one_row_a_run: bool) -> float:
    path = directory / "rows.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    signed = b"".join(os.urandom(SIGNED_HEADER_BYTES) for _ in range(_RUN))
    payloads = b"".join(os.urandom(_PAYLOAD_BYTES) for _ in range(_RUN))
    statement, places = placed([payloads[:_PAYLOAD_BYTES]] * _RUN)
    start = time.process_time()
    db = cipher.connect(path, _KEY, settings=cipher.format_settings(page), check=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    db.execute(f"PRAGMA wal_autocheckpoint = {32 * 1024 * 1024 // page}")
    db.execute("PRAGMA cache_size = -32768")
    db.execute(_CREATE)
    for first in range(0, events, _RUN):
        if first % _TRANSACTION == 0:
            db.execute("BEGIN")
        if one_row_a_run:
            db.execute("INSERT INTO event VALUES (?, ?, ?)", (first, signed, payloads))
        else:
            parameters = {"first": first, "signed": signed, "payloads": payloads}
            db.execute(statement, parameters | {"places": places})
        if (first + _RUN) % _TRANSACTION == 0 or first + _RUN >= events:
            db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return (time.process_time() - start) * 1_000_000 / events


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rows", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    variants = [(page, runs) for page in (4096, cipher.PAGE_BYTES) for runs in (False, True)]
    seconds: dict[tuple[int, bool], list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="federation-bench-rows-") as directory:
        for _ in range(args.runs):
            for page, runs in variants:
                seconds[page, runs].append(one_run(Path(directory), args.events, page, runs))
    for (page, runs), values in seconds.items():
        name = f"{page // 1024} KiB pages, one row {'a run' if runs else 'an event'}"
        print(
            f"{name:34} {statistics.median(values):5.2f} CPU s per million events  "
            f"runs {' / '.join(f'{v:.2f}' for v in values)}"
        )


if __name__ == "__main__":
    main()
