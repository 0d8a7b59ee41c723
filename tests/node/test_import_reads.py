"""An import reads the store's log records once, however many logs it brings (found by
review: each log an import put made ingest read every record again, so an import of
thousands of logs took minutes, and at the log quota would take hours). Counted, not
timed: the number of whole reads of the log records, over a real SQLite store."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from federation.core import canonical, crypto
from federation.core.canonical import Audience, Genesis, LogDescriptor, encode_log, log_id
from federation.core.events import sign_event
from federation.node import archive
from federation.store.base import LogRecord
from federation.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(60)
LOGS = 60
T0 = 1_700_000_000_000_000


def export_lines() -> list[bytes]:
    """An export of one club with LOGS public logs of one event each."""
    key = crypto.SigningKey(os.urandom(32))
    genesis = canonical.encode_genesis(Genesis(key.public, b"\x01" * 32, T0))
    club = canonical.club_id(genesis)
    encode = msgspec.json.Encoder().encode
    lines = [encode(archive.ClubLine(club.hex(), genesis.hex()))]
    for i in range(LOGS):
        descriptor = encode_log(LogDescriptor(club, f"log{i}", Audience("public")))
        log = log_id(descriptor)
        lines.append(encode(archive.LogLine(log.hex(), descriptor.hex())))
        event = sign_event(
            key, club=club, log=log, head=None, time_us=T0 + 1, kind=1, payload=b"hi"
        )
        lines.append(archive.event_line(event).rstrip(b"\n"))
    return lines


async def test_an_import_of_many_logs_reads_the_log_records_once(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.sqlite", key=None, create=True)
    reads = 0
    logs = store.logs

    async def counted() -> list[LogRecord]:
        nonlocal reads
        reads += 1
        return list(await logs())

    store.logs = counted  # type: ignore[method-assign]
    try:
        result = await archive.import_lines(store, {}, export_lines(), now_us=T0 + 2)
        assert result.added == LOGS
        assert reads <= 2, reads  # before the fix: one a log
        assert len(await logs()) == LOGS
    finally:
        await store.aclose()
