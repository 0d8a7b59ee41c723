"""Key files at rest (protocol.md §2.3): the key envelope.

Version 2 (what a node writes) seals, with a passphrase, the club's ed25519 secret
AND the random store key that encrypts the store (SQLCipher, `store.sqlite`): so
reading anything a node holds needs the passphrase. Version 1 (the signing secret
alone) is still read: the node upgrades it at its next start (`node.migrate`), and
the recovery key file keeps that form.

scrypt stretches the passphrase once; ChaCha20-Poly1305 seals the secrets with the
club id as associated data, so a key file cannot be passed off as another club's.
The store key is used as a raw key, so opening the store costs no second stretch.
The unencrypted opt-out exists for unattended servers and is warned about at init:
the store is still SQLCipher, but its key sits in the file beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from federation.core import crypto
from federation.errors import KeyFileError
from federation.node.system import random_bytes

PASSPHRASE_ENV = "FEDERATION_PASSPHRASE"
MIN_PASSPHRASE_CHARS = 8
# The store key: 32 random bytes, SQLCipher's raw key (protocol.md §2.3).
STORE_KEY_BYTES = 32
ENVELOPE_VERSION = 2


class KeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Literal[1, 2]
    club: str
    kdf: Literal["scrypt", "none"]
    n: int = 0
    r: int = 0
    p: int = 0
    salt: str = ""
    nonce: str = ""
    ciphertext: str = ""
    secret: str = ""
    store_key: str = ""


@dataclass(frozen=True, repr=False)
class Envelope:
    """What a key file holds. `store_key` is None in a version 1 file (none yet)."""

    key: crypto.SigningKey
    store_key: bytes | None
    version: int
    encrypted: bool


def new_store_key() -> bytes:
    return random_bytes(STORE_KEY_BYTES)


def _seal(version: int, secrets: bytes, club: bytes, passphrase: bytes | None) -> bytes:
    if passphrase is None:
        secret, store_key = secrets[:32], secrets[32:]
        kf = KeyFile(
            version,  # type: ignore[arg-type]
            club.hex(),
            "none",
            secret=secret.hex(),
            store_key=store_key.hex(),
        )
    else:
        # A fresh salt and nonce at every write (§2.3), even for an unchanged passphrase.
        salt = random_bytes(16)
        derived = crypto.derive_key(passphrase, salt)
        nonce = random_bytes(crypto.AEAD_NONCE_BYTES)
        sealed = crypto.seal(derived, nonce, secrets, club)
        kf = KeyFile(
            version,  # type: ignore[arg-type]
            club.hex(),
            "scrypt",
            n=crypto.SCRYPT_N,
            r=crypto.SCRYPT_R,
            p=crypto.SCRYPT_P,
            salt=salt.hex(),
            nonce=nonce.hex(),
            ciphertext=sealed.hex(),
        )
    return msgspec.json.format(msgspec.json.encode(kf)) + b"\n"


def seal_envelope(
    key: crypto.SigningKey, store_key: bytes, club: bytes, passphrase: bytes | None
) -> bytes:
    """A version 2 key file's bytes: the signing secret and the store key, sealed
    together (§2.3). passphrase None: the warned, unencrypted opt-out."""
    if len(store_key) != STORE_KEY_BYTES:
        raise ValueError("a store key is 32 bytes")
    return _seal(ENVELOPE_VERSION, key.secret_bytes() + store_key, club, passphrase)


def seal_key(key: crypto.SigningKey, club: bytes, passphrase: bytes | None) -> bytes:
    """A version 1 key file's bytes (the signing secret alone: the recovery key file)."""
    return _seal(1, key.secret_bytes(), club, passphrase)


def needs_passphrase(data: bytes, path: str) -> bool:
    return _parse(data, path).kdf != "none"


def _parse(data: bytes, path: str) -> KeyFile:
    try:
        return msgspec.json.decode(data, type=KeyFile)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise KeyFileError(
            f"key file {path} is corrupt ({exc}); restore it from your backup", path=path
        ) from None


def open_envelope(
    data: bytes, club: bytes, passphrase: bytes | None, path: str, *, source: str | None = None
) -> Envelope:
    """Open a key file of either version; a wrong passphrase is one clear KeyFileError.
    `source`: the passphrase file it was read from, named if it is wrong."""
    kf = _parse(data, path)
    if kf.club != club.hex():
        # The store opens with its own key file only, so either file may be the odd one.
        raise KeyFileError(
            f"key file {path} belongs to club {kf.club[:12]}, not club {club.hex()[:12]} "
            "named in config.toml: restore the club.key and config.toml that came with "
            "this store (or check key.file)",
            path=path,
        )
    # Version 1 holds the secret alone; version 2 the secret then the store key.
    size = crypto.SECRET_KEY_BYTES + (STORE_KEY_BYTES if kf.version == 2 else 0)
    try:
        if kf.kdf == "none":
            secrets = bytes.fromhex(kf.secret) + bytes.fromhex(kf.store_key)
        else:
            if passphrase is None:
                raise KeyFileError(
                    f"key file {path} is encrypted: give the passphrase (prompt, "
                    f"{PASSPHRASE_ENV}, or key.passphrase_file)",
                    path=path,
                )
            if not (2 <= kf.n <= 2**20 and 1 <= kf.r <= 32 and 1 <= kf.p <= 16):
                raise KeyFileError(
                    f"key file {path} has unusable scrypt parameters; restore it from your backup",
                    path=path,
                )
            derived = crypto.derive_key(passphrase, bytes.fromhex(kf.salt), n=kf.n, r=kf.r, p=kf.p)
            opened = crypto.open_sealed(
                derived, bytes.fromhex(kf.nonce), bytes.fromhex(kf.ciphertext), club
            )
            if opened is None:
                raise KeyFileError(
                    wrong_passphrase(path, passphrase, altered=True, source=source), path=path
                )
            secrets = opened
        if len(secrets) != size:
            raise ValueError(f"version {kf.version} holds {size} secret bytes, not {len(secrets)}")
        return Envelope(
            crypto.SigningKey(secrets[:32]),
            secrets[32:] if kf.version == 2 else None,
            kf.version,
            kf.kdf != "none",
        )
    except ValueError as exc:
        raise KeyFileError(
            f"key file {path} is corrupt ({exc}); restore it from your backup", path=path
        ) from None


def wrong_passphrase(
    what: str, passphrase: bytes, *, altered: bool = False, source: str | None = None
) -> str:
    """The one line for a passphrase that does not open `what`. Typing it again helps
    only if it was typed: one from FEDERATION_PASSPHRASE, or from the passphrase file
    (`source`), comes back the same."""
    head = f"wrong passphrase for {what}" + (" (or the file was altered)" if altered else "")
    if source is not None:
        return (
            f"{head}: it is the one in {source} (key.passphrase_file); write the right "
            "passphrase there"
            + ("; if it is right, restore the key file from your backup" if altered else "")
        )
    if os.environ.get(PASSPHRASE_ENV, "").encode() == passphrase:
        return (
            f"{head}: it is the one in {PASSPHRASE_ENV}; set that to the right passphrase, "
            "or unset it to be asked"
            + ("; if the passphrase is right, restore it from your backup" if altered else "")
        )
    return f"{head}; try again"


def open_key(data: bytes, club: bytes, passphrase: bytes | None, path: str) -> crypto.SigningKey:
    """The signing key of a key file of either version."""
    return open_envelope(data, club, passphrase, path).key


def write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only; refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_private(path: Path, data: bytes) -> None:
    """Replace a file crash-safely: a crash at any instant leaves the old bytes or the
    new, never neither (write a 0600 temp file, fsync, rename over, fsync the directory)."""
    temp = path.with_name(path.name + ".tmp")
    temp.unlink(missing_ok=True)  # left by a crash before its rename: never the only copy
    write_private(temp, data)
    os.replace(temp, path)
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {path} is missing; restore it from your backup or check key.file "
            "in config.toml",
            path=str(path),
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}", path=str(path)) from None


def read_passphrase_file(path: Path) -> bytes:
    """The passphrase in `path` (without its trailing line break, §2.3), refused if
    anyone but its owner may read or change it: a passphrase others can read protects
    nothing, and one they can change lets them choose the key's next passphrase."""
    try:
        mode = path.stat().st_mode
        if mode & 0o044:
            raise KeyFileError(
                f"passphrase file {path} is readable by others: chmod 600 {path}", path=str(path)
            )
        if mode & 0o022:
            raise KeyFileError(
                f"passphrase file {path} is writable by others: chmod 600 {path}", path=str(path)
            )
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise KeyFileError(
            f"cannot read passphrase file {path}: {exc.strerror}; check key.passphrase_file",
            path=str(path),
        ) from None
