"""`python -m bench.cipher [--rows N] [--runs K]`: what each SQLCipher setting costs.

CPU seconds (this process) to write N rows of event size in transactions of 1,000
into a new store, checkpoint it, and read every row back from a cold connection,
for a plain store and for each encrypted variant, interleaved run by run so they see
the same machine. synchronous=OFF: fsync is the same for all and would only add noise.
One line per variant: the median and the runs. bench/RESULTS.md, "The encrypted store".
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from sqlcipher3 import dbapi2 as sqlcipher

_KEY = bytes(range(32))
_SIGNED_BYTES, _PAYLOAD_BYTES = 263, 266  # a signed header; a mean bench payload
_PAGE_4K = "PRAGMA cipher_page_size = 4096"
_SHA256 = "PRAGMA cipher_hmac_algorithm = HMAC_SHA256"
VARIANTS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "plain (no key)": (False, ()),
    "HMAC_SHA512, 4 KiB (SQLCipher 4's default)": (
        True,
        (_PAGE_4K, "PRAGMA cipher_hmac_algorithm = HMAC_SHA512"),
    ),
    "HMAC_SHA256, 4 KiB (the store's)": (True, (_PAGE_4K, _SHA256)),
    "HMAC_SHA256, 16 KiB": (True, ("PRAGMA cipher_page_size = 16384", _SHA256)),
    "HMAC_SHA256, 4 KiB, memory security ON": (
        True,
        ("PRAGMA cipher_memory_security = ON", _PAGE_4K, _SHA256),
    ),
}


def _open(path: Path, keyed: bool, settings: tuple[str, ...]) -> sqlcipher.Connection:
    db = sqlcipher.connect(str(path), isolation_level=None)
    db.execute("PRAGMA cipher_memory_security = OFF")  # process-wide: reset every time
    if keyed:
        db.execute(f"PRAGMA key = \"x'{_KEY.hex()}'\"")
    for pragma in settings:
        db.execute(pragma)
    return db


def one_run(directory: Path, rows: int, keyed: bool, settings: tuple[str, ...]) -> float:
    path = directory / "cipher.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    signed, payload = os.urandom(_SIGNED_BYTES), os.urandom(_PAYLOAD_BYTES)
    start = time.process_time()
    db = _open(path, keyed, settings)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("CREATE TABLE event (k INTEGER PRIMARY KEY, signed BLOB, payload BLOB)")
    for first in range(0, rows, 1000):
        db.execute("BEGIN")
        batch = ((k, signed, payload) for k in range(first, min(first + 1000, rows)))
        db.executemany("INSERT INTO event VALUES (?, ?, ?)", batch)
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    db = _open(path, keyed, settings)
    read = sum(1 for _ in db.execute("SELECT * FROM event"))
    db.close()
    if read != rows:
        raise SystemExit(f"read back {read} rows, wrote {rows}")
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cipher", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="federation-bench-cipher-") as directory:
        for _ in range(args.runs):
            for name, (keyed, settings) in VARIANTS.items():
                seconds[name].append(one_run(Path(directory), args.rows, keyed, settings))
    plain = statistics.median(seconds["plain (no key)"])
    for name, runs in seconds.items():
        median = statistics.median(runs)
        print(
            f"{name:44} {median:6.3f} CPU s ({median / plain:4.2f}x plain)  "
            f"runs {' / '.join(f'{r:.3f}' for r in runs)}"
        )


if __name__ == "__main__":
    main()
