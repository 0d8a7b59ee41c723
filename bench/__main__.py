"""`python -m bench [NAME...] [--events N] [--runs K]`: one JSON line per benchmark.

Lines go to stdout and nothing else does, so `python -m bench > results.jsonl`
keeps a clean record; a failed check (BenchError) exits 1 with its reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.common import DEFAULT_EVENTS, DEFAULT_RUNS, BenchError, environment
from bench.local import BENCHMARKS, Benchmark, Session


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark signing, SQLite appends and run verification.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--events",
        type=_positive,
        default=DEFAULT_EVENTS,
        help="events signed, stored and verified (default %(default)s; append_one: at most 2000)",
    )
    parser.add_argument(
        "--runs",
        type=_positive,
        default=DEFAULT_RUNS,
        help="runs per benchmark; the median is reported (default %(default)s)",
    )
    return parser


async def _run(names: Sequence[str], events: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="federation-bench-") as directory:
        where = Path(directory)
        context = environment(where)
        session = Session(where, events, runs)
        done: set[Benchmark] = set()
        for name in BENCHMARKS:
            benchmark = BENCHMARKS[name]
            if name not in names or benchmark in done:
                continue
            done.add(benchmark)
            for measurement in await benchmark(session, names):
                print(measurement.json_line(context), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names: list[str] = args.names or list(BENCHMARKS)
    try:
        asyncio.run(_run(names, args.events, args.runs))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
