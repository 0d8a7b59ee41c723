"""`make demo`: the example clubs of nodes/, each a real node, federating for real.

Reads the demo specs in nodes/ (one TOML file per club), creates a node for each
under ./demo-federation/, signs each spec's posts into the club's logs, peers the
clubs as their specs say, starts every node as a background `federation run`
process, and shows sync at work: a new post travelling from node to node, what a
relay passes on and what it must not, per-peer status. Then verify, erase,
calendar and campaigns, a joint campaign proposal agreed by three clubs and never
seen by the fourth, and the public feed; and (unless --no-wait) the federation
keeps running for you to try things in another terminal until Ctrl-C.

Every step is a real command, printed as a newcomer can type it: the one-shot
`federation` commands call `federation.cli.main` in this process; the nodes are real
`python -m federation run` processes, stopped on every way out (end, error, Ctrl-C,
SIGTERM); what a user does in a shell besides (stop a node, copy a directory) is
printed as the shell command that does the same (console.shell). A step that fails
stops the demo with a one-line reason: exit 1.

The modules, outermost first:

- this one: the command line (`main`) and the demo directory;
- walkthrough: the scripted steps and what is printed between them;
- proposal: the joint campaign proposal, agreed by three clubs, unseen by the fourth;
- check: the demo's own checks of what each node holds;
- processes: the background `federation run` nodes and the ports they need;
- console: printing, and running one-shot `federation` commands in this process;
- spec: the demo specs of nodes/ (not node configurations), decoded strictly.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from federation.demo.console import environment, query, quote, say, section, shown_path
from federation.demo.feed import feed_address
from federation.demo.processes import RUN_LOG, Nodes, check_ports, port_free, running
from federation.demo.proposal import AGREEMENT_FILE, OUTSIDER_EXPORT, STORY
from federation.demo.spec import (
    FEATURED,
    NODES_DIR,
    ActionPost,
    Cast,
    cast,
    listen_addresses,
    load_spec,
    load_specs,
    post_arguments,
)
from federation.demo.walkthrough import DEMO_PASSPHRASE, keep_running, walk
from federation.errors import FederationError, UsageError
from federation.node.keyfile import PASSPHRASE_ENV

# `main`, and what tests/test_demo.py checks the demo with.
__all__ = [
    "AGREEMENT_FILE",
    "FEATURED",
    "MARKER",
    "NODES_DIR",
    "OUTSIDER_EXPORT",
    "RUN_LOG",
    "STORY",
    "ActionPost",
    "Cast",
    "cast",
    "listen_addresses",
    "load_spec",
    "load_specs",
    "main",
    "port_free",
    "post_arguments",
    "prepare",
    "query",
    "shown_path",
]

DEMO_DIR = Path("demo-federation")
# Written into the demo directory so that a rerun deletes only what a demo made.
MARKER = "README.txt"
MARKER_TEXT = (
    "Made by `make demo` (federation/demo/): one node directory per club of nodes/.\n"
    "Safe to delete; `make demo` replaces it and `make clean` removes it.\n"
)


def prepare(root: Path, *, keep: bool) -> None:
    """Make an empty demo directory, replacing one an earlier demo made (not --keep)."""
    if root.exists() or root.is_symlink():
        if keep:
            raise UsageError(
                f"{root} already exists from an earlier demo. Run the demo without --keep "
                f"(or with --fresh) to replace it, or remove it first: `rm -rf {root}` "
                "(`make clean` does too, along with the virtualenv)"
            )
        made_by_demo = (
            root.is_dir()
            and not root.is_symlink()
            and (not any(root.iterdir()) or (root / MARKER).is_file())
        )
        if not made_by_demo:
            raise UsageError(
                f"{root} exists but was not made by the demo (it has no {MARKER} from it); "
                "not deleting it: move it away or pass --dir with another directory"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text(MARKER_TEXT, encoding="utf-8")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m federation.demo",
        description="Create the example clubs of nodes/ as real nodes, federate and run them.",
        allow_abbrev=False,  # `--node` must not run as --nodes (cli/main.py: no abbreviations)
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=DEMO_DIR,
        help=f"where to create the nodes (default: ./{DEMO_DIR})",
    )
    p.add_argument("--nodes", type=Path, default=NODES_DIR, help="the demo specs (default: nodes/)")
    p.add_argument(
        "--base-port",
        type=int,
        metavar="PORT",
        help="serve the nodes from this port up instead of the specs' ports (e.g. for tests)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="stop the nodes after the walk-through instead of leaving them running",
    )
    replace = p.add_mutually_exclusive_group()
    replace.add_argument(
        "--fresh",
        action="store_true",
        help="replace a directory an earlier demo made (the default)",
    )
    replace.add_argument(
        "--keep", action="store_true", help="refuse to run if the directory already exists"
    )
    args = p.parse_args(argv)
    started = time.monotonic()
    # SIGTERM (a closed terminal, `kill`) stops the nodes like Ctrl-C does.
    restore = None
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        restore = signal.signal(signal.SIGTERM, _interrupt)
    stage = "walk-through"
    nodes = Nodes()
    try:
        specs = load_specs(args.nodes)
        listens = listen_addresses(specs, args.base_port)
        check_ports(listens)  # fail before building anything; again before starting
        prepare(args.dir, keep=args.keep)
        with environment(PASSPHRASE_ENV, DEMO_PASSPHRASE), running(nodes):
            clubs = walk(args.dir, specs, listens, nodes)
            scripted = time.monotonic() - started
            if args.no_wait:
                section(f"Done in {scripted:.1f} s", "Stopping the nodes.")
            else:
                print(f"\n(The walk-through took {scripted:.1f} s.)")
                stage = "running"
                feed = feed_address(listens, FEATURED if FEATURED in specs else next(iter(specs)))
                keep_running(args.dir, specs, clubs, nodes, feed)
    except FederationError as exc:
        stopped = "; the nodes are stopped" if nodes.running else ""
        print(f"\ndemo: {exc}{stopped}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if stage == "running":
            print("\nStopped the nodes. `make demo` starts over; `make clean` removes it all.")
            return 0
        stopped = "; the nodes are stopped" if nodes.running else ""
        print(f"\ndemo: interrupted{stopped}", file=sys.stderr)
        return 130
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
    root = shown_path(args.dir)
    first = FEATURED if FEATURED in specs else next(iter(specs))
    say(
        f"The nodes are in {root}/, each with the log of its run in {RUN_LOG}. Look "
        "around, or start one again, e.g.:",
        "",
    )
    print(f"$ federation --node {quote(f'{root}/{first}')} log --json")
    print(f"$ federation --node {quote(f'{root}/{first}')} run")
    say("", "`make demo` starts over (it replaces the directory); `make clean` removes it.")
    return 0
