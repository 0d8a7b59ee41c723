"""Hostile peers, part B (DESIGN principles 13 and 14; protocol.md §4, §5.2, §6).

Every refusal here carries a named error (a RemoteProtocolError code), leaves the honest
node's store as it was, and the honest node goes on serving and syncing afterwards.

Hostile *clients* send crafted requests to an honest node's peer API: replayed, expired
or misdirected tokens, requests for logs they may not have, bad bodies. Part A, a hostile
server, is in test_hostile_server.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import msgspec
import pytest

from federation.core import canonical
from federation.core.canonical import REQUEST_NONCE_BYTES, Kind
from federation.core.crypto import SigningKey
from federation.errors import RemoteProtocolError
from federation.node.system import random_bytes
from federation.sync import auth, messages
from federation.sync.messages import (
    MAX_MESSAGE_BYTES,
    Done,
    Error,
    Frontier,
    Message,
    Want,
    WantLog,
)
from federation.web.client import PeerClient
from federation.web.peer_api import EVENTS_PATH, FRONTIER_PATH, INFO_PATH
from tests.conftest import Club
from tests.harness import Federation, Member
from tests.sync.hostile_support import (
    ROUND_S,
    T,
    bounded,
    forks,
    held,
    sync,
)

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[Federation]:
    """a federates with b and with c; a holds c's federation log, b is not in c's roster."""
    async with Federation.open(tmp_path, ["a", "b", "c"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        await fed.federate("a", "c")
        a, c = fed["a"], fed["c"]
        await a.post(Kind.NOTE, {"text": "a's private plan"}, "private")
        await a.post(Kind.NOTE, {"text": "a's federation note"}, "federation")
        await a.post(Kind.NOTE, {"text": "a's public note"}, "public")
        await c.post(Kind.NOTE, {"text": "c's federation note"}, "federation")
        await sync(a, c.club)
        yield fed


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Reply(msgspec.Struct):
    status: int
    message: Message | None
    body: bytes


async def call(
    http: aiohttp.ClientSession,
    to: Member,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    authorization: str | None = None,
) -> Reply:
    """One request as a hostile client crafts it: the exact target, any Authorization."""
    sent = {} if authorization is None else {"Authorization": authorization}
    async with http.request(
        method,
        to.url + target,
        data=body or None,
        headers=sent,
        timeout=aiohttp.ClientTimeout(total=ROUND_S),
    ) as response:
        data = await response.read()
    try:
        message: Message | None = messages.decode(data)
    except RemoteProtocolError:
        message = None
    return Reply(response.status, message, data)


def token(
    sender: Member,
    to: Member,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    now_us: int | None = None,
    recipient: bytes | None = None,
    key: SigningKey | None = None,
    club: bytes | None = None,
) -> str:
    rt = sender.service.rt
    return auth.make(
        key or rt.key,
        sender=club or sender.club,
        recipient=recipient or to.club,
        method=method,
        target=target,
        body=body,
        now_us=rt.clock() if now_us is None else now_us,
        nonce=random_bytes(REQUEST_NONCE_BYTES),
    )


def refused(reply: Reply, status: int, code: str) -> Error:
    assert reply.status == status, reply
    assert isinstance(reply.message, Error), reply
    assert reply.message.code == code, reply.message
    return reply.message


async def as_anonymous(
    http: aiohttp.ClientSession,
    a: Member,
    reply: Reply,
    method: str,
    target: str,
    body: bytes = b"",
) -> None:
    """A token that does not authenticate is answered exactly as no token (protocol.md
    §5.2): the same status and the same bytes, so a stranger learns nothing from it."""
    plain = await call(http, a, method, target, body=body)
    assert (reply.status, reply.body) == (plain.status, plain.body)
    assert reply.status in (200, 404), reply


def frontier_target() -> str:
    return f"{FRONTIER_PATH}?known=&wait=0"


def log_of(member: Member, audience: str) -> bytes:
    [log] = [
        r.id
        for r in member.service.rt.logs.values()
        if r.club == member.club and r.name == audience
    ]
    return log


async def guarded(fed: Federation, attack: Callable[[], Awaitable[T]]) -> T:
    """Run an attack on a; a's store is unchanged and a serves b honestly afterwards."""
    a, b = fed["a"], fed["b"]
    before, forks_before = await held(a), await forks(a)
    outcome = await bounded(attack())
    assert await held(a) == before
    assert await forks(a) == forks_before
    note = await a.post(Kind.NOTE, {"text": "a, after the attack"}, "federation")
    await sync(b, a.club)
    assert note.payload in await b.payloads()
    return outcome


async def test_replayed_request_is_refused(trio: Federation, http: aiohttp.ClientSession) -> None:
    a, b = trio["a"], trio["b"]
    captured: list[tuple[str, str]] = []

    async def on_request(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        captured.append((str(params.url), params.headers["Authorization"]))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request)
    async with aiohttp.ClientSession(trace_configs=[trace]) as recording:
        rt = b.service.rt
        client = PeerClient(recording, rt.peers[a.club], me=b.club, key=rt.key, clock=rt.clock)
        assert isinstance(await bounded(client.frontier(None, 0.0)), Frontier)
    [(url, header)] = captured

    async def replay() -> Reply:
        target = url.removeprefix(a.url)
        return await call(http, a, "GET", target, authorization=header)

    reply = await guarded(trio, replay)
    refused(reply, 401, "replayed")


@pytest.mark.parametrize("skew_s", [-121, 121])
async def test_expired_token_is_refused(
    trio: Federation, http: aiohttp.ClientSession, skew_s: int
) -> None:
    a, b = trio["a"], trio["b"]
    target = frontier_target()
    when = a.service.rt.clock() + skew_s * 1_000_000
    header = token(b, a, "GET", target, now_us=when)
    refused(
        await guarded(trio, lambda: call(http, a, "GET", target, authorization=header)),
        401,
        "expired",
    )


async def test_token_for_another_recipient_reads_as_anonymous(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a, b, c = trio["a"], trio["b"], trio["c"]
    target = frontier_target()
    header = token(b, a, "GET", target, recipient=c.club)
    reply = await guarded(trio, lambda: call(http, a, "GET", target, authorization=header))
    await as_anonymous(http, a, reply, "GET", target)


async def test_token_for_another_path_reads_as_anonymous(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a, b = trio["a"], trio["b"]
    header = token(b, a, "GET", f"{FRONTIER_PATH}?known=&wait=1")
    reply = await guarded(
        trio, lambda: call(http, a, "GET", frontier_target(), authorization=header)
    )
    await as_anonymous(http, a, reply, "GET", frontier_target())


async def test_body_not_matching_its_token_reads_as_anonymous(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a, b = trio["a"], trio["b"]
    signed_for = messages.encode(Want([WantLog(log_of(a, "public"), 0)]))
    sent = messages.encode(Want([WantLog(log_of(a, "federation"), 0)]))
    header = token(b, a, "POST", EVENTS_PATH, signed_for)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=sent, authorization=header)
    )
    await as_anonymous(http, a, reply, "POST", EVENTS_PATH, sent)


@pytest.mark.parametrize("who", ["stranger", "b with another key"])
async def test_unknown_club_reads_as_anonymous(
    trio: Federation, http: aiohttp.ClientSession, who: str
) -> None:
    a, b = trio["a"], trio["b"]
    stranger = Club.make(b"stranger")
    club = stranger.id if who == "stranger" else b.club
    header = token(b, a, "GET", frontier_target(), key=stranger.key, club=club)
    reply = await guarded(
        trio, lambda: call(http, a, "GET", frontier_target(), authorization=header)
    )
    await as_anonymous(http, a, reply, "GET", frontier_target())


@pytest.mark.parametrize(
    "header", ["Bearer abc", "Federation !!!not base64", "Federation " + "A" * 400]
)
async def test_malformed_authorization_reads_as_anonymous(
    trio: Federation, http: aiohttp.ClientSession, header: str
) -> None:
    a = trio["a"]
    reply = await guarded(
        trio, lambda: call(http, a, "GET", frontier_target(), authorization=header)
    )
    await as_anonymous(http, a, reply, "GET", frontier_target())


async def test_no_authorization_gets_public_logs_only(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a = trio["a"]
    reply = await guarded(trio, lambda: call(http, a, "GET", frontier_target()))
    assert reply.status == 200
    assert isinstance(reply.message, Frontier)
    assert reply.message.logs is not None
    assert [h.log for h in reply.message.logs] == [log_of(a, "public")]
    # The public log streams; the federation log is refused as if it did not exist.
    public = messages.encode(Want([WantLog(log_of(a, "public"), 0)]))
    streamed = await guarded(trio, lambda: call(http, a, "POST", EVENTS_PATH, body=public))
    assert streamed.status == 200
    kinds = [type(m).__name__ for m in messages.FrameReader().feed(streamed.body)]
    assert kinds == ["Batch", "Done"]
    want = messages.encode(Want([WantLog(log_of(a, "federation"), 0)]))
    reply = await guarded(trio, lambda: call(http, a, "POST", EVENTS_PATH, body=want))
    refused(reply, 404, "unknown_log")


@pytest.mark.parametrize("which", ["a's private", "c's federation", "c's roster", "no such"])
async def test_log_the_peer_may_not_have_is_refused_like_no_log(
    trio: Federation, http: aiohttp.ClientSession, which: str
) -> None:
    a, b, c = trio["a"], trio["b"], trio["c"]
    log = {
        "a's private": log_of(a, "private"),
        "c's federation": log_of(c, "federation"),
        "c's roster": log_of(c, "roster"),
        "no such": canonical.sha256(b"no such log"),
    }[which]
    assert which == "no such" or log in a.service.rt.logs
    body = messages.encode(Want([WantLog(log_of(a, "public"), 0), WantLog(log, 0, 0, True)]))
    header = token(b, a, "POST", EVENTS_PATH, body)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=body, authorization=header)
    )
    error = refused(reply, 404, "unknown_log")
    assert error.message == f"no log {log.hex()[:16]} for you here"


async def test_oversize_body_is_refused(trio: Federation, http: aiohttp.ClientSession) -> None:
    a, b = trio["a"], trio["b"]
    body = bytes(MAX_MESSAGE_BYTES + 1)
    header = token(b, a, "POST", EVENTS_PATH, body)

    async def attack() -> Reply:
        async with http.post(
            a.url + EVENTS_PATH, data=io.BytesIO(body), headers={"Authorization": header}
        ) as response:
            return Reply(response.status, messages.decode(await response.read()), b"")

    refused(await guarded(trio, attack), 413, "too_large")


async def test_body_without_length_is_refused(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    a, b = trio["a"], trio["b"]
    body = messages.encode(Want([WantLog(log_of(a, "public"), 0)]))
    header = token(b, a, "POST", EVENTS_PATH, body)

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    async def attack() -> Reply:
        async with http.post(
            a.url + EVENTS_PATH, data=chunks(), headers={"Authorization": header}
        ) as response:
            return Reply(response.status, messages.decode(await response.read()), b"")

    refused(await guarded(trio, attack), 413, "too_large")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\xc1garbage", "malformed"),
        (msgspec.msgpack.encode({"t": "want", "logs": "all of them"}), "malformed"),
        (messages.encode(Done()), "unexpected"),
        (messages.encode(Frontier(bytes(32), [])), "unexpected"),
        (b"", "malformed"),
    ],
)
async def test_malformed_or_wrong_body_is_refused(
    trio: Federation, http: aiohttp.ClientSession, body: bytes, code: str
) -> None:
    a, b = trio["a"], trio["b"]
    header = token(b, a, "POST", EVENTS_PATH, body)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=body, authorization=header)
    )
    refused(reply, 400, code)


@pytest.mark.parametrize(
    "entry",
    [
        lambda log: [WantLog(log, -1)],
        lambda log: [WantLog(log, 0, -5)],
        lambda log: [WantLog(log, 0), WantLog(log, 1)],
    ],
    ids=["negative seq", "negative limit", "log twice"],
)
async def test_bad_want_is_refused(
    trio: Federation, http: aiohttp.ClientSession, entry: Callable[[bytes], list[WantLog]]
) -> None:
    a, b = trio["a"], trio["b"]
    body = messages.encode(Want(entry(log_of(a, "federation"))))
    header = token(b, a, "POST", EVENTS_PATH, body)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=body, authorization=header)
    )
    refused(reply, 400, "malformed")


@pytest.mark.parametrize(
    "query", ["known=zz&wait=0", "known=&wait=soon", "known=&wait=nan", "known=&wait=inf"]
)
async def test_malformed_frontier_query_is_refused(
    trio: Federation, http: aiohttp.ClientSession, query: str
) -> None:
    a, b = trio["a"], trio["b"]
    target = f"{FRONTIER_PATH}?{query}"
    header = token(b, a, "GET", target)
    reply = await guarded(trio, lambda: call(http, a, "GET", target, authorization=header))
    refused(reply, 400, "malformed")


async def test_want_past_any_seq_gets_an_empty_stream(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    """The largest seq the wire allows (2^40 - 1) is past every log: nothing to send."""
    a, b = trio["a"], trio["b"]
    body = messages.encode(Want([WantLog(log_of(a, "federation"), 2**40 - 1, 2**40 - 1)]))
    header = token(b, a, "POST", EVENTS_PATH, body)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=body, authorization=header)
    )
    assert reply.status == 200
    assert list(messages.FrameReader().feed(reply.body)) == [Done()]


async def test_want_beyond_the_wire_seq_is_refused(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    """A seq over 2^40 - 1 is refused when the want is decoded: malformed."""
    a, b = trio["a"], trio["b"]
    body = messages.encode(Want([WantLog(log_of(a, "federation"), 2**64 - 1, 0)]))
    header = token(b, a, "POST", EVENTS_PATH, body)
    reply = await guarded(
        trio, lambda: call(http, a, "POST", EVENTS_PATH, body=body, authorization=header)
    )
    assert reply.status == 400
    assert isinstance(reply.message, messages.Error)
    assert reply.message.code == "malformed"


async def test_long_poll_with_a_nan_wait_is_refused_not_spun(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    """With `known` current, a NaN wait would never time out: the poll would spin."""
    a, b = trio["a"], trio["b"]
    first = await call(
        http, a, "GET", frontier_target(), authorization=token(b, a, "GET", frontier_target())
    )
    assert isinstance(first.message, Frontier)
    target = f"{FRONTIER_PATH}?known={first.message.digest.hex()}&wait=nan"
    header = token(b, a, "GET", target)
    reply = await guarded(trio, lambda: call(http, a, "GET", target, authorization=header))
    refused(reply, 400, "malformed")


async def test_info_names_the_club_to_its_peers_only(
    trio: Federation, http: aiohttp.ClientSession
) -> None:
    """Which club runs at an address is for its peers: a scanner learns nothing."""
    a, b = trio["a"], trio["b"]
    anonymous = await call(http, a, "GET", INFO_PATH)
    assert anonymous.status == 401
    assert isinstance(anonymous.message, messages.Error)
    assert anonymous.message.code == "unauthenticated"
    assert a.club.hex().encode() not in anonymous.body
    peer = await call(http, a, "GET", INFO_PATH, authorization=token(b, a, "GET", INFO_PATH))
    assert peer.status == 200
    assert json.loads(peer.body)["club"] == a.club.hex()
