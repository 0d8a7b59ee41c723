"""Sync wire messages (protocol.md §6): round trips, limits, decode errors and framing."""

from __future__ import annotations

import itertools
from typing import get_args

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.errors import RemoteProtocolError
from federation.sync import messages
from federation.sync.messages import (
    FRAME_HEADER,
    MAX_FRAME_BYTES,
    Batch,
    ClubInfo,
    Done,
    Error,
    FrameReader,
    Frontier,
    LogHead,
    LogInfo,
    Message,
    Want,
    WantLog,
    decode,
    encode,
    frame,
)

hash32 = st.binary(min_size=32, max_size=32)
seqs = st.integers(0, 2**40 - 1)  # the wire bound (messages.Seq)
small_bytes = st.binary(max_size=64)

log_heads = st.builds(LogHead, log=hash32, seq=seqs, head=hash32)
want_logs = st.builds(WantLog, log=hash32, after=seqs, limit=seqs, descriptor=st.booleans())
events = st.tuples(small_bytes, st.none() | small_bytes)

# Every member of the union, so a new message type without a strategy is noticed below.
STRATEGIES: dict[type[msgspec.Struct], st.SearchStrategy[Message]] = {
    Frontier: st.builds(Frontier, digest=hash32, logs=st.none() | st.lists(log_heads, max_size=5)),
    Want: st.builds(Want, logs=st.lists(want_logs, max_size=5)),
    ClubInfo: st.builds(ClubInfo, id=hash32, genesis=small_bytes),
    LogInfo: st.builds(LogInfo, id=hash32, descriptor=small_bytes),
    Batch: st.builds(Batch, log=hash32, events=st.lists(events, max_size=5)),
    Done: st.builds(Done, more=st.booleans()),
    Error: st.builds(Error, code=st.text(max_size=20), message=st.text(max_size=50)),
}
any_message = st.one_of(*STRATEGIES.values())


def test_every_message_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(get_args(Message))


@given(any_message)
def test_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


@given(any_message)
def test_frame_is_length_and_message(message: Message) -> None:
    framed = frame(message)
    (size,) = FRAME_HEADER.unpack_from(framed)
    assert size == len(framed) - FRAME_HEADER.size
    assert framed[FRAME_HEADER.size :] == encode(message)


def test_messages_are_tagged_maps() -> None:
    assert msgspec.msgpack.decode(encode(Done(more=True))) == {"t": "done", "more": True}


# --- decode limits and errors ------------------------------------------------------------


def test_over_the_limit_is_too_large_before_decoding() -> None:
    # Garbage of limit + 1 bytes: a decoder would call it malformed; the limit comes first.
    with pytest.raises(RemoteProtocolError) as info:
        decode(b"\xc1" * 11, limit=10)
    assert info.value.code == "too_large"
    assert info.value.http_status == 413


def test_at_the_limit_decodes() -> None:
    data = encode(Done())
    assert decode(data, limit=len(data)) == Done()


def test_default_limit_is_max_message_bytes() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(b"\x00" * (messages.MAX_MESSAGE_BYTES + 1))
    assert info.value.code == "too_large"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"t": "want", "logs": [[b"l" * 32, "zero"]]}, "$.logs[0][1]"),
        ({"t": "frontier", "digest": b"d" * 32, "logs": [[b"l", 1, 2]]}, "$.logs[0][2]"),
        ({"t": "batch", "log": b"l" * 32, "events": [[b"h", 3]]}, "$.events[0][1]"),
        ({"t": "done", "more": "yes"}, "$.more"),
    ],
)
def test_malformed_names_msgspec_path(value: object, path: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(msgspec.msgpack.encode(value))
    assert info.value.code == "malformed"
    assert path in info.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in MessagePack
        msgspec.msgpack.encode({"t": "nonsense"}),
        msgspec.msgpack.encode({"more": True}),  # no tag
        msgspec.msgpack.encode([1, 2, 3]),
        encode(Done())[:-1],  # truncated
    ],
)
def test_undecodable_is_malformed(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    assert info.value.code == "malformed"


# --- framing -------------------------------------------------------------------------------


@given(
    st.lists(any_message, max_size=6),
    st.lists(st.integers(0, 2**16), max_size=20),
)
def test_frame_reader_splits_any_chunking(stream: list[Message], cuts: list[int]) -> None:
    data = b"".join(frame(m) for m in stream)
    positions = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    reader = FrameReader()
    got: list[Message] = []
    for start, end in itertools.pairwise(positions):
        got.extend(reader.feed(data[start:end]))
    assert got == stream
    assert reader.at_boundary()


@given(st.lists(any_message, min_size=1, max_size=4))
def test_frame_reader_byte_at_a_time(stream: list[Message]) -> None:
    frames = [frame(m) for m in stream]
    ends = {sum(len(f) for f in frames[: i + 1]) for i in range(len(frames))}
    data = b"".join(frames)
    reader = FrameReader()
    got: list[Message] = []
    for i in range(len(data)):
        got.extend(reader.feed(data[i : i + 1]))
        assert reader.at_boundary() == (i + 1 in ends)
    assert got == stream


def test_at_boundary_mid_frame() -> None:
    reader = FrameReader()
    data = frame(Done(more=True))
    assert reader.at_boundary()
    assert list(reader.feed(data[:2])) == []
    assert not reader.at_boundary()  # a partial header
    assert list(reader.feed(data[2:-1])) == []
    assert not reader.at_boundary()  # a partial body
    assert list(reader.feed(data[-1:])) == [Done(more=True)]
    assert reader.at_boundary()


def test_oversize_frame_refused_from_its_header() -> None:
    reader = FrameReader()
    header = FRAME_HEADER.pack(MAX_FRAME_BYTES + 1)
    with pytest.raises(RemoteProtocolError) as info:
        list(reader.feed(header))  # refused before any body byte arrives
    assert info.value.code == "too_large"


def test_max_frame_size_is_accepted_from_its_header() -> None:
    reader = FrameReader()
    assert list(reader.feed(FRAME_HEADER.pack(MAX_FRAME_BYTES))) == []
    assert not reader.at_boundary()


def test_malformed_frame_body_is_malformed() -> None:
    reader = FrameReader()
    with pytest.raises(RemoteProtocolError) as info:
        list(reader.feed(FRAME_HEADER.pack(1) + b"\xc1"))
    assert info.value.code == "malformed"


def test_empty_feed_yields_nothing() -> None:
    reader = FrameReader()
    assert list(reader.feed(b"")) == []
    assert reader.at_boundary()
