"""Benchmarks of sync between real nodes: pinned TLS on loopback, durable SQLite stores.

- sync_ingest: one `sync_round` taking N events (many clubs, many logs) from a
  source into an empty receiver; the receiver runs in its own process
  (bench.sync_receiver), which reports its rate and its peak RSS. The baseline,
  sync_ingest_every_signature, is the same round with every signature checked;
  sync_ingest_plain_store the same round into a plain SQLite store (no SQLCipher),
  its runs interleaved with sync_ingest's (it needs sync_ingest selected too).
- no_change_round: rounds between a receiver and a source that hold the same events,
  with the whole frontier compared (known=None) and with the unchanged shortcut
  (known=digest); time and bytes of the bodies on the wire.
- propagation_two_hops (bench.propagation): nodes A-B-C following each other; a post
  on A until C holds it.

The source serves from this process; its store comes from the cached fixture
(bench.sync_fixture), built once per N.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import statistics
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path

import msgspec

from bench import propagation
from bench.common import TLS, BenchError, JsonValue, Measurement
from bench.sync_fixture import Fixture, load_fixture
from bench.sync_receiver import IngestReport, RoundsReport
from federation.node import peering
from federation.node.node import Node
from federation.service import open_service

DEFAULT_SYNC_EVENTS = 1_000_000
# The every-signature baseline runs once whatever --runs says: at about 9k events/s
# it is the slowest thing here (almost two minutes for a million events).
BASELINE_RUNS = 1
NO_CHANGE_ROUNDS = 20
_REPO = Path(__file__).resolve().parent.parent
_STORE = (
    "SQLCipher (AES-256, HMAC-SHA256, raw key) WAL; an answer's commits made durable together "
    "at its end (one fsync), checkpoints beside the writer"
)


def _progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


class SyncSession:
    """What the sync benchmarks of one `python -m bench` invocation share."""

    def __init__(self, directory: Path, events: int, runs: int, profile: Path | None) -> None:
        self.directory = directory / "sync"
        self.events = events
        self.runs = runs
        self.profile = profile
        self._fixture: Fixture | None = None
        self._synced: Path | None = None
        self._receivers = 0

    async def fixture(self) -> Fixture:
        if self._fixture is None:
            self._fixture = await load_fixture(self.events)
        return self._fixture

    def new_receiver(self, fixture: Fixture) -> Path:
        """A copy of the fixture's empty receiver node, to sync into."""
        self._receivers += 1
        path = self.directory / f"receiver-{self._receivers}"
        shutil.copytree(fixture.receiver, path)
        return path

    def keep_synced(self, path: Path) -> None:
        if self._synced is not None:
            shutil.rmtree(self._synced)
        self._synced = path

    async def synced(self) -> Path:
        """A receiver holding everything the source shows it (kept from sync_ingest)."""
        if self._synced is None:
            fixture = await self.fixture()
            async with serving(fixture) as invite:
                path = self.new_receiver(fixture)
                report = await _ingest(fixture, path, invite)
                _progress(f"synced a receiver for no_change_round in {report.seconds} s")
            self.keep_synced(path)
        assert self._synced is not None
        return self._synced


@contextlib.asynccontextmanager
async def serving(fixture: Fixture) -> AsyncIterator[str]:
    """Serve the fixture's source on a free port; yields an invite to it."""
    async with await Node.open(fixture.source) as node, open_service(node, port=0) as service:
        yield await peering.invite(node, f"https://127.0.0.1:{service.port}")


async def _receiver(*args: str) -> bytes:
    """Run bench.sync_receiver with `args`; its stdout (one JSON object)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sync_receiver",
        *args,
        cwd=_REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-20:]
        raise BenchError("receiver failed:\n  " + "\n  ".join(tail))
    return out


async def _ingest(
    fixture: Fixture,
    node: Path,
    invite: str,
    *,
    every_signature: bool = False,
    profile: Path | None = None,
    plain_store: bool = False,
) -> IngestReport:
    args = ["ingest", "--node", str(node), "--invite", invite]
    args += ["--expect", str(fixture.info.expected)]
    if every_signature:
        args.append("--every-signature")
    if plain_store:
        args.append("--plain-store")
    if profile is not None:
        args += ["--profile", str(profile)]
    return msgspec.json.decode(await _receiver(*args), type=IngestReport)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def sync_ingest(session: SyncSession, selected: Collection[str]) -> list[Measurement]:
    """One sync_round from empty to complete, N events over loopback TLS, durable store."""
    fixture = await session.fixture()
    info = fixture.info
    bulk: list[IngestReport] = []
    every: list[IngestReport] = []
    plain: list[IngestReport] = []
    source_cpu: list[JsonValue] = []  # this process's CPU during a run: serving, mostly
    async with serving(fixture) as invite:
        if "sync_ingest" in selected:
            for run in range(session.runs):
                if "sync_ingest_plain_store" in selected:
                    # Interleaved with the encrypted runs: both see the same machine load.
                    path = session.new_receiver(fixture)
                    report = await _ingest(fixture, path, invite, plain_store=True)
                    _progress(f"sync_ingest plain store run {run + 1}: {report.rate:,.0f} events/s")
                    plain.append(report)
                    shutil.rmtree(path)
                path = session.new_receiver(fixture)
                cpu = _cpu_s()
                report = await _ingest(fixture, path, invite)
                source_cpu.append(round(_cpu_s() - cpu, 2))
                _progress(f"sync_ingest run {run + 1}: {report.rate:,.0f} events/s")
                bulk.append(report)
                session.keep_synced(path)  # the last one serves no_change_round
        if "sync_ingest_every_signature" in selected:
            for _ in range(BASELINE_RUNS):
                path = session.new_receiver(fixture)
                report = await _ingest(fixture, path, invite, every_signature=True)
                _progress(f"sync_ingest every signature: {report.rate:,.0f} events/s")
                every.append(report)
                shutil.rmtree(path)
        if session.profile is not None:
            path = session.new_receiver(fixture)
            report = await _ingest(fixture, path, invite, profile=session.profile)
            _progress(f"profiled run (not counted): {report.rate:,.0f} events/s")
            shutil.rmtree(path)
    context: dict[str, JsonValue] = {
        "events": info.expected,
        "note_events": info.events,
        "clubs": info.clubs,
        "logs": info.logs,
        "transport": TLS,
        "store": _STORE,
        "setup_s": fixture.load_s,
        "fixture": "cached" if fixture.cached else "built",
        "fixture_build_s": info.setup_s,
    }
    out: list[Measurement] = []
    if bulk:
        line = Measurement("sync_ingest", "events/s", [r.rate for r in bulk], **context)
        line.context |= {
            "seconds_runs": [r.seconds for r in bulk],
            "requests": bulk[-1].requests,
            "cpu_s_runs": [r.cpu_s for r in bulk],
            "main_thread_cpu_s_runs": [r.main_thread_cpu_s for r in bulk],
            "source_cpu_s_runs": source_cpu,
            "target": ">= 100000 events/s",
        }
        if every:
            baseline = statistics.median(r.rate for r in every)
            line.context["baseline_every_signature"] = round(baseline, 1)
            line.context["ratio_bulk_over_every"] = round(line.median / baseline, 2)
        if plain:
            plain_rate = statistics.median(r.rate for r in plain)
            line.context["ratio_encrypted_over_plain_store"] = round(line.median / plain_rate, 3)
        out.append(line)
        if plain:
            out.append(
                Measurement(
                    "sync_ingest_plain_store",
                    "events/s",
                    [r.rate for r in plain],
                    **context | {"store": _STORE + ", plain SQLite (no SQLCipher key)"},
                    seconds_runs=[r.seconds for r in plain],
                    cpu_s_runs=[r.cpu_s for r in plain],
                    main_thread_cpu_s_runs=[r.main_thread_cpu_s for r in plain],
                )
            )
        out.append(
            Measurement(
                "sync_receiver_peak_rss",
                "MB",
                [r.peak_rss_mb for r in bulk],
                rss_before_round_mb=[r.rss_before_mb for r in bulk],
                rss_after_round_mb=[r.rss_after_mb for r in bulk],
                rss_curve_mb=[*bulk[-1].rss_curve_mb],
                ru_maxrss_mb=[r.ru_maxrss_mb for r in bulk],
                measured="VmHWM of the receiving node's process (start-up included); "
                "ru_maxrss inherits the parent's peak at fork, so it is only context",
                events=info.expected,
                target="< 300 MB",
            )
        )
    if every:
        out.append(
            Measurement(
                "sync_ingest_every_signature",
                "events/s",
                [r.rate for r in every],
                **context,
                seconds_runs=[r.seconds for r in every],
                peak_rss_mb=[r.peak_rss_mb for r in every],
                mode="ingest as the node does it, verify_run(every_signature=True)",
            )
        )
    return out


async def no_change_round(session: SyncSession, selected: Collection[str]) -> list[Measurement]:
    """sync_round between two nodes holding the same events: full compare and shortcut."""
    fixture = await session.fixture()
    synced = await session.synced()
    async with serving(fixture) as invite:
        args = ["rounds", "--node", str(synced), "--invite", invite]
        out = await _receiver(*args, "--rounds", str(NO_CHANGE_ROUNDS))
    report = msgspec.json.decode(out, type=RoundsReport)
    context: dict[str, JsonValue] = {
        "logs": report.logs,
        "events_held": report.held,
        "rounds": NO_CHANGE_ROUNDS,
        "transport": TLS + ", keep-alive connection (opened by an untimed first round)",
        "target": "< 20 ms",
    }
    return [
        Measurement(
            "no_change_round",
            "ms",
            report.full_ms,
            known="none: the whole frontier is sent and compared",
            request_body_bytes=report.full_request_bytes,
            response_body_bytes=report.full_response_bytes,
            header_bytes=report.full_header_bytes,
            **context,
        ),
        Measurement(
            "no_change_round_known",
            "ms",
            report.known_ms,
            known="the digest of the last round: the peer answers unchanged",
            request_body_bytes=report.known_request_bytes,
            response_body_bytes=report.known_response_bytes,
            header_bytes=report.known_header_bytes,
            **context,
        ),
    ]


SyncBenchmark = Callable[[SyncSession, Collection[str]], Awaitable[list[Measurement]]]

# Name -> the benchmark that measures it, in the order `python -m bench` runs them.
BENCHMARKS: dict[str, SyncBenchmark] = {
    "sync_ingest": sync_ingest,
    "sync_ingest_every_signature": sync_ingest,
    "sync_ingest_plain_store": sync_ingest,
    "no_change_round": no_change_round,
    "no_change_round_known": no_change_round,
    "propagation_two_hops": propagation.propagation_two_hops,
}
