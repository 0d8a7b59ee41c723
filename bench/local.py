"""Benchmarks of one node on its own: signing, appending to SQLite, verifying runs.

Each benchmark runs `session.runs` times and returns its measurements; the caller
prints them. Work a benchmark needs but does not measure (signed events, a filled
store) is made once per session and shared, so `python -m bench verify_run_bulk`
alone still builds what it needs, untimed.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Collection
from functools import partial
from pathlib import Path

from bench.common import (
    APPEND_ONE_EVENTS,
    BATCH_EVENTS,
    RUN_EVENTS,
    STORE_KEY,
    BenchError,
    JsonValue,
    Measurement,
    Workload,
    rate,
    remove_store,
    timed,
)
from federation.core.events import Head, KeyCheck, VerifiedEvent, verify_run
from federation.store.sqlite import SqliteStore

_STORE = "SQLCipher (raw key) WAL synchronous=FULL, new file per run"
_PLAIN_STORE = "plain SQLite (SQLCipher's library, no key) WAL synchronous=FULL, new file per run"

# A run read back from the store: its log, the head it follows, and its (signed, payload).
StoredRun = tuple[bytes, Head | None, list[tuple[bytes, bytes | None]]]


class Session:
    """What one `python -m bench` invocation shares between benchmarks."""

    def __init__(self, directory: Path, events: int, runs: int) -> None:
        self.directory = directory
        self.events = events
        self.runs = runs
        self.workload = Workload()
        self._signed: list[VerifiedEvent] | None = None
        self._filled: Path | None = None
        self._stores = 0

    def signed(self) -> list[VerifiedEvent]:
        """The session's events, signed once (untimed) unless `sign` already made them."""
        if self._signed is None:
            self._signed = self.workload.sign(self.workload.payloads(self.events))
        return self._signed

    def keep_signed(self, events: list[VerifiedEvent]) -> None:
        self._signed = events

    def store_path(self, label: str) -> Path:
        self._stores += 1
        return self.directory / f"{label}-{self._stores}.sqlite"

    async def filled_store(self) -> Path:
        """A store holding all the session's events (kept from append_batched if it ran)."""
        if self._filled is None:
            path = self.store_path("filled")
            await _append_batched(self.workload, path, self.signed())
            self._filled = path
        return self._filled

    def keep_filled(self, path: Path) -> None:
        if self._filled is not None:
            remove_store(self._filled)
        self._filled = path


async def _append_batched(
    workload: Workload, path: Path, events: list[VerifiedEvent], key: bytes | None = STORE_KEY
) -> float:
    """Append `events` in batches to a new store at `path`; returns the seconds taken."""
    batches = [events[i : i + BATCH_EVENTS] for i in range(0, len(events), BATCH_EVENTS)]
    store = await workload.open_store(path, key)
    try:
        gc.collect()
        start = time.perf_counter()
        for batch in batches:
            await store.append(batch)
        seconds = time.perf_counter() - start
        if await store.count_events() != len(events):
            raise BenchError(f"store {path} lost events in append_batched")
    finally:
        await store.aclose()
    return seconds


async def sign(session: Session, selected: Collection[str]) -> list[Measurement]:
    """sign_event over pre-encoded payloads: header, payload hash, ed25519, event id."""
    payloads = session.workload.payloads(session.events)
    rates: list[float] = []
    for _ in range(session.runs):
        events, seconds = timed(partial(session.workload.sign, payloads))
        rates.append(rate(len(events), seconds))
        session.keep_signed(events)
    return [
        Measurement(
            "sign",
            "events/s",
            rates,
            events=session.events,
            logs=len(session.workload.logs),
            payload_bytes_mean=sum(map(len, payloads)) // len(payloads),
        )
    ]


async def append_batched(session: Session, selected: Collection[str]) -> list[Measurement]:
    """SqliteStore.append of all the events, BATCH_EVENTS per call (one commit each)."""
    events = session.signed()
    rates: list[float] = []
    plain: list[float] = []
    for _ in range(session.runs):
        if "append_batched_plain_store" in selected:  # interleaved: the same machine load
            path = session.store_path("append-batched-plain")
            plain.append(
                rate(len(events), await _append_batched(session.workload, path, events, None))
            )
            remove_store(path)
        path = session.store_path("append-batched")
        seconds = await _append_batched(session.workload, path, events)
        rates.append(rate(len(events), seconds))
        session.keep_filled(path)  # the last run's store serves the verify benchmarks
    context: dict[str, JsonValue] = {
        "events": len(events),
        "batch": BATCH_EVENTS,
        "logs": len(session.workload.logs),
    }
    out = [Measurement("append_batched", "events/s", rates, **context, store=_STORE)]
    if plain:
        out[0].context["ratio_encrypted_over_plain_store"] = round(
            out[0].median / statistics.median(plain), 3
        )
        out.append(
            Measurement(
                "append_batched_plain_store", "events/s", plain, **context, store=_PLAIN_STORE
            )
        )
    return out


async def append_one(session: Session, selected: Collection[str]) -> list[Measurement]:
    """SqliteStore.append of one event per call: one durable commit (fsync) per event."""
    events = session.signed()[:APPEND_ONE_EVENTS]
    rates: list[float] = []
    plain: list[float] = []
    keys: list[tuple[bytes | None, list[float]]] = [(STORE_KEY, rates)]
    if "append_one_plain_store" in selected:  # interleaved: the same machine load
        keys.insert(0, (None, plain))
    for _ in range(session.runs):
        for key, into in keys:
            path = session.store_path("append-one")
            store = await session.workload.open_store(path, key)
            try:
                gc.collect()
                start = time.perf_counter()
                for event in events:
                    await store.append([event])
                seconds = time.perf_counter() - start
            finally:
                await store.aclose()
            remove_store(path)
            into.append(rate(len(events), seconds))
    context: dict[str, JsonValue] = {
        "events": len(events),
        "measured_over": f"{len(events)} one-event appends per run, into an empty store",
        "batch": 1,
    }
    out = [Measurement("append_one", "events/s", rates, **context, store=_STORE)]
    if plain:
        out[0].context["ratio_encrypted_over_plain_store"] = round(
            out[0].median / statistics.median(plain), 3
        )
        out.append(
            Measurement("append_one_plain_store", "events/s", plain, **context, store=_PLAIN_STORE)
        )
    return out


async def _read_runs(
    workload: Workload, path: Path, key: bytes | None = STORE_KEY
) -> list[StoredRun]:
    """Every log of the store at `path`, read back in runs of RUN_EVENTS, as a peer sends them."""
    store = await SqliteStore.open(path, key=key)
    runs: list[StoredRun] = []
    try:
        for log, _ in workload.logs:
            after: Head | None = None
            while chunk := await store.events(log, 0 if after is None else after.seq, RUN_EVENTS):
                runs.append((log, after, [(e.signed, e.payload) for e in chunk]))
                after = Head(chunk[-1].header.seq, chunk[-1].id)
    finally:
        await store.aclose()
    return runs


def _verify_all(runs: list[StoredRun], authorized: KeyCheck, *, every_signature: bool) -> int:
    verified = 0
    for log, after, run in runs:
        good, error = verify_run(log, after, run, authorized, every_signature=every_signature)
        if error is not None or len(good) != len(run):
            raise BenchError(f"stored run failed to verify: {error}")
        verified += len(good)
    return verified


async def verify(session: Session, selected: Collection[str]) -> list[Measurement]:
    """verify_run over the stored events: every signature, and the bulk shortcut.

    Both modes verify the same runs, read back once per benchmark run; the read is
    timed on its own (read_runs) and not counted in either figure.
    """
    authorized = session.workload.authorized()
    reads: list[float] = []
    plain_reads: list[float] = []
    every: list[float] = []
    bulk: list[float] = []
    path = await session.filled_store()
    # The same events in a plain store: its reads interleaved with the encrypted ones.
    plain_path = session.store_path("filled-plain")
    await _append_batched(session.workload, plain_path, session.signed(), None)
    for _ in range(session.runs):
        gc.collect()
        start = time.perf_counter()
        plain_count = sum(
            len(run) for _, _, run in await _read_runs(session.workload, plain_path, None)
        )
        plain_reads.append(rate(plain_count, time.perf_counter() - start))
        gc.collect()
        start = time.perf_counter()
        runs = await _read_runs(session.workload, path)
        count = sum(len(run) for _, _, run in runs)
        reads.append(rate(count, time.perf_counter() - start))
        if count != session.events:
            raise BenchError(f"read back {count} events, expected {session.events}")
        if "verify_every_signature" in selected:
            n, seconds = timed(partial(_verify_all, runs, authorized, every_signature=True))
            every.append(rate(n, seconds))
        if "verify_run_bulk" in selected:
            n, seconds = timed(partial(_verify_all, runs, authorized, every_signature=False))
            bulk.append(rate(n, seconds))
    context: dict[str, JsonValue] = {
        "events": session.events,
        "run": RUN_EVENTS,
        "logs": len(session.workload.logs),
        "read_runs": list(reads),
        "read_runs_plain_store": list(plain_reads),
        "read_unit": "events/s (SqliteStore.events, warm page cache; not in value)",
    }
    remove_store(plain_path)
    out: list[Measurement] = []
    if every:
        out.append(Measurement("verify_every_signature", "events/s", every, **context))
    if bulk:
        line = Measurement("verify_run_bulk", "events/s", bulk, **context)
        # The ratio needs both modes; alone, bulk reports null rather than a guess.
        ratio: JsonValue = None
        ratios: JsonValue = None
        if every:
            ratio = round(line.median / statistics.median(every), 2)
            ratios = [round(b / e, 2) for b, e in zip(bulk, every, strict=True)]
        line.context["ratio_bulk_over_every"] = ratio
        line.context["ratio_runs"] = ratios
        out.append(line)
    return out


Benchmark = Callable[[Session, Collection[str]], Awaitable[list[Measurement]]]

# Name -> the benchmark that measures it, in the order `python -m bench` runs them.
# Both verify names come from one benchmark, so they time the same runs side by side.
BENCHMARKS: dict[str, Benchmark] = {
    "sign": sign,
    "append_batched": append_batched,
    "append_batched_plain_store": append_batched,
    "append_one": append_one,
    "append_one_plain_store": append_one,
    "verify_every_signature": verify,
    "verify_run_bulk": verify,
}
