"""Fork evidence is evidence, and a token cannot be replayed after a restart (protocol.md
§3.6, §4.4, §5.2), against real stores and real nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from federation.core import canonical
from federation.core.canonical import Header, Kind
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.node.ingest import open_ingest
from federation.store.sqlite import SqliteStore
from tests.attacks.support import as_probe, call
from tests.conftest import BASE_TIME_US, Club, run_of
from tests.harness import Federation

pytestmark = pytest.mark.timeout(30)


def unsigned_in_the_middle(club: Club) -> list[tuple[bytes, bytes | None]]:
    """Events 1-3 of club's federation log where event 2 carries 64 junk bytes for a
    signature. Bulk verification checks only the run's last signature (§4.4), which
    covers event 2's exact bytes through `prev`: the run is authentic, but event 2
    alone is not portable proof of anything."""
    [first] = club.chain(1)
    payload = b'{"text":"two"}'
    header = Header(
        club=club.id,
        log=club.log(),
        seq=2,
        prev=first.id,
        time_us=BASE_TIME_US + 2_000_000,
        kind=Kind.NOTE,
        payload_hash=canonical.sha256(payload),
        payload_size=len(payload),
        key=club.key.public,
    )
    second = canonical.encode_header(header) + bytes(64)
    [third] = club.chain(1, after=Head(2, canonical.event_id(second)))
    return [(first.signed, first.payload), (second, payload), (third.signed, third.payload)]


def other_second(club: Club) -> VerifiedEvent:
    [first] = club.chain(1)
    return sign_event(
        club.key,
        club=club.id,
        log=club.log(),
        head=Head(1, first.id),
        time_us=BASE_TIME_US + 2_000_000,
        kind=Kind.NOTE,
        payload=b'{"text":"another two"}',
    )


async def _ingest(store: SqliteStore, club: Club, events: list[tuple[bytes, bytes | None]]) -> Any:
    genesis = {club.id: canonical.decode_genesis(club.genesis)}
    async with open_ingest(store, genesis, lambda: BASE_TIME_US) as ingest:
        return await ingest.run(club.log(), events)


@pytest.mark.parametrize("ours_signed", [True, False], ids=["control", "ours unsigned"])
async def test_a_fork_is_recorded_only_from_two_signed_headers(
    tmp_path: Path, club: Club, ours_signed: bool
) -> None:
    async with await SqliteStore.open(tmp_path / "store.sqlite", create=True) as store:
        await store.put_club(club.id, club.genesis)
        await store.put_log(club.log(), club.descriptors["federation"])
        held = run_of(club.chain(3)) if ours_signed else unsigned_in_the_middle(club)
        assert await _ingest(store, club, held) == (3, None)
        taken, error = await _ingest(store, club, run_of([other_second(club)]))
        assert taken == 0
        assert error is not None
        forks = await store.forks()
        record = await store.log(club.log())
        assert record is not None
        if ours_signed:  # the control: two signed headers are a fork, and freeze the log
            assert len(forks) == 1
            assert record.frozen
        else:
            assert forks == []
            assert not record.frozen
            assert "not portable proof" in str(error)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Federation]:
    async with Federation.open(tmp_path, ["a", "b"], tls=False, follow=False) as fed:
        await fed.federate("a", "b")
        await fed["a"].post(Kind.NOTE, {"text": "a's federation note"}, "federation")
        yield fed


async def test_a_token_cannot_be_replayed_after_a_restart(pair: Federation) -> None:
    a, b = pair["a"], pair["b"]
    captured: list[tuple[str, str]] = []

    async def on_request(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        captured.append((str(params.url), params.headers["Authorization"]))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request)
    async with aiohttp.ClientSession(trace_configs=[trace]) as spy:
        client = b.service.client(a.club)
        client.http = spy
        await client.frontier(None, 0.0)  # b's genuine request, captured on the way
    [(url, authorization)] = captured
    target = url.removeprefix(a.url)
    a = await pair.restart("a", follow=False)
    async with aiohttp.ClientSession() as http:
        replay = await call(http, a, "GET", target, authorization=authorization)
        assert replay.status == 401
        assert replay.message is not None
        assert getattr(replay.message, "code", None) == "replayed"
        await as_probe(http, a, 2.0)
    # And b's fresh requests after the restart are served as before (the control).
    result = await b.service.client(a.club).frontier(None, 0.0)
    assert getattr(result, "logs", None)
