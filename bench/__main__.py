"""`python -m bench [NAME...] [--events N] [--runs K]`: one JSON line per benchmark.

Lines go to stdout and nothing else does, so `python -m bench > results.jsonl`
keeps a clean record; progress (the sync fixture's setup, each sync run) goes to
stderr, and a failed check (BenchError) exits 1 with its reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import feed, local, post, sync
from bench.common import (
    DEFAULT_EVENTS,
    DEFAULT_RUNS,
    BenchError,
    JsonValue,
    Measurement,
    environment,
)

NAMES = [*local.BENCHMARKS, *sync.BENCHMARKS, *feed.BENCHMARKS, *post.BENCHMARKS]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark signing, SQLite appends, run verification and sync between nodes.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default all): {', '.join(NAMES)}",
    )
    parser.add_argument(
        "--events",
        type=_positive,
        default=None,
        help=(
            f"events signed, stored and verified (default {DEFAULT_EVENTS}; append_one: at "
            f"most 2000) and synced (default {sync.DEFAULT_SYNC_EVENTS})"
        ),
    )
    parser.add_argument(
        "--runs",
        type=_positive,
        default=DEFAULT_RUNS,
        help="runs per benchmark; the median is reported (default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="also run sync_ingest once more (not counted) under cProfile, stats to FILE",
    )
    return parser


def _print(measurements: list[Measurement], context: dict[str, JsonValue]) -> None:
    for measurement in measurements:
        print(measurement.json_line(context), flush=True)


async def _run(names: Sequence[str], events: int | None, runs: int, profile: Path | None) -> None:
    # A benchmark that measures several names (verify, sync_ingest) runs once for all.
    with tempfile.TemporaryDirectory(prefix="federation-bench-") as directory:
        where = Path(directory)
        context = environment(where)
        session = local.Session(where, events or DEFAULT_EVENTS, runs)
        done: set[local.Benchmark] = set()
        for name, benchmark in local.BENCHMARKS.items():
            if name in names and benchmark not in done:
                done.add(benchmark)
                _print(await benchmark(session, names), context)
        peers = sync.SyncSession(where, events or sync.DEFAULT_SYNC_EVENTS, runs, profile)
        sync_done: set[sync.SyncBenchmark] = set()
        for name, sync_benchmark in sync.BENCHMARKS.items():
            if name in names and sync_benchmark not in sync_done:
                sync_done.add(sync_benchmark)
                _print(await sync_benchmark(peers, names), context)
        if set(names) & set(feed.BENCHMARKS):
            feed_events = events or feed.DEFAULT_FEED_EVENTS
            _print(await feed.feed(where, feed_events, runs, names), context)
        if set(names) & set(post.BENCHMARKS):
            _print(await post.post(where, names, events or post.POSTS), context)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    names: list[str] = args.names or NAMES
    try:
        asyncio.run(_run(names, args.events, args.runs, args.profile))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
