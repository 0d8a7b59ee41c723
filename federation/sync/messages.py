"""Sync wire messages: one tagged union of frozen msgspec Structs (protocol.md §6.7).

Messages are MessagePack maps tagged by "t". Event bytes travel as MessagePack
`bin` exactly as signed and stored (DESIGN principle 1): nothing is re-encoded.
An event stream is a sequence of frames, each a 4-byte big-endian length and one
message. Every limit is checked before a byte is decoded (DESIGN principle 13).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Annotated

import msgspec

from federation.errors import RemoteProtocolError

# --- limits (protocol.md §6.4) ---------------------------------------------------------

# A frame carries one batch: BATCH_MAX_BYTES of events plus one maximal event and
# framing. Anything larger is not from an honest node.
BATCH_MAX_EVENTS = 2000
BATCH_MAX_BYTES = 2 * 1024 * 1024
MAX_FRAME_BYTES = 4 * 1024 * 1024
# A frontier lists one entry (~80 bytes) per log a peer may see; 100,000 logs is far
# beyond a federation of small clubs and keeps one frontier under 10 MiB.
MAX_FRONTIER_LOGS = 100_000
# A node that holds more logs than one frontier carries answers in pages (§6.1); a
# client follows at most this many pages in one frontier: a million logs, ten times
# what one page carries, bounds the memory a peer's frontier can take in one round.
MAX_FRONTIER_PAGES = 10
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
# One response streams at most this many events, then says Done(more=True): the client
# commits, and asks again, so a single response never holds a session for long.
MAX_EVENTS_PER_RESPONSE = 250_000
FRAME_HEADER = struct.Struct(">I")

# --- routes (protocol.md §6.1): shared by the client and the server ----------------------

INFO_PATH = "/fed/v1/info"
FRONTIER_PATH = "/fed/v1/frontier"
EVENTS_PATH = "/fed/v1/events"
CONTENT_TYPE = "application/vnd.federation+msgpack"


# A seq on the wire: the store holds 2^40 events a log; anything beyond is refused at
# decoding, so no peer-chosen number can overflow a sum or an encoder downstream.
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**40 - 1)]


class LogHead(msgspec.Struct, frozen=True, array_like=True, gc=False):
    log: bytes
    seq: Seq
    head: bytes


# omit_defaults: `more` goes on the wire only when true (protocol.md §6.7), so a
# one-page frontier is the bytes it always was (§6.6's sizes, older readers).
class Frontier(msgspec.Struct, frozen=True, omit_defaults=True, tag="frontier", tag_field="t"):
    """What the server holds that the requester may receive. `logs` is None when the
    frontier's digest equals the `known` digest the client sent: nothing changed.
    `more`: this page ends before the requester's view does; ask for the next page
    with `after` = the last log id listed (protocol.md §6.1). `digest` is always the
    digest of the whole view."""

    digest: bytes
    logs: list[LogHead] | None
    more: bool = False


class WantLog(msgspec.Struct, frozen=True, array_like=True):
    """Send this log's events after seq `after`; `limit` 0 means all of them.
    `descriptor` asks for the log's descriptor and its club's genesis first."""

    log: bytes
    after: Seq
    limit: Seq = 0
    descriptor: bool = False


class Want(msgspec.Struct, frozen=True, tag="want", tag_field="t"):
    logs: list[WantLog]


class ClubInfo(msgspec.Struct, frozen=True, tag="club", tag_field="t"):
    id: bytes
    genesis: bytes


class LogInfo(msgspec.Struct, frozen=True, tag="log", tag_field="t"):
    id: bytes
    descriptor: bytes


class Batch(msgspec.Struct, frozen=True, tag="batch", tag_field="t"):
    """A contiguous run of one log's events: (signed header, payload or None if erased)."""

    log: bytes
    events: list[tuple[bytes, bytes | None]]


class Done(msgspec.Struct, frozen=True, tag="done", tag_field="t"):
    """The round's end. `more`: the server stopped at its limit; ask again."""

    more: bool = False


class Error(msgspec.Struct, frozen=True, tag="error", tag_field="t"):
    code: str
    message: str


Message = Frontier | Want | ClubInfo | LogInfo | Batch | Done | Error

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes | memoryview, *, limit: int = MAX_MESSAGE_BYTES) -> Message:
    if len(data) > limit:
        raise RemoteProtocolError(
            f"message of {len(data)} bytes is over the limit of {limit}",
            code="too_large",
            http_status=413,
        )
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise RemoteProtocolError(f"malformed message: {exc}", code="malformed") from None
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"undecodable message: {exc}", code="malformed") from None
    except RecursionError:  # msgspec: arrays or maps nested deeper than the stack
        raise RemoteProtocolError(
            "undecodable message: nested too deeply", code="malformed"
        ) from None


def frame(message: Message) -> bytes:
    body = _encoder.encode(message)
    return FRAME_HEADER.pack(len(body)) + body


class FrameReader:
    """Splits a byte stream into messages (sans-IO: feed bytes in, take messages out)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Message]:
        self._buffer += data
        while len(self._buffer) >= FRAME_HEADER.size:
            (size,) = FRAME_HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME_BYTES:
                raise RemoteProtocolError(
                    f"frame of {size} bytes is over the limit of {MAX_FRAME_BYTES}",
                    code="too_large",
                )
            end = FRAME_HEADER.size + size
            if len(self._buffer) < end:
                return
            # Decoded in place: msgspec copies out what it keeps, so the frame is not
            # copied twice first (a sync moves hundreds of MB through here).
            with memoryview(self._buffer) as view:
                message = decode(view[FRAME_HEADER.size : end], limit=MAX_FRAME_BYTES)
            del self._buffer[:end]
            yield message

    def at_boundary(self) -> bool:
        return not self._buffer
