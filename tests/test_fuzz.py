"""Every decoder of outside bytes raises only our own errors (issue 8, item 9).

Each property feeds a decoder random input and mutations of a valid encoding (bytes
flipped, set, inserted, deleted, spliced or cut off, so the input gets past the first
checks), and asserts that whatever it raises is a FederationError (the subclass the
decoder promises) whose message is one bounded line of printable text. Any other
exception is a bug: fix the decoder where the bytes come in, and keep the input here as
an @example. Examples are derandomized (the same every run); the whole file is sized to
run in seconds.

A longer, coverage-guided run of the same decoders (atheris, not a dependency):

    .venv/bin/pip install atheris
    .venv/bin/python bench/fuzz.py TARGET -max_total_time=600   # TARGET: `bench/fuzz.py list`
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from federation.core import canonical, payloads
from federation.core.canonical import Kind
from federation.core.config import parse_config, render_config
from federation.core.events import VerifiedEvent, verify_event, verify_run
from federation.core.invite import PREFIX, make_invite, read_invite
from federation.core.log import parse_audience
from federation.errors import (
    ConfigError,
    FederationError,
    InvalidEventError,
    RemoteProtocolError,
    UsageError,
)
from federation.node import archive
from federation.store.memory import MemoryStore
from federation.sync import auth, messages
from federation.sync.auth import ReplayGuard
from federation.sync.messages import (
    Batch,
    ClubInfo,
    Done,
    Error,
    FrameReader,
    Frontier,
    LogHead,
    LogInfo,
    Want,
    WantLog,
)
from federation.views import agreement, projection
from federation.views.feed import parse_cursor, parse_kind
from tests.conftest import BASE_TIME_US, Club
from tests.protocol_doc_support import document_blocks, of_type

# The longest message any of our errors may carry: enough to say what, where and what
# to do, short enough that quoting a peer's megabyte cannot flood a terminal or a log.
MAX_MESSAGE_CHARS = 1000

# Nesting past Python's stack: msgspec and tomllib raise RecursionError on it.
DEEP = 5000

T = TypeVar("T")


def fuzz(max_examples: int) -> Callable[[T], T]:
    """Derandomized, no deadline (CI machines are slow), a fixed budget of examples."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextmanager
def only(kind: type[FederationError] = FederationError) -> Iterator[None]:
    """The block may raise `kind` with a one-line bounded message; anything else fails."""
    try:
        yield
    except kind as exc:
        check_message(exc)


def check_message(exc: FederationError) -> None:
    text = str(exc)
    assert text, f"{type(exc).__name__} with an empty message"
    assert text.isprintable(), f"message is not one printable line: {text!r}"
    assert len(text) <= MAX_MESSAGE_CHARS, f"message of {len(text)} chars"


# --- mutations of valid inputs ---------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, valid: list[bytes]) -> bytes:
    """One of `valid`, changed by 1-4 byte-level edits."""
    data = bytearray(draw(st.sampled_from(valid)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xC0, 0xFF, ord("\n")]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "splice":  # a stretch of the input repeated: lengths and counts go wrong
            end = draw(st.integers(at, min(len(data), at + 64)))
            data[at:at] = data[at:end] * draw(st.integers(1, 3))
    return bytes(data)


def as_text(data: bytes) -> str:
    # Text from a file, argv or an HTTP header: on Linux undecodable bytes arrive as
    # lone surrogates (surrogateescape), so the decoders must take those too.
    return data.decode("utf-8", "surrogateescape")


# --- valid inputs ------------------------------------------------------------------------

CLUB = Club.make(b"fuzz club")
OTHER = Club.make(b"fuzz other club")
EVENTS = CLUB.chain(3)
SIGNED = [e.signed for e in EVENTS]
PAYLOADS = [e.payload or b"" for e in EVENTS]
DESCRIPTORS = [
    *CLUB.descriptors.values(),
    canonical.encode_log(
        canonical.LogDescriptor(
            CLUB.id, "joint", canonical.Audience("clubs", tuple(sorted((CLUB.id, OTHER.id))))
        )
    ),
]

MESSAGES: list[messages.Message] = [
    Frontier(b"d" * 32, [LogHead(CLUB.log(), 3, EVENTS[-1].id)]),
    Frontier(b"d" * 32, None),
    Want([WantLog(CLUB.log(), 0), WantLog(CLUB.log("public"), 2, 10, True)]),
    ClubInfo(CLUB.id, CLUB.genesis),
    LogInfo(CLUB.log(), CLUB.descriptors["federation"]),
    Batch(CLUB.log(), [(e.signed, e.payload) for e in EVENTS[:2]] + [(SIGNED[2], None)]),
    Done(more=True),
    Error("busy", "try again later"),
]
ENCODED = [messages.encode(m) for m in MESSAGES]

RECIPIENT = OTHER.id
METHOD, TARGET, BODY = "POST", "/peer/events", b"body"


def token(nonce: bytes = bytes(16)) -> str:
    return auth.make(
        CLUB.key,
        sender=CLUB.id,
        recipient=RECIPIENT,
        method=METHOD,
        target=TARGET,
        body=BODY,
        now_us=BASE_TIME_US,
        nonce=nonce,
    )


TOKEN = token()
TOKEN_RAW = base64.urlsafe_b64decode(TOKEN.partition(" ")[2])

INVITES = [
    make_invite(
        CLUB.key, CLUB.genesis, "Club A", "https://a.example.org:8443", canonical.sha256(b"cert")
    ),
    make_invite(CLUB.key, CLUB.genesis, "Club A", "http://127.0.0.1:8401", b""),
]


def invite_json(text: str) -> bytes:
    body = text[len(PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def invite_of(json_bytes: bytes) -> str:
    return PREFIX + base64.urlsafe_b64encode(json_bytes).decode().rstrip("=")


CONFIGS = [
    render_config("Club A", CLUB.id.hex(), "127.0.0.1:8401", passphrase="none", plain_http=True),
    render_config(
        "Club A",
        CLUB.id.hex(),
        "[::1]:0",
        passphrase="file",
        plain_http=False,
        passphrase_file="pass.txt",
    ),
]


def export_lines(club: Club) -> list[bytes]:
    encode = msgspec.json.encode
    lines = [encode(archive.ClubLine(club.id.hex(), club.genesis.hex()))]
    lines.append(
        encode(archive.LogLine(club.log().hex(), club.descriptors["federation"].hex(), "x", "y"))
    )
    lines += [archive.event_line(e).rstrip(b"\n") for e in club.chain(3)]
    return lines


EXPORT = export_lines(CLUB)

VALID_PAYLOADS = [
    payloads.make_payload(Kind.NOTE, {"text": "hello"}),
    payloads.make_payload(
        Kind.ACTION,
        {"what": "picket", "starts": "2026-12-01T18:00:00+00:00", "participants": 12},
    ),
    payloads.make_payload(Kind.REPORT, {"member": "Mo", "period": "2026-10", "text": "x"}),
    payloads.make_payload(Kind.CAMPAIGN, {"campaign": "rent", "op": "created", "title": "t"}),
    payloads.make_payload(Kind.ROSTER, {"op": "added", "club": OTHER.id.hex(), "name": "B"}),
    payloads.make_payload(Kind.ERASURE, {"seq": 1, "event": "ab" * 32}),
    payloads.make_payload(Kind.PROPOSAL, {"op": "withdrawn", "proposal": "ab" * 32}),
    payloads.make_payload(Kind.KEY, {"action": "rotate", "key": "cd" * 32, "revoked": "ab" * 32}),
]

# --- structured junk: the right shape with the wrong contents ----------------------------

small_ints = st.integers(-(2**63), 2**64 - 1)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["", "x" * 2000, "2026-12-01T18:00+00:00", "2026-13", "\u202e\x1b[2J"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=8,
)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity too: msgspec must refuse them


msgpack_scalars = (
    st.none()
    | st.booleans()
    | small_ints
    | st.floats()
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.sampled_from([b"x" * 32, bytes(32), CLUB.genesis, SIGNED[0], 2**40, 2**40 - 1, -1])
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
FIELD_NAMES = sorted({f.name for m in MESSAGES for f in msgspec.structs.fields(type(m))})
wire_maps = st.builds(
    lambda tag, fields: {"t": tag, **fields},
    st.sampled_from(["frontier", "want", "club", "log", "batch", "done", "error", "x", ""]),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), msgpack_values),
)

# --- wire messages and frames (sync/messages.py) ------------------------------------------


@fuzz(150)
@given(st.binary(max_size=300) | mutated(ENCODED) | wire_maps.map(msgspec.msgpack.encode))
@example(b"\x81\xa1t\xa5error" + b"\xa4code\xa1x\xa7message\xda\x01\x00" + b"\n" * 256)
@example(b"\x82\xa1t\xa4done\xa1x" + b"\x91" * DEEP + b"\xc0")  # RecursionError
def test_decode_message(data: bytes) -> None:
    with only(RemoteProtocolError):
        message = messages.decode(data)
        assert messages.decode(messages.encode(message)) == message


@fuzz(100)
@given(
    st.lists(mutated([messages.frame(m) for m in MESSAGES]) | st.binary(max_size=40), max_size=4),
    st.lists(st.integers(1, 300), min_size=1, max_size=6),
)
@example([messages.FRAME_HEADER.pack(messages.MAX_FRAME_BYTES + 1)], [1])
def test_frame_reader(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frames)
    reader = FrameReader()
    with only(RemoteProtocolError):
        at = 0
        for cut in cuts * (len(stream) // sum(cuts) + 1):
            list(reader.feed(stream[at : at + cut]))
            at += cut
            if at >= len(stream):
                break


# --- events, genesis and log descriptors (core/canonical.py, core/events.py) --------------


@fuzz(100)
@given(st.binary(min_size=263, max_size=263) | st.binary(max_size=300) | mutated(SIGNED))
def test_decode_header(signed: bytes) -> None:
    with only(InvalidEventError):
        canonical.decode_header(signed)


@fuzz(120)
@given(mutated(SIGNED) | st.sampled_from(SIGNED), st.none() | mutated(PAYLOADS))
def test_verify_event(signed: bytes, payload: bytes | None) -> None:
    with only(InvalidEventError):
        verify_event(signed, payload, CLUB.authorized)


@fuzz(80)
@given(
    st.lists(
        st.tuples(mutated(SIGNED) | st.sampled_from(SIGNED), st.none() | mutated(PAYLOADS)),
        max_size=4,
    ),
    st.booleans(),
    st.booleans(),
)
def test_verify_run(run: list[tuple[bytes, bytes | None]], named: bool, every: bool) -> None:
    # Valid events first, so the fuzzed ones land after a verified prefix.
    events = [(e.signed, e.payload) for e in EVENTS[:1]] + run
    with only(InvalidEventError):
        verified, error = verify_run(
            CLUB.log(),
            None,
            events,
            CLUB.authorized,
            club=CLUB.id if named else None,
            every_signature=every,
        )
        assert error is None or isinstance(error, InvalidEventError)
        assert len(verified) <= len(events)


@fuzz(100)
@given(st.binary(max_size=120) | mutated([CLUB.genesis, OTHER.genesis]))
def test_decode_genesis(data: bytes) -> None:
    with only(InvalidEventError):
        canonical.decode_genesis(data)


@fuzz(120)
@given(st.binary(max_size=200) | mutated(DESCRIPTORS))
def test_decode_log(data: bytes) -> None:
    with only(InvalidEventError):
        descriptor = canonical.decode_log(data)
        assert canonical.encode_log(descriptor) == data


@fuzz(80)
@given(st.text(max_size=80) | st.sampled_from(["clubs:", "clubs:zz", "clubs:" + "a" * 64]))
def test_parse_audience(text: str) -> None:
    with only(UsageError):
        parse_audience(text)


# --- request tokens (sync/auth.py) ------------------------------------------------------


@fuzz(120)
@given(
    st.text(max_size=60)
    | st.text(max_size=300).map(lambda t: "Federation " + t)
    | mutated([TOKEN.encode()]).map(as_text)
    | mutated([TOKEN_RAW]).map(lambda raw: "Federation " + base64.urlsafe_b64encode(raw).decode())
)
@example("Federation \udcff")
@example("Federation " + "A" * 5)
def test_request_token(header: str) -> None:
    with only(RemoteProtocolError):
        sender = auth.check(
            header,
            recipient=RECIPIENT,
            method=METHOD,
            target=TARGET,
            body=BODY,
            now_us=BASE_TIME_US,
            authorized=CLUB.authorized,
            replay=ReplayGuard(),
        )
        assert sender in (None, CLUB.id)  # None: read as an anonymous request (§5.2)


# --- invites (core/invite.py) -----------------------------------------------------------

INVITE_KEYS = ["genesis", "name", "url", "fingerprint", "signature"]
invite_objects = st.dictionaries(st.sampled_from(INVITE_KEYS) | st.text(max_size=8), json_values)


@fuzz(120)
@given(
    st.text(max_size=100)
    | st.text(max_size=200).map(lambda t: PREFIX + t)
    | mutated([i.encode() for i in INVITES]).map(as_text)
    | mutated([invite_json(i) for i in INVITES]).map(invite_of)
    | invite_objects.map(lambda o: invite_of(json_bytes(o)))
)
@example("fedinvite1:eyJcdTAwMTYiOg00000000")  # msgspec quotes the key "\x16" verbatim
@example(invite_of(b'{"x":' + b"[" * DEEP + b"]" * DEEP + b"}"))  # RecursionError
def test_read_invite(text: str) -> None:
    with only(UsageError):
        read_invite(text)


# --- configs (core/config.py) -------------------------------------------------------------


def toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string (\uXXXX and all)


toml_scalars = (
    st.integers(-(2**80), 2**80).map(str)
    | st.integers(4000, 6000).map(lambda n: "9" * n)  # over Python's int-from-text limit
    | st.sampled_from(["inf", "-nan", "1e999", "0x" + "f" * 40, "true", "false", "1979-05-27"])
    | st.sampled_from(["1979-05-27T07:32:00Z", "07:32:00", '"""a\nb"""', "'\x1b]0;t\x07'"])
    | st.text(max_size=30).map(toml_string)
    | st.sampled_from(["127.0.0.1:8401", "0.0.0.0:1", "[::1]:99999", "x" * 3000, "a" * 64]).map(
        toml_string
    )
    | st.integers(1, 5000).map(lambda n: "[" * n + "]" * n)  # nesting past the stack
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda v: "[" + ", ".join(v) + "]")
        | st.lists(
            st.tuples(st.sampled_from(["a", "b"]), inner), max_size=2, unique_by=lambda p: p[0]
        ).map(lambda kv: "{" + ", ".join(f"{k} = {v}" for k, v in kv) + "}")
    ),
    max_leaves=6,
)
CONFIG_KEYS = ["name", "id", "listen", "public_url", "plain_http", "store", "file", "passphrase"]
toml_keys = st.sampled_from([*CONFIG_KEYS, "passphrase_file"]) | st.text(max_size=10).map(
    toml_string
)
toml_tables = st.lists(
    st.tuples(
        st.sampled_from(["club", "node", "key", "extra", '"a\\nb"']),
        st.dictionaries(toml_keys, toml_values, max_size=4),
    ),
    max_size=4,
    unique_by=lambda t: t[0],
).map(
    lambda tables: "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())
        for name, fields in tables
    )
)


@fuzz(150)
@given(
    st.text(max_size=200)
    | mutated([c.encode() for c in CONFIGS]).map(lambda b: b.decode("utf-8", "replace"))
    | toml_tables
)
@example("a = " + "9" * 5000)  # ValueError from int(): over the 4300-digit limit
@example("a = " + "[" * 5000)  # RecursionError in tomllib
@example('"a\\nb" = 1')  # msgspec quotes the unknown key, newline and all
@example('[key]\npassphrase = "' + "z" * 3000 + '"')  # msgspec quotes the bad enum value
@example('[club]\nname = "x"\nid = "' + "a" * 64 + '"\n[node]\nlisten = "' + "q" * 3000 + '"')
def test_parse_config(text: str) -> None:
    with only(ConfigError):
        parse_config(text)


# --- export lines (node/archive.py) --------------------------------------------------------


def import_lines(lines: list[bytes]) -> archive.ImportReport:
    async def main() -> archive.ImportReport:
        store = MemoryStore()
        try:
            return await archive.import_lines(store, {}, lines, now_us=BASE_TIME_US)
        finally:
            await store.aclose()

    return asyncio.run(main())


@fuzz(80)
@given(
    st.lists(st.sampled_from(range(len(EXPORT))), max_size=3),
    st.lists(mutated(EXPORT) | json_values.map(json_bytes) | st.binary(max_size=60), max_size=2),
    st.integers(0, len(EXPORT)),
)
@example(
    [], [b'{"type":"event","log":"00","seq":1,"id":"00","signed":"00","payload":"\xc3\xa9"}'], 0
)
@example([], [b'{"type":"' + b"x" * 3000 + b'"}'], 0)
@example([], [b'{"type":"club","x":' + b"[" * DEEP + b"]" * DEEP + b"}"], 0)
def test_import_lines(drop: list[int], junk: list[bytes], at: int) -> None:
    lines = [line for i, line in enumerate(EXPORT) if i not in drop]
    lines[at:at] = junk
    with only(InvalidEventError):
        import_lines(lines)


# --- payloads (core/payloads.py, views/projection.py) ------------------------------------


kinds = st.sampled_from([int(k) for k in Kind]) | st.integers(-(2**70), 2**70)
payload_bytes = (
    st.binary(max_size=80)
    | mutated(VALID_PAYLOADS)
    | json_values.map(json_bytes)
    | st.dictionaries(
        st.sampled_from(["text", "what", "starts", "ends", "op", "club", "campaign", "title"]),
        json_values,
    ).map(json_bytes)
)


@fuzz(120)
@given(kinds, st.none() | payload_bytes)
@example(1, b'{"text":"a","x":' + b"[" * DEEP + b"]" * DEEP + b"}")  # RecursionError
def test_read_payload(kind: int, payload: bytes | None) -> None:
    with only():
        if payload is not None:
            fields = payloads.read_payload(kind, payload)
            assert fields is None or isinstance(fields, dict)
        line = payloads.summary(kind, payload)
        assert "\n" not in line
        assert len(line) <= 100


@fuzz(50)
@given(
    st.sampled_from([Kind.ACTION, Kind.CAMPAIGN]), st.lists(st.none() | payload_bytes, max_size=4)
)
@example(Kind.ACTION, [b'{"x":' + b"[" * DEEP + b"]" * DEEP + b"}"])
@example(Kind.CAMPAIGN, [b'{"x":' + b"[" * DEEP + b"]" * DEEP + b"}"])
def test_projection(kind: Kind, bodies: list[bytes | None]) -> None:
    # The views read other clubs' payloads: they may not decode, never raise.
    header = EVENTS[0].header
    events = [
        VerifiedEvent(
            canonical.sha256(b"%d" % i),
            msgspec.structs.replace(header, seq=i + 1, kind=int(kind)),
            SIGNED[0],
            body,
        )
        for i, body in enumerate(bodies)
    ]
    with only():
        items = projection.fold({}, events)
        for (name, _), item in items.items():
            assert projection.decode_item(name, projection.encode_item(item)) == item


# The agreement record of protocol.md §3.8 (its vector), a real record to mutate.
RECORD = of_type(document_blocks(), "agreement")[0].get("record").encode()


@given(mutated([RECORD]) | st.binary(max_size=300) | json_values.map(json_bytes))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_check_agreement_record(data: bytes) -> None:
    """A changed record is refused with one clear line, or (a change the format
    ignores, such as spaces) still agreed: never anything else."""
    with only(InvalidEventError):
        assert agreement.check_record(data).state == "agreed"


@given(
    st.text(max_size=90)
    | st.sampled_from(["1767225600000000." + "ab" * 32, "-1." + "0" * 64, "NOTE", "key", "ß"])
)
def test_feed_query_values(text: str) -> None:
    """The feed's `before` and `kind` values: a valid one or None, never an exception."""
    cursor = parse_cursor(text)
    assert cursor is None or (isinstance(cursor[0], int) and len(cursor[1]) == 32)
    kind = parse_kind(text)
    assert kind is None or kind in set(Kind)


def test_valid_inputs_are_valid() -> None:
    """The seeds of the mutations decode: the fuzzer starts from real encodings."""
    assert [messages.decode(e) for e in ENCODED] == MESSAGES
    assert verify_event(SIGNED[0], PAYLOADS[0], CLUB.authorized).id == EVENTS[0].id
    assert [canonical.decode_log(d) for d in DESCRIPTORS]
    assert [read_invite(i).club for i in INVITES] == [CLUB.id, CLUB.id]
    assert [parse_config(c).club.id for c in CONFIGS] == [CLUB.id.hex()] * 2
    assert import_lines(EXPORT).added == 3
    assert all(payloads.read_payload(int(k), p) for k, p in zip(Kind, VALID_PAYLOADS, strict=True))
    assert agreement.check_record(RECORD).state == "agreed"
    sender = auth.check(
        TOKEN,
        recipient=RECIPIENT,
        method=METHOD,
        target=TARGET,
        body=BODY,
        now_us=BASE_TIME_US,
        authorized=CLUB.authorized,
        replay=ReplayGuard(),
    )
    assert sender == CLUB.id
