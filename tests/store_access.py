"""Opening a node's encrypted store from a test, as an operator with its key file could.

A node's store is SQLCipher, keyed with the store key from its key envelope
(protocol.md §2.3, federation.node.keyfile). Tests that tamper with the store, or that
open it beside a running node, use these to reach the rows as plain sqlite3 did.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from sqlcipher3 import dbapi2 as sqlcipher

from federation.node.keyfile import PASSPHRASE_ENV, open_envelope
from federation.node.node import NodePaths, load_config
from federation.store import cipher


def node_store_key(root: Path, passphrase: bytes | None = None) -> bytes | None:
    """The store key of the node at `root` (the passphrase: given, or from the
    environment as the CLI reads it); None for a store made before encryption."""
    paths = NodePaths(root)
    config = load_config(paths)
    key_file = paths.resolve(config.key.file)
    if passphrase is None and PASSPHRASE_ENV in os.environ:
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    club = bytes.fromhex(config.club.id)
    return open_envelope(key_file.read_bytes(), club, passphrase, str(key_file)).store_key


def connect_node_store(root: Path, passphrase: bytes | None = None) -> sqlcipher.Connection:
    """A DB-API connection to the node's store (commit as with sqlite3)."""
    db = sqlcipher.connect(str(root / "store.sqlite"))
    for pragma in cipher.LIBRARY_SETTINGS:
        db.execute(pragma)
    key = node_store_key(root, passphrase)
    if key is not None:
        db.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        for pragma in cipher.CIPHER_SETTINGS:
            db.execute(pragma)
    return db


def decrypted_store(root: Path, to: Path, passphrase: bytes | None = None) -> Path:
    """A plain SQLite copy of the node's store at `to` (SQLCipher's export: the live
    rows, not freed pages), for tests that look for text in what a node holds."""
    with contextlib.closing(connect_node_store(root, passphrase)) as db:
        db.execute("ATTACH DATABASE ? AS plain KEY ''", (str(to),))
        db.execute("SELECT sqlcipher_export('plain')")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute(f"PRAGMA plain.user_version = {version}")
        db.execute("DETACH DATABASE plain")
    return to


def readable_bytes(root: Path, passphrase: bytes | None = None) -> bytes:
    """What the node's store files hold on disk, followed by what they hold for whoever
    has the key: a leak shows in the second part even though the first is ciphertext."""
    raw = b"".join(p.read_bytes() for p in sorted(root.glob("store.sqlite*")) if p.is_file())
    with tempfile.TemporaryDirectory() as directory:
        plain = decrypted_store(root, Path(directory) / "plain.sqlite", passphrase)
        return raw + plain.read_bytes()
