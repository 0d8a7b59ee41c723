"""`python -m bench.stop [--runs K]`: how long `federation run` takes to start and to stop.

A node (unencrypted key, plain HTTP, one peer that never answers, so a round is
always in progress) is started K times as a real `python -m federation run`
process; each run is timed from spawn to its "serving on" line, then sent SIGTERM
and timed to its exit. One JSON line: the medians and the 90th percentiles, in
seconds. bench/RESULTS.md, "Starting and stopping `run`".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {k: v for k, v in os.environ.items() if k != "FEDERATION_NODE"}


def _federation(node: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "federation", "--node", str(node), *args]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.stop", description=__doc__)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does) and never answers
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init = ("init", "--no-passphrase", "--plain-http", "--listen")
        subprocess.run(
            _federation(root / "a", *init, "127.0.0.1:0", "--name", "A"),
            env=ENV,
            check=True,
            capture_output=True,
        )
        peer = f"127.0.0.1:{silent.getsockname()[1]}"
        subprocess.run(
            _federation(root / "c", *init, peer, "--name", "C"),
            env=ENV,
            check=True,
            capture_output=True,
        )
        invite = json.loads(
            subprocess.run(
                _federation(root / "c", "invite", "--json"),
                env=ENV,
                check=True,
                capture_output=True,
            ).stdout
        )["invite"]
        subprocess.run(
            _federation(root / "a", "peers", "add", invite),
            env=ENV,
            check=True,
            capture_output=True,
        )
        starts, stops = [], []
        for _ in range(args.runs):
            began = time.monotonic()
            run = subprocess.Popen(
                _federation(root / "a", "run"), env=ENV, stderr=subprocess.PIPE, text=True
            )
            assert run.stderr is not None
            while " serving on " not in run.stderr.readline():
                pass
            starts.append(time.monotonic() - began)
            time.sleep(0.5)  # a round with the silent peer is under way
            asked = time.monotonic()
            run.send_signal(signal.SIGTERM)
            run.communicate(timeout=30)
            stops.append(time.monotonic() - asked)
    silent.close()
    print(
        json.dumps(
            {
                "bench": "run_start_stop",
                "runs": args.runs,
                "start_median_s": round(statistics.median(starts), 3),
                "start_p90_s": round(_quantile(starts, 0.9), 3),
                "stop_median_s": round(statistics.median(stops), 3),
                "stop_p90_s": round(_quantile(stops, 0.9), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
