"""The receiving node of the sync benchmarks, in a process of its own.

    python -m bench.sync_receiver ingest --node DIR --invite TEXT --expect N
                                         [--every-signature] [--profile FILE]
    python -m bench.sync_receiver rounds --node DIR --invite TEXT --rounds K

A process of its own so that its peak RSS (getrusage's ru_maxrss) is the receiver's
alone, and so that it runs on its own core beside the source, as two nodes would.
It opens the node directory, takes the source's fresh invite (a known club: only
the address changes, as `federation peers add` does), starts the node's service,
and drives `sync_round` itself, so the time is one round's and nothing else's.
It prints one JSON object on stdout; a wrong result exits 1 with the reason on stderr.

`ingest` times one round from empty to complete. `--every-signature` is the
baseline: ingest exactly as the node does it, but with every signature checked
one by one (verify_run's audit mode) instead of the bulk shortcut of §4.4.
`rounds` times no-change rounds against a source holding the same events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import msgspec

import federation.node.ingest
from federation.core.events import Head, KeyCheck, VerifiedRun, verify_run
from federation.errors import InvalidEventError
from federation.node import peering
from federation.node.follow import sync_round
from federation.node.node import Node
from federation.service import MAX_CONNECTIONS_PER_PEER, Service, open_service
from federation.store import cipher
from federation.store.sqlite import SqliteStore
from federation.web.client import PeerClient


class Failed(Exception):
    """The round gave a wrong result: the stores differ from what the fixture says."""


class IngestReport(msgspec.Struct):
    added: int
    seconds: float
    rate: float  # events/s
    peak_rss_mb: float  # VmHWM: the process's peak, start-up included
    ru_maxrss_mb: float  # getrusage's figure: the parent's peak at fork if that was larger
    rss_before_mb: float  # resident just before the round: Python, imports, the node
    rss_after_mb: float  # resident just after the round
    rss_curve_mb: list[float]  # resident at each tenth of the round (sampled every 50 ms)
    cpu_s: float  # user + system CPU of the whole process during the round
    main_thread_cpu_s: float  # of which the event loop's thread (the rest: aiosqlite's)
    requests: int
    every_signature_runs: int  # verify_run calls in every-signature mode (0 in bulk)


class RoundsReport(msgspec.Struct):
    logs: int
    held: int
    full_ms: list[float]  # known=None: the whole frontier compared
    known_ms: list[float]  # known=digest: the peer answers "unchanged"
    full_request_bytes: int
    full_response_bytes: int
    known_request_bytes: int
    known_response_bytes: int
    full_header_bytes: int  # request + response headers of one round
    known_header_bytes: int
    peak_rss_mb: float


class WireCount:
    """What this node's client sent and received over HTTP, from aiohttp's trace signals.

    Bodies are counted from their Content-Length (aiohttp 3.14 signals response
    chunks only on `read()`, which the client does not use); a streamed response
    (the event stream) has none and counts 0. Headers are counted as
    "Name: value" plus CRLF; request and status lines, TLS and TCP are not counted.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.request_bytes = 0
        self.request_header_bytes = 0
        self.response_bytes = 0
        self.response_header_bytes = 0

    def reset(self) -> None:
        self.requests = self.request_bytes = self.request_header_bytes = 0
        self.response_bytes = self.response_header_bytes = 0

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()
        config.on_request_headers_sent.append(self._sent)
        config.on_request_end.append(self._ended)
        return config

    async def _sent(
        self,
        _: aiohttp.ClientSession,
        __: SimpleNamespace,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        self.requests += 1
        self.request_bytes += int(params.headers.get("Content-Length", "0"))
        self.request_header_bytes += sum(len(k) + len(v) + 4 for k, v in params.headers.items())

    async def _ended(
        self, _: aiohttp.ClientSession, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        response = params.response
        self.response_bytes += response.content_length or 0
        self.response_header_bytes += sum(len(k) + len(v) + 4 for k, v in response.raw_headers)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


RSS_SAMPLE_S = 0.05


async def _sample_rss(samples: list[float]) -> None:
    while True:
        samples.append(_rss_mb())
        await asyncio.sleep(RSS_SAMPLE_S)


def _tenths(samples: list[float]) -> list[list[float]]:
    n = len(samples)
    return [samples[i * n // 10 : (i + 1) * n // 10] for i in range(10)]


def _peak_rss_mb() -> float:
    """This process's peak resident size: VmHWM, the high-water mark of its own memory.

    Not getrusage's ru_maxrss: on Linux that carries over from the parent at fork
    and survives exec, so a child of a large bench process reports the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise Failed("no VmHWM in /proc/self/status")


def _ru_maxrss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _EverySignature:
    """Stands in for ingest's verify_run: the same call with every_signature=True.

    It counts its calls, so a change to ingest that stops calling verify_run by that
    name shows up as a failed baseline instead of a quietly wrong one.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self,
        log: bytes,
        after: Head | None,
        run: Sequence[tuple[bytes, bytes | None]],
        authorized: KeyCheck,
        *,
        club: bytes | None = None,
        every_signature: bool = False,
    ) -> tuple[VerifiedRun, InvalidEventError | None]:
        self.calls += 1
        return verify_run(log, after, run, authorized, club=club, every_signature=True)


async def _open_node(root: Path, *, plain_store: bool) -> Node:
    """The node as `federation run` opens it; with `plain_store`, the same node on a
    plain SQLite copy of its store (made untimed here), for the encrypted-vs-plain A/B
    of one bench run. A node never runs so: Node.open encrypts a plain store."""
    node = await Node.open(root)
    if not plain_store:
        return node
    assert node._envelope is not None
    key, path = node._envelope.store_key, node.paths.resolve(node.config.node.store)
    await node.store.aclose()
    assert key is not None
    plain = path.with_name("plain.sqlite")
    with contextlib.closing(cipher.connect(path, key)) as db:
        db.execute("ATTACH DATABASE ? AS plain KEY ''", (str(plain),))
        # The same page size as the encrypted store: the A/B then measures encryption
        # alone (a plain file would default to 4 KiB pages, costlier to ingest into).
        db.execute(f"PRAGMA plain.page_size = {cipher.PAGE_BYTES}")
        db.execute("SELECT sqlcipher_export('plain')")
        db.execute(f"PRAGMA plain.user_version = {db.execute('PRAGMA user_version').fetchone()[0]}")
        db.execute("DETACH DATABASE plain")
    os.replace(plain, path)
    for side in ("-wal", "-shm"):
        path.with_name(path.name + side).unlink(missing_ok=True)
    plain_node = Node(node.paths, node.config, await SqliteStore.open(path), node.clock)
    await plain_node.load_clubs()
    return plain_node


@asynccontextmanager
async def _receiver(
    root: Path, invite: str, *, plain_store: bool = False
) -> AsyncIterator[tuple[Service, PeerClient, WireCount]]:
    async with await _open_node(root, plain_store=plain_store) as node:
        peer = await peering.add(node, invite)
        async with open_service(node, port=0) as service:
            wire = WireCount()
            connector = aiohttp.TCPConnector(limit_per_host=MAX_CONNECTIONS_PER_PEER)
            async with aiohttp.ClientSession(
                connector=connector, trace_configs=[wire.trace()]
            ) as http:
                service.http = http  # the service's own session, plus the byte count
                yield service, service.client(peer.club), wire


async def ingest(args: argparse.Namespace) -> IngestReport:
    every = _EverySignature()
    if args.every_signature:
        federation.node.ingest.verify_run = every  # type: ignore[attr-defined]
    async with _receiver(args.node, args.invite, plain_store=args.plain_store) as (
        service,
        client,
        wire,
    ):
        profiler = cProfile.Profile() if args.profile else None
        gc.collect()
        rss_before = _rss_mb()
        cpu, thread_cpu = _cpu_s(), time.thread_time()
        start = time.perf_counter()
        samples: list[float] = []
        sampler = asyncio.create_task(_sample_rss(samples))
        if profiler is not None:
            profiler.enable()
        result = await sync_round(service.rt, client, known=None, wait_s=0.0)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - start
        sampler.cancel()
        rss_after = _rss_mb()
        cpu, thread_cpu = _cpu_s() - cpu, time.thread_time() - thread_cpu
        if profiler is not None:
            profiler.dump_stats(args.profile)
        if not result.complete or result.added != args.expect:
            raise Failed(
                f"round added {result.added} of {args.expect} (complete={result.complete})"
            )
        if args.every_signature and every.calls == 0:
            raise Failed("ingest no longer calls verify_run: the baseline did not apply")
        return IngestReport(
            added=result.added,
            seconds=round(seconds, 3),
            rate=round(result.added / seconds, 1),
            peak_rss_mb=_peak_rss_mb(),
            ru_maxrss_mb=_ru_maxrss_mb(),
            rss_before_mb=round(rss_before, 1),
            rss_after_mb=round(rss_after, 1),
            rss_curve_mb=[round(max(part), 1) for part in _tenths(samples) if part],
            cpu_s=round(cpu, 2),
            main_thread_cpu_s=round(thread_cpu, 2),
            requests=wire.requests,
            every_signature_runs=every.calls,
        )


async def rounds(args: argparse.Namespace) -> RoundsReport:
    async with _receiver(args.node, args.invite) as (service, client, wire):
        rt = service.rt
        # The first round opens the TLS connection and learns the digest; not timed.
        warm = await sync_round(rt, client, known=None, wait_s=0.0)
        if warm.added or not warm.complete:
            raise Failed(f"the stores differ: the first round added {warm.added}")
        times: dict[bool, list[float]] = {False: [], True: []}
        sizes: dict[bool, tuple[int, int, int]] = {}
        for use_digest in (False, True):
            for _ in range(args.rounds):
                wire.reset()
                start = time.perf_counter()
                result = await sync_round(
                    rt, client, known=warm.digest if use_digest else None, wait_s=0.0
                )
                times[use_digest].append(round((time.perf_counter() - start) * 1000, 3))
                if result.added or not result.complete:
                    raise Failed(f"a no-change round added {result.added}")
                headers = wire.request_header_bytes + wire.response_header_bytes
                sizes[use_digest] = (wire.request_bytes, wire.response_bytes, headers)
        held = sum(r.head.seq for r in rt.logs.values() if r.head is not None)
        return RoundsReport(
            logs=warm.logs,
            held=held,
            full_ms=times[False],
            known_ms=times[True],
            full_request_bytes=sizes[False][0],
            full_response_bytes=sizes[False][1],
            known_request_bytes=sizes[True][0],
            known_response_bytes=sizes[True][1],
            full_header_bytes=sizes[False][2],
            known_header_bytes=sizes[True][2],
            peak_rss_mb=_peak_rss_mb(),
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_receiver")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("ingest", "rounds"):
        command = commands.add_parser(name)
        command.add_argument("--node", type=Path, required=True)
        command.add_argument("--invite", required=True)
        if name == "ingest":
            command.add_argument("--expect", type=int, required=True)
            command.add_argument("--every-signature", action="store_true")
            command.add_argument("--plain-store", action="store_true")
            command.add_argument("--profile", type=Path)
        else:
            command.add_argument("--rounds", type=int, default=20)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    report: IngestReport | RoundsReport
    try:
        if args.command == "ingest":
            report = asyncio.run(ingest(args))
        else:
            report = asyncio.run(rounds(args))
    except Failed as exc:
        print(f"sync_receiver: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
