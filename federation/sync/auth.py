"""Request authentication between nodes (protocol.md §5.2), pure.

A request carries `Authorization: Federation <token>`: the canonical request bytes
and an ed25519 signature by the sender club's key. The recipient checks, in order:
the form, then the signature, the sender's key, the recipient, the request and the
body's digest all together: a token failing any of them makes an anonymous reader,
as no token does (no oracle for strangers); then the clock window and that the
nonce is new, refused with their own codes.
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

    def __init__(self, capacity: int = MAX_REMEMBERED_NONCES, *, start_us: int = -(2**63)) -> None:
        """`start_us`: when this memory began (the node's start). A token made before
        it may have been seen by the node's previous run, whose memory is gone: it is
        refused as possibly replayed, so a restart opens no replay window (§5.2)."""
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._capacity = capacity
        self._floor_us = start_us  # requests at or before this time may have been forgotten

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
    """The authenticated sender club, or None: an anonymous reader (protocol.md §5.2).

    A token that does not prove a known club's request is answered exactly as no
    token is: the requester is an anonymous reader of public logs. There is no
    refusal to tell apart, and the same work is done for every token that parses
    (the signature is checked whether or not the sender is known), so neither the
    answer nor its timing says which club runs here or which clubs we know; and a
    club that added us, whom we have not added, receives our public logs. Only a
    sender that proved who it is may be refused (`expired`, `replayed`): it learns
    nothing it did not know."""
    token = signed(header, recipient=recipient, method=method, target=target, authorized=authorized)
    return accept(token, body=body, now_us=now_us, replay=replay)


def accept(
    token: RequestToken | None, *, body: bytes, now_us: int, replay: ReplayGuard
) -> bytes | None:
    """The rest of `check` for a token `signed` returned: the body's digest (None, an
    anonymous reader, if it differs), then the clock window and the nonce, refused
    with their own codes. A node that chose its body limit from `signed` before
    reading the body finishes here, without checking the signature twice."""
    if token is None or canonical.sha256(body) != token.body_hash:
        return None
    if abs(token.time_us - now_us) > MAX_CLOCK_SKEW_US:
        raise RemoteProtocolError(
            "request token expired or from the future (check clocks)",
            code="expired",
            http_status=401,
        )
    replay.check_and_remember(token.nonce, token.time_us, now_us)
    return token.sender


def signed(
    header: str | None,
    *,
    recipient: bytes,
    method: str,
    target: str,
    authorized: KeyCheck,
) -> RequestToken | None:
    """Steps 1 and 2 of §5.2 but the body's digest: the token, if a known club's key
    signed it for this node, method and target; otherwise None, after the same work.
    A node chooses how much body to read from it (protocol.md §6.1), so a stranger
    cannot make it read more than an anonymous reader's want; `accept` finishes.
    Every check runs in full whatever the others found (no early return): the
    signature check, the one that costs, is made for known and unknown alike."""
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    try:
        if scheme != SCHEME:
            raise ValueError(scheme)
        token, signed, signature = canonical.decode_request(
            base64.urlsafe_b64decode(value.encode())
        )
    except (binascii.Error, ValueError, InvalidEventError):
        return None
    genuine = verify_signature(token.key, signature, signed)
    known = authorized(token.sender, token.key)
    for_us = token.recipient == recipient
    same_request = token.method == method and token.target == target
    return token if genuine and known and for_us and same_request else None
