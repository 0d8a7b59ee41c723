"""Key files at rest (protocol.md §2.3): the club's ed25519 secret, sealed with a passphrase.

scrypt stretches the passphrase; ChaCha20-Poly1305 seals the secret with the club
id as associated data, so a key file cannot be passed off as another club's. The
unencrypted opt-out exists for unattended servers and is warned about at init.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

from federation.core import crypto
from federation.errors import KeyFileError
from federation.node.system import random_bytes

PASSPHRASE_ENV = "FEDERATION_PASSPHRASE"
MIN_PASSPHRASE_CHARS = 8


class KeyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Literal[1]
    club: str
    kdf: Literal["scrypt", "none"]
    n: int = 0
    r: int = 0
    p: int = 0
    salt: str = ""
    nonce: str = ""
    ciphertext: str = ""
    secret: str = ""


def seal_key(key: crypto.SigningKey, club: bytes, passphrase: bytes | None) -> bytes:
    """The key file's bytes. passphrase None: the warned, unencrypted opt-out."""
    if passphrase is None:
        kf = KeyFile(1, club.hex(), "none", secret=key.secret_bytes().hex())
    else:
        salt = random_bytes(16)
        derived = crypto.derive_key(passphrase, salt)
        nonce = random_bytes(crypto.AEAD_NONCE_BYTES)
        sealed = crypto.seal(derived, nonce, key.secret_bytes(), club)
        kf = KeyFile(
            1,
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


def needs_passphrase(data: bytes, path: str) -> bool:
    return _parse(data, path).kdf != "none"


def _parse(data: bytes, path: str) -> KeyFile:
    try:
        return msgspec.json.decode(data, type=KeyFile)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise KeyFileError(
            f"key file {path} is corrupt ({exc}); restore it from your backup", path=path
        ) from None


def open_key(data: bytes, club: bytes, passphrase: bytes | None, path: str) -> crypto.SigningKey:
    kf = _parse(data, path)
    if kf.club != club.hex():
        raise KeyFileError(
            f"key file {path} belongs to club {kf.club[:12]}, not this node's club "
            f"{club.hex()[:12]}; check key.file in config.toml",
            path=path,
        )
    try:
        if kf.kdf == "none":
            secret = bytes.fromhex(kf.secret)
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
                    f"wrong passphrase for {path} (or the file was altered); try again",
                    path=path,
                )
            secret = opened
        if len(secret) != crypto.SECRET_KEY_BYTES:
            raise ValueError("secret has the wrong length")
        return crypto.SigningKey(secret)
    except ValueError as exc:
        raise KeyFileError(
            f"key file {path} is corrupt ({exc}); restore it from your backup", path=path
        ) from None


def write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only; refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


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
