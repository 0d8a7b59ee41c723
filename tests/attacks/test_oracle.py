"""No oracle for anyone not yet authenticated (protocol.md §5.2), against real nodes.

A stranger probing an address must not learn which club runs there, nor which clubs
the node knows (its partners): every token that does not prove a known club's
request is answered exactly as no token is. And a club that added us, whom we have
not added, receives our public logs, no more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from federation.core import canonical, crypto
from federation.core.canonical import Kind
from federation.sync import auth
from tests.attacks.support import as_probe, call, frontier_target, token
from tests.conftest import Club
from tests.harness import Federation
from tests.sync.hostile_support import sync

pytestmark = pytest.mark.timeout(30)
# While the attack runs, the honest node answers a probe within this (DESIGN 13).
PROBE_S = 2.0


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b", "d"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        a = fed["a"]
        await a.post(Kind.NOTE, {"text": "a's private plan"}, "private")
        await a.post(Kind.NOTE, {"text": "a's federation note"}, "federation")
        await a.post(Kind.NOTE, {"text": "a's public note"}, "public")
        yield fed


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_stranger_cannot_tell_which_club_runs_here(
    fed: Federation, http: aiohttp.ClientSession
) -> None:
    a, b = fed["a"], fed["b"]
    stranger = Club.make(b"stranger")
    target = frontier_target()
    before = await a.heads()
    replies = []
    for recipient in (a.club, canonical.sha256(b"some other club")):
        header = token(b, a, "GET", target, key=stranger.key, club=stranger.id, recipient=recipient)
        replies.append(await call(http, a, "GET", target, authorization=header))
    plain = await call(http, a, "GET", target)
    # Positive control: the answers are the public frontier, which the check can see.
    assert plain.status == 200
    assert plain.body
    assert {(r.status, r.body) for r in replies} == {(plain.status, plain.body)}
    assert await a.heads() == before
    await as_probe(http, a, PROBE_S)


async def test_a_junk_signature_does_not_tell_whom_the_node_knows(
    fed: Federation, http: aiohttp.ClientSession
) -> None:
    a, b = fed["a"], fed["b"]
    stranger = Club.make(b"stranger")
    target = frontier_target()
    replies = {}
    for who, club in (("b, a partner", b.club), ("nobody a knows", stranger.id)):
        header = token(b, a, "GET", target, key=stranger.key, club=club)
        replies[who] = await call(http, a, "GET", target, authorization=header)
    # The partner's own genuine token is answered differently: the control.
    genuine = await call(http, a, "GET", target, authorization=token(b, a, "GET", target))
    assert genuine.status == 200
    assert genuine.body != replies["b, a partner"].body
    assert replies["b, a partner"].body == replies["nobody a knows"].body
    assert replies["b, a partner"].status == replies["nobody a knows"].status == 200
    await as_probe(http, a, PROBE_S)


async def test_a_club_that_added_us_gets_exactly_our_public_logs(fed: Federation) -> None:
    """d adds a's invite; a never adds d and may not even hold d's genesis."""
    a, d = fed["a"], fed["d"]
    await d.add_peer(a)
    assert d.club not in a.service.rt.genesis
    result = await sync(d, a.club)
    assert result.complete
    got = await d.payloads()
    assert b'{"text":"a\'s public note"}' in got  # positive control: d did receive
    assert not {p for p in got if b"a's private" in p or b"a's federation" in p}
    a_logs = {r.id: r for r in await a.node.store.logs() if r.club == a.club}
    held = {r.id for r in await d.node.store.logs() if r.club == a.club and r.head}
    assert {a_logs[log].audience.kind for log in held} == {"public"}


async def test_strangers_and_partners_cost_the_same_check(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same work for known and unknown senders: the signature is checked for both (a
    count, not a timing: these machines are too noisy to time one check)."""
    a, b = fed["a"], fed["b"]
    stranger = Club.make(b"stranger")
    counted: list[bool] = []
    real = crypto.verify_signature

    def counting(key: bytes, signature: bytes, message: bytes) -> bool:
        result = real(key, signature, message)
        counted.append(result)
        return result

    rt = a.service.rt
    target = frontier_target()
    for club in (b.club, stranger.id):
        header = token(b, a, "GET", target, key=stranger.key, club=club)
        with monkeypatch.context() as patched:
            patched.setattr(auth, "verify_signature", counting)
            sender = auth.check(
                header,
                recipient=a.club,
                method="GET",
                target=target,
                body=b"",
                now_us=rt.clock(),
                authorized=rt.authorized,
                replay=rt.replay,
            )
        assert sender is None
    assert counted == [True, True]  # each signature checked once (valid, by its own key)
