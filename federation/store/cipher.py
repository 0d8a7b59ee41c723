"""The store's encryption at rest: SQLCipher connections, keyed with the store key.

A node's store is a SQLCipher database (SQLite with every page of the file, and of its
WAL, encrypted with AES-256 and authenticated with HMAC-SHA256). The store key is 32
random bytes from the node's key envelope (protocol.md §2.3), given to SQLCipher as a
raw key: the passphrase was already stretched by scrypt once, so opening the store
costs no PBKDF2. store/ never reads key files; the key comes in as an argument.

Without a key the same library opens a plain SQLite file (tests, benchmarks, and a
store made before encryption, which `export_copy` turns into an encrypted one, as it
does a store of the earlier encrypted format).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sqlcipher3 import dbapi2 as sqlite3

from federation.errors import StoreError

STORE_KEY_BYTES = 32
# What every plain SQLite file starts with; an encrypted one starts with a random salt.
PLAINTEXT_HEADER = b"SQLite format 3\x00"
# The format, set explicitly so a later library default can never change it under an
# existing store (bench/RESULTS.md, "The encrypted store", has the costs measured):
# - 32 KiB pages: each page costs an IV, a MAC, two WAL writes and a checkpoint copy,
#   so 8x fewer pages than SQLite's 4 KiB took a sixth off the receiver's CPU in bulk
#   ingest and a fifth off the sender's (bench/RESULTS.md, "32 KiB pages");
# - HMAC-SHA256 rather than SQLCipher 4's default SHA512: as strong a MAC here, and
#   cheaper on CPUs with SHA extensions (these have them); 48 reserved bytes per page
#   (IV and MAC) instead of 80;
# - the KDF only derives the MAC key from the raw key (2 rounds): kdf_iter is unused.
PAGE_BYTES = 32 * 1024


def format_settings(page_bytes: int) -> tuple[str, ...]:
    return (
        f"PRAGMA cipher_page_size = {page_bytes}",
        "PRAGMA cipher_hmac_algorithm = HMAC_SHA256",
        "PRAGMA cipher_kdf_algorithm = PBKDF2_HMAC_SHA256",
        # 0: the header is encrypted too, so the file does not even say it is SQLite.
        "PRAGMA cipher_plaintext_header_size = 0",
    )


CIPHER_SETTINGS = format_settings(PAGE_BYTES)
# The first encrypted stores (issue 11's first version) had 4 KiB pages; a node
# converts one to the format above at its next start (node/at_rest.py).
EARLIER_SETTINGS = format_settings(4096)
# Settings for the library, not the file (they are process-wide in SQLCipher):
# - memory security OFF: ON wipes and mlocks every allocation SQLite frees, which
#   costs throughput on every statement; it guards against reading the process's
#   memory, and whoever can do that on a running node can read the store key anyway.
# - log level NONE: SQLCipher writes a wrong key's HMAC failure to stderr, and an
#   operator must see one clear line (ours), not the library's.
# And one for the connection: trusted_schema OFF, so a schema we did not make (a
# store restored from a crafted backup) cannot have its views or triggers call a
# function with side effects (the store also refuses any view or trigger at open).
LIBRARY_SETTINGS = (
    "PRAGMA cipher_memory_security = OFF",
    "PRAGMA cipher_log_level = NONE",
    "PRAGMA trusted_schema = OFF",
)

_SIDE_FILES = ("-wal", "-shm", "-journal")


def is_plaintext(path: Path) -> bool:
    """True for a plain SQLite file (made before encryption, or with no key)."""
    try:
        with path.open("rb") as f:
            return f.read(len(PLAINTEXT_HEADER)) == PLAINTEXT_HEADER
    except FileNotFoundError:
        return False


def make_private(path: Path) -> None:
    """The store and its side files are the owner's alone (0600), also when they were
    made by an older version with the default 0644."""
    for file in (path, *(path.with_name(path.name + s) for s in _SIDE_FILES)):
        try:
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)
        except FileNotFoundError:
            pass


def create_private(path: Path) -> None:
    """An empty store file, 0600 from the first instant (SQLite gives its WAL and SHM
    the store file's mode); an empty file is a new database to SQLite."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


# Reading the schema is the first page read: a wrong key fails here, not later.
CHECK_KEY = "SELECT count(*) FROM sqlite_master"


def connect(
    path: Path,
    key: bytes | None,
    *,
    check: bool = True,
    settings: tuple[str, ...] = CIPHER_SETTINGS,
) -> sqlite3.Connection:
    """A connection to the store, keyed, and (`check`) tried with a first read. The
    store's aiosqlite connector passes check=False and runs CHECK_KEY itself: a
    connector that raises leaves aiosqlite's thread racing the event loop's end.
    `settings`: the format's (EARLIER_SETTINGS opens a store to convert it)."""
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        for pragma in LIBRARY_SETTINGS:
            db.execute(pragma)
        if key is not None:
            _key(db, key, settings)
        if check:
            db.execute(CHECK_KEY).fetchall()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise unreadable(path, key, exc) from None
    except BaseException:
        db.close()
        raise
    return db


def _key(db: sqlite3.Connection, key: bytes, settings: tuple[str, ...]) -> None:
    if len(key) != STORE_KEY_BYTES:
        raise StoreError(f"a store key is {STORE_KEY_BYTES} bytes, not {len(key)}")
    # x'…': a raw 256-bit key, used as is (no PBKDF2 at open; protocol.md §2.3).
    db.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    for pragma in settings:
        db.execute(pragma)


def unreadable(path: Path, key: bytes | None, exc: Exception) -> StoreError:
    """The one clear error for a store that does not open (wrong key, plain, junk)."""
    if key is not None and is_plaintext(path):
        return StoreError(
            f"store {path} is not encrypted; open it through the node (`federation status`) "
            "to encrypt it in place",
            path=str(path),
        )
    if key is not None:
        return StoreError(
            f"store {path} is not a readable SQLite database with the store key of the key "
            "file: the store is damaged or the key file belongs to another copy of it; "
            "restore it from a backup (the store and its key file together)",
            path=str(path),
        )
    if not is_plaintext(path) and path.stat().st_size > 0:
        return StoreError(
            f"store {path} is not a readable SQLite database: it is encrypted (open it "
            "through its node, whose key file holds its key) or damaged (restore it from a backup)",
            path=str(path),
        )
    return StoreError(
        f"store {path} is not a readable SQLite database ({exc}); restore it from a backup",
        path=str(path),
    )


def in_earlier_format(path: Path, key: bytes) -> bool:
    """True for a store that opens with `key` in the earlier format only (EARLIER_SETTINGS).
    A store that opens in neither is left to the store's open to report."""
    for settings, earlier in ((CIPHER_SETTINGS, False), (EARLIER_SETTINGS, True)):
        try:
            connect(path, key, settings=settings).close()
        except StoreError:
            continue
        return earlier
    return False


def export_copy(
    source: Path,
    target: Path,
    key: bytes,
    step: Callable[[str], None] = lambda _: None,
    *,
    earlier: bool = False,
) -> None:
    """Write an encrypted copy (this format) of the store `source` to `target` (a new
    0600 file, fsynced), through SQLCipher's export. `source` is a plain store, or with
    `earlier` a store encrypted with the same key in the earlier format. It is left as
    it was; `step` names each stage done (a test's crash point)."""
    target.unlink(missing_ok=True)  # a crashed earlier attempt's: never the only copy
    for side in _SIDE_FILES:
        target.with_name(target.name + side).unlink(missing_ok=True)
    create_private(target)
    db = connect(source, key, settings=EARLIER_SETTINGS) if earlier else connect(source, None)
    try:
        # Out of WAL mode first: every commit moves into the file we copy from, and the
        # old WAL and SHM are gone before the rename, so no stale WAL can ever be
        # replayed onto the new file. It needs the store to ourselves.
        try:
            mode = db.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
        except sqlite3.OperationalError:
            mode = "busy"
        if str(mode).lower() != "delete":
            raise StoreError(
                f"store {source} is in use by another process; stop the running node "
                "(`federation run`) and try again",
                path=str(source),
            )
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        db.execute("ATTACH DATABASE ? AS encrypted KEY ?", (str(target), f"x'{key.hex()}'"))
        for pragma in CIPHER_SETTINGS:
            db.execute(pragma.replace("PRAGMA ", "PRAGMA encrypted.", 1))
        db.execute("SELECT sqlcipher_export('encrypted')")
        db.execute(f"PRAGMA encrypted.user_version = {version}")
        db.execute("DETACH DATABASE encrypted")
    finally:
        db.close()
    step("exported")
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    step("synced")


def remove_side_files(path: Path) -> None:
    """Remove what a replaced store may have left (none after `export_copy`)."""
    for side in ("-wal", "-shm"):
        path.with_name(path.name + side).unlink(missing_ok=True)
