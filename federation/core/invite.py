"""Invites (protocol.md §5.1): how a club tells another where and who it is.

An invite is exchanged in person or over a trusted channel. It carries the club's
genesis (so the club id and its key can be checked: id = sha256(genesis)), its name,
its address and its TLS certificate fingerprint, signed by the club's key so no one
can keep the id and swap the address or certificate.

Text form: `fedinvite1:` + base64url (no padding) of a JSON object.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

import msgspec

from federation.core import canonical
from federation.core.config import is_loopback
from federation.core.crypto import SigningKey, verify_signature
from federation.errors import InvalidEventError, UsageError

PREFIX = "fedinvite1:"


class Invite(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    genesis: str
    name: str
    url: str
    fingerprint: str  # hex sha256 of the TLS certificate; "" for plain HTTP on loopback
    signature: str

    @property
    def club(self) -> bytes:
        return canonical.club_id(bytes.fromhex(self.genesis))


def check_url(url: str, fingerprint: bytes) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not 0-65535)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("https", "http")
        or not parts.hostname
        or parts.path not in ("", "/")
    ):
        raise UsageError(f"invite address {url!r} must look like https://host:port")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UsageError("plain http is allowed only on loopback; the invite must use https")
    if parts.scheme == "https" and len(fingerprint) != 32:
        raise UsageError("an https invite needs the TLS certificate's sha256 fingerprint")


def make_invite(key: SigningKey, genesis: bytes, name: str, url: str, fingerprint: bytes) -> str:
    check_url(url, fingerprint)
    club = canonical.club_id(genesis)
    signature = key.sign(canonical.encode_invite(club, name, url, fingerprint))
    invite = Invite(genesis.hex(), name, url, fingerprint.hex(), signature.hex())
    return PREFIX + base64.urlsafe_b64encode(msgspec.json.encode(invite)).decode().rstrip("=")


def read_invite(text: str) -> Invite:
    """Decode and check an invite; UsageError says what is wrong with it."""
    text = text.strip()
    if not text.startswith(PREFIX):
        raise UsageError(f"not an invite: it should start with {PREFIX!r}")
    body = text[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        invite = msgspec.json.decode(raw, type=Invite)
        genesis = canonical.decode_genesis(bytes.fromhex(invite.genesis))
        fingerprint = bytes.fromhex(invite.fingerprint)
        signature = bytes.fromhex(invite.signature)
        signed = canonical.encode_invite(invite.club, invite.name, invite.url, fingerprint)
    except (
        binascii.Error,
        ValueError,
        RecursionError,
        msgspec.DecodeError,
        InvalidEventError,
    ) as exc:
        raise UsageError(f"invite is damaged ({exc}); ask the club for it again") from None
    if not verify_signature(genesis.key, signature, signed):
        raise UsageError("invite signature does not verify: it was altered; ask for it again")
    check_url(invite.url, fingerprint)
    return invite
