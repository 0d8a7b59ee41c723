"""The client side of the peer API: one peer, authenticated requests, pinned TLS.
`PeerClient` is the node's PeerTransport (federation/node/transport.py) over HTTP.

Every request is signed for the peer (federation.sync.auth); https connections are
accepted only if the peer's certificate has the fingerprint from its invite, so
no certificate authority is trusted. Network failures become PeerUnavailableError;
a peer that answers wrongly raises RemoteProtocolError.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from urllib.parse import urlencode

import aiohttp

from federation.core.canonical import REQUEST_NONCE_BYTES
from federation.core.crypto import SigningKey
from federation.errors import PeerUnavailableError, RemoteProtocolError
from federation.node.system import Clock, random_bytes
from federation.store.base import PeerRecord
from federation.sync import auth, messages
from federation.sync.messages import (
    CONTENT_TYPE,
    EVENTS_PATH,
    FRONTIER_PATH,
    MAX_MESSAGE_BYTES,
    FrameReader,
    Message,
    Want,
)

# Connecting and each read wait at most this long: a peer that stalls longer is
# treated as unreachable and retried with backoff.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
READ_CHUNK_BYTES = 256 * 1024
Tap = Callable[[str, bytes], None]


class PeerClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        peer: PeerRecord,
        *,
        me: bytes,
        key: SigningKey,
        clock: Clock,
        tap: Tap | None = None,
    ) -> None:
        """`tap`, if given, sees every response body byte received, as (url, chunk),
        with an empty chunk when a response starts (tests check what left a peer)."""
        self.http = http
        self.tap = tap
        self.peer = peer
        self.me = me
        self.key = key
        self.clock = clock
        self.base = peer.url.rstrip("/")
        self.ssl: aiohttp.Fingerprint | bool = (
            aiohttp.Fingerprint(peer.fingerprint) if self.base.startswith("https:") else False
        )

    def _headers(self, method: str, target: str, body: bytes) -> dict[str, str]:
        token = auth.make(
            self.key,
            sender=self.me,
            recipient=self.peer.club,
            method=method,
            target=target,
            body=body,
            now_us=self.clock(),
            nonce=random_bytes(REQUEST_NONCE_BYTES),
        )
        return {"Authorization": token, "Content-Type": CONTENT_TYPE}

    def _unavailable(self, exc: BaseException) -> PeerUnavailableError:
        if isinstance(exc, aiohttp.ServerFingerprintMismatch):
            why = "its TLS certificate does not match the invite's fingerprint (refusing it)"
        elif isinstance(exc, TimeoutError):
            why = "timed out"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            why = f"cannot connect ({exc.os_error.strerror or exc.os_error}); is its node running?"
        else:
            why = str(exc) or type(exc).__name__
        return PeerUnavailableError(
            f"peer {self.peer.name} ({self.base}) unreachable: {why}", peer=self.peer.name
        )

    async def frontier(
        self, known: bytes | None, wait_s: float, after: bytes | None = None
    ) -> Message:
        fields = {"known": (known or b"").hex(), "wait": f"{wait_s:g}"}
        if after is not None:
            fields["after"] = after.hex()  # the next page (protocol.md §6.1)
        query = urlencode(fields)
        target = f"{FRONTIER_PATH}?{query}"
        timeout = aiohttp.ClientTimeout(
            total=wait_s + CONNECT_TIMEOUT_S + READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S
        )
        try:
            async with self.http.get(
                self.base + target,
                headers=self._headers("GET", target, b""),
                ssl=self.ssl,
                timeout=timeout,
                auto_decompress=False,
            ) as response:
                _identity(response)
                body = await _read_bounded(response, MAX_MESSAGE_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        if self.tap is not None:
            self.tap(self.base + target, b"")
            self.tap(self.base + target, body)
        return _answer(response.status, body)

    async def events(self, want: Want) -> AsyncGenerator[Message, None]:
        body = messages.encode(want)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S
        )
        try:
            async with self.http.post(
                self.base + EVENTS_PATH,
                data=body,
                headers=self._headers("POST", EVENTS_PATH, body),
                ssl=self.ssl,
                timeout=timeout,
                auto_decompress=False,
            ) as response:
                _identity(response)
                if response.status != 200:
                    _answer(response.status, await _read_bounded(response, MAX_MESSAGE_BYTES))
                reader = FrameReader()
                if self.tap is not None:
                    self.tap(self.base + EVENTS_PATH, b"")
                async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
                    if self.tap is not None:
                        self.tap(self.base + EVENTS_PATH, chunk)
                    for message in reader.feed(chunk):
                        yield message
                if not reader.at_boundary():
                    raise RemoteProtocolError("event stream ended inside a frame", code="truncated")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unavailable(exc) from None


def _identity(response: aiohttp.ClientResponse) -> None:
    """Refuse a compressed answer before reading a byte of it: our limits count the
    bytes that arrive, and a few KiB of gzip inflate to gigabytes (protocol.md §6.4).
    Requests are made with auto_decompress off too, so nothing could inflate an
    answer behind our back."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RemoteProtocolError(
            "peer sent a compressed answer; the protocol has none (protocol.md §6.2)",
            code="malformed",
        )


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise RemoteProtocolError("peer's answer is over the size limit", code="too_large")
    data = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise RemoteProtocolError("peer's answer is over the size limit", code="too_large")
    return bytes(data)


def _answer(status: int, body: bytes) -> Message:
    """Decode an answer; an error status carries a named Error message."""
    if status == 200:
        return messages.decode(body)
    try:
        message = messages.decode(body)
    except RemoteProtocolError:
        raise RemoteProtocolError(f"peer answered HTTP {status}", code="http_error") from None
    if isinstance(message, messages.Error):
        raise RemoteProtocolError(f"peer refused: {message.message}", code=message.code)
    raise RemoteProtocolError(f"peer answered HTTP {status}", code="http_error")
