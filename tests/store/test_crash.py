"""Nothing acknowledged is ever lost (DESIGN principle 14): SIGKILL a writer at random.

A child process appends batches to one SQLite store and reports each head after
`append` returns; we kill it with SIGKILL at seeded random moments, restart it on
the same store each time, and finally check that every log verifies, signature by
signature, and holds every seq the child ever reported.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from federation.core.events import VerifiedEvent, verify_run
from federation.store.sqlite import SqliteStore
from tests.store import crash_writer

ROOT = Path(__file__).resolve().parents[2]
SEED = 20_260_101
KILLS = 24
# Most kills land while the writer appends (after it says `ready`); every fourth lands
# at a random moment from its start, to catch opening, migrating and resuming too.
KILL_AFTER_READY_S = (0.0, 0.25)
KILL_AFTER_START_S = (0.0, 0.5)


def run_and_kill(path: Path, seed: int, rng: random.Random, *, wait_ready: bool) -> list[str]:
    """Start the writer, SIGKILL it after a random delay; return the lines it reported."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_writer", str(path), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        lines: list[bytes] = []
        if wait_ready:
            lines.append(child.stdout.readline())
            time.sleep(rng.uniform(*KILL_AFTER_READY_S))
        else:
            time.sleep(rng.uniform(*KILL_AFTER_START_S))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, err.decode()
    text = b"".join(lines).decode() + out.decode()
    return [line for line in text.splitlines(keepends=True) if line.endswith("\n")]


async def held_events(store: SqliteStore, log: bytes) -> list[VerifiedEvent]:
    out: list[VerifiedEvent] = []
    while page := await store.events(log, len(out), 1000):
        out += page
    return out


@pytest.mark.timeout(90)
def test_sigkill_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    print(f"crash test seed {SEED}")
    rng = random.Random(SEED)
    path = tmp_path / "store.sqlite"
    reported: dict[bytes, int] = {}
    reports = 0
    for run in range(KILLS):
        for line in run_and_kill(path, SEED + run, rng, wait_ready=run % 4 != 3):
            if line == "ready\n":
                continue
            reports += 1
            for item in line.split():
                log_hex, seq = item.split(":")
                log = bytes.fromhex(log_hex)
                assert int(seq) >= reported.get(log, 0), "a reported head went backwards"
                reported[log] = int(seq)
    assert reports >= KILLS, "the writer was killed before it appended anything: slow machine?"

    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    asyncio.run(check_store(path, reported))


async def check_store(path: Path, reported: dict[bytes, int]) -> None:
    """Every log verifies signature by signature and holds every reported seq."""
    store = await SqliteStore.open(path)
    try:
        assert await store.clubs() == {crash_writer.CLUB: crash_writer.GENESIS}
        records = {r.id: r for r in await store.logs()}
        assert set(records) == set(crash_writer.LOGS)
        total = 0
        for log, record in records.items():
            held = await held_events(store, log)
            run = [(e.signed, e.payload) for e in held]
            verified, error = verify_run(
                log, None, run, crash_writer.authorized, every_signature=True
            )
            assert error is None, str(error)
            assert verified.events() == held
            assert [e.header.seq for e in held] == list(range(1, len(held) + 1))
            assert record.head is not None
            assert record.head.seq == len(held)
            assert record.head.id == held[-1].id
            assert reported.get(log, 0) <= len(held), "an acknowledged append was lost"
            total += len(held)
        assert await store.count_events() == total
    finally:
        await store.aclose()
