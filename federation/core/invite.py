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
from collections.abc import Sequence
from urllib.parse import urlsplit

import msgspec

from federation.core import canonical
from federation.core.config import is_loopback
from federation.core.crypto import SigningKey, verify_signature
from federation.core.evidence import carried_history
from federation.core.keys import KeyHistory
from federation.errors import InvalidEventError, UsageError

PREFIX = "fedinvite1:"


class InviteKeyEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One of the club's key events (protocol.md §2.2), carried in its invite."""

    signed: str  # the signed header, hex
    payload: str  # its payload, hex


class Invite(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    genesis: str
    name: str
    url: str
    fingerprint: str  # hex sha256 of the TLS certificate; "" for plain HTTP on loopback
    signature: str
    # The club's key events, in order, when it has any: they show which key signs for
    # it now, and so signs this invite (protocol.md §5.1, §2.2).
    keys: tuple[InviteKeyEvent, ...] = ()

    @property
    def club(self) -> bytes:
        return canonical.club_id(bytes.fromhex(self.genesis))

    def history(self) -> KeyHistory:
        """The club's epochs as the invite shows them; raises InvalidEventError."""
        genesis = canonical.decode_genesis(bytes.fromhex(self.genesis))
        carried = [(bytes.fromhex(k.signed), bytes.fromhex(k.payload)) for k in self.keys]
        try:
            return carried_history(genesis, self.club, carried)
        except InvalidEventError as exc:
            raise InvalidEventError(f"the invite's key events do not verify: {exc}") from None


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


def make_invite(
    key: SigningKey,
    genesis: bytes,
    name: str,
    url: str,
    fingerprint: bytes,
    keys: Sequence[tuple[bytes, bytes]] = (),
) -> str:
    """`keys`: the club's key events (signed header, payload), in order: `key` is then
    the last one's new key (protocol.md §5.1)."""
    check_url(url, fingerprint)
    club = canonical.club_id(genesis)
    signature = key.sign(canonical.encode_invite(club, name, url, fingerprint))
    carried = tuple(InviteKeyEvent(s.hex(), p.hex()) for s, p in keys)
    invite = Invite(genesis.hex(), name, url, fingerprint.hex(), signature.hex(), carried)
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
        signer = invite.history().current.key
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
    if not verify_signature(signer, signature, signed):
        raise UsageError("invite signature does not verify: it was altered; ask for it again")
    check_url(invite.url, fingerprint)
    return invite
