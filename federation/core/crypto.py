"""Every use of the `cryptography` package, in one place (HOUSE_STYLE: one module imports it).

ed25519 for signatures, scrypt + ChaCha20-Poly1305 for key files at rest, and
self-signed X.509 certificates for the TLS that nodes pin by fingerprint.
Pure functions: no files, no clock (the caller passes the time).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.x509.oid import NameOID

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SECRET_KEY_BYTES = 32
AEAD_NONCE_BYTES = 12


class SigningKey:
    """An ed25519 private key. Holds the key object so signing does not re-parse it."""

    __slots__ = ("_key", "public")

    def __init__(self, secret: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(secret)
        self.public: bytes = self._key.public_key().public_bytes_raw()

    def secret_bytes(self) -> bytes:
        return self._key.private_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


# Public keys of small order (and their non-canonical encodings), as libsodium lists
# them: with such a key a signature can verify for any message, so anyone could sign
# for a club whose genesis named one. They are refused wherever a key is accepted.
WEAK_PUBLIC_KEYS = frozenset(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "0100000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    )
)


def is_weak_public_key(public: bytes) -> bool:
    return public in WEAK_PUBLIC_KEYS


@functools.lru_cache(maxsize=4096)
def _public_key(public: bytes) -> Ed25519PublicKey:
    # Parsing a public key costs about as much as a hash; clubs are few, so cache them.
    return Ed25519PublicKey.from_public_bytes(public)


def verify_signature(public: bytes, signature: bytes, message: bytes) -> bool:
    """True iff `signature` is a valid ed25519 signature of `message` by `public`.

    OpenSSL rejects non-canonical encodings (S >= L), so a valid signature's bytes
    cannot be altered into another valid signature of the same message.
    """
    if len(public) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        _public_key(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# Key files at rest (protocol.md §2.3). scrypt at N=2^15 costs ~0.1 s and 32 MiB: slow
# enough to make guessing a passphrase on a seized laptop expensive, fast enough for a CLI.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1


def derive_key(
    passphrase: bytes, salt: bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def seal(key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """Encrypt and authenticate. `nonce`: AEAD_NONCE_BYTES fresh random bytes, never
    reused with one key (the shell draws them: federation.node.system.random_bytes)."""
    if len(nonce) != AEAD_NONCE_BYTES:
        raise ValueError("a ChaCha20-Poly1305 nonce is 12 bytes")
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes | None:
    """Decrypt; None if the key is wrong or anything was altered."""
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, associated)
    except InvalidTag:
        return None


# TLS between nodes (protocol.md §5.3): a self-signed certificate, pinned by the sha256
# of its DER encoding, so no certificate authority is trusted or needed.


def make_tls_certificate(common_name: str, now: dt.datetime, secret: bytes) -> tuple[bytes, bytes]:
    """A self-signed ed25519 certificate valid for 20 years. Returns (cert PEM, key PEM).
    `secret`: SECRET_KEY_BYTES of fresh randomness, for the key and the serial number."""
    key = Ed25519PrivateKey.from_private_bytes(secret)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(b"serial" + secret).digest()[:19], "big") | 1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365 * 20))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName(common_name)]),
            critical=False,
        )
        .sign(key, None)
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def certificate_fingerprint(cert: bytes) -> bytes:
    """sha256 over the DER encoding; accepts PEM or DER."""
    if cert.startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(cert).digest()


__all__ = [
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "SigningKey",
    "certificate_fingerprint",
    "derive_key",
    "make_tls_certificate",
    "open_sealed",
    "seal",
    "verify_signature",
]
