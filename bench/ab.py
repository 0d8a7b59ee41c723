"""`python -m bench.ab REV [NAME ...] [--pairs N]`: this tree against commit REV, interleaved.

Runs `python -m bench NAME --runs 1` for REV (B) and for this tree (A) in turn, B A B A
..., so that the machine's drift (30-40% between hours here) hits both alike, and
prints every measurement, then one JSON line per benchmark with the ratio A/B of each
pair and their median. REV is checked out in a temporary `git worktree` and run by
this interpreter with this venv's dependencies but REV's own `federation` and
`bench` packages (a bare venv whose .pth names REV first: the editable install of
this tree is not seen there, so B's receiver processes run B's code too). B's cached
fixtures live in their own temporary directory, kept for later runs, since a store
A opened may carry a newer schema than B can read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bare_venv(base: Path, worktree: Path) -> Path:
    """A venv without packages whose site-packages points at REV, then our deps."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base)], check=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    [site] = list((base / "lib").glob("python3*/site-packages"))
    (site / "federation_ab.pth").write_text(f"{worktree}\n{purelib}\n")
    return base / "bin" / "python"


def _run(
    python: Path, cwd: Path, names: Sequence[str], tmp: Path | None = None
) -> list[dict[str, object]]:
    env = dict(os.environ)
    if tmp is not None:  # where this side's cached fixtures live (tempfile honours TMPDIR)
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
    done = subprocess.run(
        [str(python), "-m", "bench", *names, "--runs", "1"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench.ab: {cwd}: python -m bench failed: {done.stderr.strip()[-500:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("rev", help="the commit to compare against (B)")
    parser.add_argument("names", nargs="*", default=["sync_ingest"], help="benchmarks")
    parser.add_argument("--pairs", type=int, default=4, help="B/A pairs (default 4)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="federation-ab-") as tmp:
        worktree = Path(tmp) / "b"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), args.rev],
            check=True,
        )
        try:
            python_b = _bare_venv(Path(tmp) / "venv", worktree)
            # B keeps its fixtures apart, and for later runs: a store that A opened
            # may carry a newer schema, which B's code would refuse and rebuild.
            rev = subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", args.rev],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            tmp_b = Path(tempfile.gettempdir()) / f"federation-ab-{rev[:12]}"
            values: dict[str, dict[str, list[float]]] = {}
            units: dict[str, str] = {}
            for pair in range(1, args.pairs + 1):
                order = (("B", python_b, worktree, tmp_b), ("A", Path(sys.executable), ROOT, None))
                for side, python, cwd, side_tmp in order:
                    for line in _run(python, cwd, args.names, side_tmp):
                        print(json.dumps({"side": side, "pair": pair, **line}), flush=True)
                        name = str(line["name"])
                        value = line["value"]
                        units[name] = str(line.get("unit", ""))
                        if isinstance(value, int | float):
                            values.setdefault(name, {}).setdefault(side, []).append(value)
            for name, sides in values.items():
                ratios = [
                    a / b for a, b in zip(sides.get("A", []), sides.get("B", []), strict=False)
                ]
                summary = {
                    "name": name,
                    "unit": units.get(name, ""),
                    "ab": f"HEAD vs {args.rev}",
                    "A": sides.get("A"),
                    "B": sides.get("B"),
                    "ratios_a_over_b": [round(r, 3) for r in ratios],
                    "median_ratio": round(statistics.median(ratios), 3) if ratios else None,
                }
                print(json.dumps(summary), flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
