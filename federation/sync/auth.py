"""Request authentication between nodes (protocol.md §5.2), pure.

A request carries `Authorization: Federation <token>`: the canonical request bytes
and an ed25519 signature by the sender club's key. The recipient checks, in order:
form, that it is the recipient, the clock window, the sender's key, the body's
digest, the signature, and that the nonce is new. Each failure has its own code.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict

from federation.core import canonical
from federation.core.canonical import RequestToken
from federation.core.crypto import SigningKey, verify_signature
from federation.core.events import KeyCheck
from federation.errors import InvalidEventError, RemoteProtocolError

SCHEME = "Federation"
# Clocks of club laptops drift; two minutes either way bounds both the drift we
# tolerate and how long a nonce must be remembered to refuse a replay.
MAX_CLOCK_SKEW_US = 120 * 1_000_000
# A node remembers this many nonces; past it the oldest go, and a request older than
# the oldest remembered one is refused as possibly replayed (never wrongly accepted).
MAX_REMEMBERED_NONCES = 100_000


def make(
    key: SigningKey,
    *,
    sender: bytes,
    recipient: bytes,
    method: str,
    target: str,
    body: bytes,
    now_us: int,
    nonce: bytes,
) -> str:
    """The Authorization header value for one request. The caller draws `nonce`
    (REQUEST_NONCE_BYTES random bytes), as it reads the clock: this stays pure."""
    token = RequestToken(
        sender,
        recipient,
        now_us,
        nonce,
        canonical.sha256(body),
        key.public,
        method,
        target,
    )
    signed = canonical.encode_request(token)
    raw = signed + key.sign(signed)
    return f"{SCHEME} {base64.urlsafe_b64encode(raw).decode()}"


class ReplayGuard:
    """Remembers recent nonces, bounded in count, with time passed in by the caller."""

    def __init__(self, capacity: int = MAX_REMEMBERED_NONCES) -> None:
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._capacity = capacity
        self._floor_us = -(2**63)  # requests at or before this time may have been forgotten

    def check_and_remember(self, nonce: bytes, time_us: int, now_us: int) -> None:
        while self._seen:
            oldest_time = next(iter(self._seen.values()))
            if oldest_time >= now_us - MAX_CLOCK_SKEW_US and len(self._seen) < self._capacity:
                break
            self._seen.popitem(last=False)
            self._floor_us = max(self._floor_us, oldest_time)
        if nonce in self._seen or time_us <= self._floor_us:
            raise RemoteProtocolError("replayed request", code="replayed", http_status=401)
        self._seen[nonce] = time_us


def check(
    header: str | None,
    *,
    recipient: bytes,
    method: str,
    target: str,
    body: bytes,
    now_us: int,
    authorized: KeyCheck,
    replay: ReplayGuard,
) -> bytes | None:
    """The authenticated sender club, or None for a request with no Authorization."""
    if header is None:
        return None

    def refuse(why: str, code: str) -> RemoteProtocolError:
        return RemoteProtocolError(why, code=code, http_status=401)

    scheme, _, value = header.partition(" ")
    if scheme != SCHEME:
        raise refuse(f"unknown authorization scheme {scheme[:20]!r}", "unauthenticated")
    try:
        raw = base64.urlsafe_b64decode(value.encode())
        token, signed, signature = canonical.decode_request(raw)
    except (binascii.Error, ValueError, InvalidEventError) as exc:
        raise refuse(f"malformed request token: {exc}", "unauthenticated") from None
    if token.recipient != recipient:
        raise refuse("request token is for another club", "wrong_recipient")
    if token.method != method or token.target != target:
        raise refuse("request token is for another method or path", "bad_request_token")
    if abs(token.time_us - now_us) > MAX_CLOCK_SKEW_US:
        raise refuse("request token expired or from the future (check clocks)", "expired")
    if not authorized(token.sender, token.key):
        raise refuse("request signed by a club or key this node does not know", "unknown_club")
    if canonical.sha256(body) != token.body_hash:
        raise refuse("request body does not match its token", "bad_request_token")
    if not verify_signature(token.key, signature, signed):
        raise refuse("bad request signature", "bad_request_token")
    replay.check_and_remember(token.nonce, token.time_us, now_us)
    return token.sender
