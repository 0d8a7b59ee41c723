"""`federation post` as a whole process, with and without a running node; and the
time from `post` returning to the event stored at a directly connected peer.

Club A is a real `federation run` process with an encrypted key. Each post is a
real `federation post` process started from here, as a club's script would start
it: with A running, the post goes through A's control socket (node/control.py) and
is given no passphrase, so it cannot have opened the key itself; with A stopped,
it unlocks the key (scrypt) and opens the store on its own. Club B, A's peer,
runs in this process (a real node: TLS off on 127.0.0.1, a SQLite store, its follow
loop on A's long-poll), so the moment its store holds each event is seen as it
happens, while the post process is still running.

- `post_via_node`: wall time of each post process through the running node
  (POSTS of them); the line carries the p99, the post process's own CPU time
  (`cpu_ms`, which a busy machine inflates less than the wall time), and the bare
  interpreter's start-up (`python_start_ms`, `python_start_cpu_ms`: the floor under
  any Python command on this machine).
- `post_alone`: the same command with no node running (POSTS_ALONE of them).
- `post_to_peer`: from a post process's exit to B's store holding that event
  (0 when B held it before the post process had exited: A wakes B's long-poll
  before it answers the post); `before_return` counts those.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Collection
from pathlib import Path

from bench.common import BenchError, JsonValue, Measurement
from federation.errors import ControlError
from federation.node import peering
from federation.node.control_client import call
from federation.node.node import Node, init_node
from federation.service import Service, open_service

POSTS = 200
# Each costs a scrypt and an encrypted store's open (about a second): fewer of them.
POSTS_ALONE = 20
PYTHON_STARTS = 20
PASSPHRASE = "bench passphrase, not a secret"
# A node's start, a post or an event's arrival that takes longer has failed.
TIMEOUT_S = 60.0
BENCHMARKS = ("post_via_node", "post_alone", "post_to_peer")
# The command as people and scripts run it: the installed script beside this Python.
_SCRIPT = Path(sys.executable).parent / "federation"
FEDERATION = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "federation"]


# Where the processes keep compiled modules: an installed package has them (pip writes
# them at install), and a post that compiled its modules every time (as with
# PYTHONDONTWRITEBYTECODE, set in some shells and sandboxes) would time the compiler.
PYCACHE = {"PYTHONPYCACHEPREFIX": ""}


def _env(passphrase: bool) -> dict[str, str]:
    drop = ("FEDERATION_PASSPHRASE", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop} | PYCACHE
    if passphrase:
        env["FEDERATION_PASSPHRASE"] = PASSPHRASE
    return env


def _children_cpu_s() -> float:
    """CPU time (user + system) of the child processes waited for so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


async def _federation(node: Path, *args: str, passphrase: bool) -> tuple[float, str]:
    """Run `federation --node NODE ARGS`; its wall time in seconds and its stdout.
    (`LAST_CPU_S[0]`: the CPU time it used, which a busy machine inflates less.)"""
    cpu = _children_cpu_s()
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *FEDERATION,
        "--node",
        str(node),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(passphrase),
    )
    async with asyncio.timeout(TIMEOUT_S):
        out, err = await process.communicate()
    seconds = time.perf_counter() - start
    LAST_CPU_S[0] = _children_cpu_s() - cpu
    if process.returncode != 0:
        raise BenchError(f"federation {' '.join(args[:2])} failed: {err.decode().strip()}")
    return seconds, out.decode()


LAST_CPU_S = [0.0]


def _seq(line: str) -> int:
    """The seq in `post`'s line: "<id>  <log> #<seq>  (<audience>)"."""
    return int(line.split("#")[1].split()[0])


def _answers(root: Path) -> bool:
    try:
        call(root, {"op": "nothing"})  # a request of no known kind: refused once up
    except ControlError:
        return True
    return False


@contextlib.asynccontextmanager
async def _running(root: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *FEDERATION,
        "--node",
        str(root),
        "run",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=_env(passphrase=True),
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not await asyncio.to_thread(_answers, root):
            if process.returncode is not None or time.monotonic() > deadline:
                raise BenchError("`federation run` did not start")
            await asyncio.sleep(0.05)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


class Arrivals:
    """When B's store came to hold each seq of one of A's logs (B's caches are
    refreshed after each commit, and every refresh wakes `wait_changed`)."""

    def __init__(self, service: Service, log: bytes) -> None:
        self.service = service
        self.log = log
        self.at: dict[int, float] = {}

    async def watch(self) -> None:
        rt, held = self.service.rt, 0
        while True:
            version = rt.version
            record = rt.logs.get(self.log)
            if record is not None and record.head is not None and record.head.seq > held:
                now = time.perf_counter()
                for seq in range(held + 1, record.head.seq + 1):
                    self.at[seq] = now
                held = record.head.seq
            await rt.wait_changed(version, 1.0)

    async def wait_for(self, seq: int) -> float:
        deadline = time.monotonic() + TIMEOUT_S
        while seq not in self.at:
            if time.monotonic() > deadline:
                raise BenchError(f"B did not receive A's post #{seq} within {TIMEOUT_S} s")
            await asyncio.sleep(0.002)
        return self.at[seq]


async def _python_start() -> tuple[list[float], list[float]]:
    """The bare interpreter's start-up: wall and CPU milliseconds."""
    wall, cpu = [], []
    for _ in range(PYTHON_STARTS):
        used = _children_cpu_s()
        start = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "pass", env=_env(passphrase=False)
        )
        await process.wait()
        wall.append(round((time.perf_counter() - start) * 1000, 2))
        cpu.append(round((_children_cpu_s() - used) * 1000, 2))
    return wall, cpu


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def post(where: Path, selected: Collection[str], posts: int = POSTS) -> list[Measurement]:
    """Club A as a process, club B here following it; see the module's docstring.
    `posts` through the running node (`--events`; default POSTS)."""
    a_root, b_root = where / "post-a", where / "post-b"
    PYCACHE["PYTHONPYCACHEPREFIX"] = str(where / "pycache")
    print("bench: post: making two clubs", file=sys.stderr)
    listen = f"127.0.0.1:{_free_port()}"
    await _federation(
        a_root, "init", "--name", "Club A", "--listen", listen, "--plain-http", passphrase=True
    )
    await init_node(b_root, name="Club B", listen="127.0.0.1:0", passphrase=None, plain_http=True)
    python_start, python_cpu = await _python_start()
    via_node: list[float] = []
    via_node_cpu: list[float] = []
    to_peer: list[float] = []
    before_return = 0
    async with contextlib.AsyncExitStack() as stack:
        b_node = await stack.enter_async_context(await Node.open(b_root))
        b = await stack.enter_async_context(open_service(b_node, port=0))
        invite_b = await peering.invite(b.rt.node, f"http://127.0.0.1:{b.port}")
        await _federation(a_root, "peers", "add", invite_b, passphrase=True)
        _, invite_a = await _federation(a_root, "invite", passphrase=True)
        await peering.add(b.rt.node, invite_a.strip())
        await stack.enter_async_context(_running(a_root))
        await b.rt.refresh()
        follow = asyncio.create_task(b.follow_peers(lambda line: None))
        stack.callback(follow.cancel)
        # Untimed: A's federation log comes to exist and B learns of it.
        _, line = await _federation(
            a_root,
            "post",
            "note",
            "--audience",
            "federation",
            "--text",
            "warm-up",
            passphrase=False,
        )
        deadline = time.monotonic() + TIMEOUT_S
        log = None
        while log is None:
            log = next(
                (
                    r.id
                    for r in b.rt.logs.values()
                    if r.name == "federation" and r.club != b.rt.club and r.head is not None
                ),
                None,
            )
            if time.monotonic() > deadline:
                raise BenchError("B never received A's federation log")
            await asyncio.sleep(0.01)
        arrivals = Arrivals(b, log)
        watcher = asyncio.create_task(arrivals.watch())
        stack.callback(watcher.cancel)
        print(f"bench: post: {posts} posts through the running node", file=sys.stderr)
        for i in range(posts):
            seconds, line = await _federation(
                a_root,
                "post",
                "note",
                "--audience",
                "federation",
                "--text",
                f"post {i}",
                passphrase=False,
            )
            returned = time.perf_counter()
            via_node.append(round(seconds * 1000, 2))
            via_node_cpu.append(round(LAST_CPU_S[0] * 1000, 2))
            arrived = await arrivals.wait_for(_seq(line))
            before_return += arrived <= returned
            to_peer.append(round(max(0.0, arrived - returned) * 1000, 2))
    alone: list[float] = []
    for i in range(POSTS_ALONE if "post_alone" in selected else 0):
        if not i:
            print(f"bench: post: {POSTS_ALONE} posts with no node running", file=sys.stderr)
        seconds, _ = await _federation(
            a_root,
            "post",
            "note",
            "--audience",
            "federation",
            "--text",
            f"alone {i}",
            passphrase=True,
        )
        alone.append(round(seconds * 1000, 2))
    context: dict[str, JsonValue] = {
        "python_start_ms": round(statistics.median(python_start), 1),
        "python_start_cpu_ms": round(statistics.median(python_cpu), 1),
        "key": "encrypted (scrypt), passphrase from the environment when needed",
        "bytecode": "cached (PYTHONPYCACHEPREFIX), as for an installed package",
    }
    out = [
        Measurement(
            "post_via_node",
            "ms",
            via_node,
            p99_ms=_p99(via_node),
            cpu_ms=round(statistics.median(via_node_cpu), 1),
            path="`federation post` process -> control socket -> running node",
            target="median < 100 ms",
            **context,
        ),
        Measurement(
            "post_to_peer",
            "ms",
            to_peer,
            p99_ms=_p99(to_peer),
            before_return=before_return,
            path="post returned -> B (A's peer, long-polling A's frontier) stored it",
            target="median < 50 ms",
        ),
    ]
    if alone:
        out.append(
            Measurement(
                "post_alone",
                "ms",
                alone,
                p99_ms=_p99(alone),
                path="`federation post` process unlocking the key, opening the store",
                **context,
            )
        )
    return [m for m in out if m.name in selected]
