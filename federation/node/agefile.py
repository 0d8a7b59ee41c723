"""Files sealed in the age format (age-encryption.org/v1, through `pyrage`): encrypted
exports (protocol.md §8) and backups (node/backup.py).

age seals to a passphrase (scrypt) or to members' X25519 keys (`age1…` recipients),
and authenticates every 64 KiB chunk and the end of the stream: a truncated or altered
file fails to open, whole, before anything in it is used. Files are written binary
(not armored). This module is the only importer of pyrage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyrage

from federation.errors import KeyFileError, UsageError
from federation.node.keyfile import PASSPHRASE_ENV

MAGIC = b"age-encryption.org/v1\n"


def is_age(head: bytes) -> bool:
    """Whether a file that begins with `head` is in the age format."""
    return head.startswith(MAGIC)


def parse_recipients(texts: Sequence[str]) -> list[object]:
    """Members' age public keys (`age1…`), as given with --to."""
    found: list[object] = []
    for text in texts:
        try:
            found.append(pyrage.x25519.Recipient.from_str(text.strip()))
        except pyrage.RecipientError:
            raise UsageError(
                f"--to {text!r} is not an age public key (age1…, from `age-keygen -y`); "
                "check it with the member who holds it"
            ) from None
    return found


def read_identities(path: str) -> list[object]:
    """Age secret keys (AGE-SECRET-KEY-1…, one a line; # comments) from an identity file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read identity file {path}: {exc}") from None
    found: list[object] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise UsageError(
                f"{path} holds a line that is not an age secret key (AGE-SECRET-KEY-1…); "
                "give the identity file made by age-keygen"
            ) from None
    if not found:
        raise UsageError(f"{path} holds no age secret key (AGE-SECRET-KEY-1…)")
    return found


def seal(
    data: bytes, *, passphrase: bytes | None = None, recipients: Sequence[object] = ()
) -> bytes:
    """`data` in the age format: to `recipients` if any, else to `passphrase`."""
    if recipients:
        return bytes(pyrage.encrypt(data, list(recipients)))
    if passphrase is None:
        raise UsageError("nothing to encrypt to: give a passphrase or --to AGE_RECIPIENT")
    return bytes(pyrage.passphrase.encrypt(data, _text(passphrase)))


def open_sealed(
    data: bytes,
    what: str,
    *,
    passphrase: bytes | None = None,
    identities: Sequence[object] = (),
    source: str | None = None,
) -> bytes:
    """The plaintext of an age file; every failure is one line naming `what`.
    `source`: where the passphrase came from (FEDERATION_PASSPHRASE, a passphrase
    file), None if it was typed."""
    try:
        if identities:
            return bytes(pyrage.decrypt(data, list(identities)))
        if passphrase is None:
            raise UsageError(f"{what} is encrypted: give its passphrase, or --identity FILE")
        return bytes(pyrage.passphrase.decrypt(data, _text(passphrase)))
    except pyrage.DecryptError as exc:
        # The library's text may run over lines (a hint to upgrade): its first line only.
        reason = (str(exc).strip().splitlines() or ["unknown error"])[0].strip()
        if reason == "Decryption failed" and passphrase is not None:
            # The passphrase tried may be this node's own, read from its environment or
            # passphrase file without asking: "try again" would read the same one. A
            # file another node made is sealed with that node's passphrase.
            other = (
                "a file made on another node is sealed with that node's passphrase: give "
                "that one, or have it sealed --to your age key and give --identity FILE"
            )
            if source is None:
                raise KeyFileError(
                    f"wrong passphrase for {what}; type it again ({other})"
                ) from None
            raise KeyFileError(
                f"wrong passphrase for {what}: the one in {source} does not open it, so it "
                f"was sealed with another ({other}; set {PASSPHRASE_ENV} to give it)"
            ) from None
        if reason == "No matching keys found":
            raise KeyFileError(
                f"{what} was not encrypted to "
                + ("these age keys" if identities else "a passphrase")
                + (
                    "; give the passphrase instead of --identity"
                    if identities
                    else "; give --identity FILE with the age key it was made for"
                )
            ) from None
        raise KeyFileError(
            f"{what} is truncated or was altered ({reason}): it cannot be opened; use another copy"
        ) from None


def _text(passphrase: bytes) -> str:
    try:
        return passphrase.decode()
    except UnicodeDecodeError:
        raise UsageError("the passphrase is not valid UTF-8 text") from None
