"""Real club nodes for tests that compare the CLI's output with expected text.

The nodes are real (directories, SQLite stores, HTTP on 127.0.0.1, port 0), served
from a background thread with its own event loop, so the test's thread can run the
CLI itself (`federation.cli.main.main`, which runs its own event loop) against the same
directories while the nodes answer each other, as `federation run` would.

Times are fixed: every node, the served ones and those the CLI opens, reads one
`SetClock` that the test moves on by hand (the clock is the node's seam,
node/system.py `Clock`). With fixed times and `TZ` set, what the CLI prints is the
same on every run except the ids, which the keys make random (and ports): the tests
normalise those before comparing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import threading
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from federation.cli.main import main
from federation.node import peering
from federation.node.node import Node, init_node
from federation.service import Service, open_service

T = TypeVar("T")
WAIT_S = 20.0


class SetClock:
    """A clock that stands still until the test moves it (microseconds since the epoch)."""

    def __init__(self, at: str) -> None:
        self.now_us = 0
        self.set(at)

    def __call__(self) -> int:
        return self.now_us

    def set(self, at: str) -> None:
        """Move to `at`, an ISO 8601 time with its zone."""
        self.now_us = int(dt.datetime.fromisoformat(at).timestamp() * 1_000_000)


@contextlib.contextmanager
def fixed_time(clock: SetClock, zone: str) -> Iterator[None]:
    """Every node the CLI opens reads `clock`; the reader's zone is `zone` (TZ)."""
    with pytest.MonkeyPatch.context() as mp:
        # Node.open takes the clock as a keyword with a default: the CLI's commands
        # open nodes without naming one, so the default is where the test's goes.
        defaults = Node.open.__func__.__kwdefaults__  # type: ignore[attr-defined]
        mp.setitem(defaults, "clock", clock)
        mp.setenv("TZ", zone)
        mp.setenv("COLUMNS", "80")
        yield


class Run:
    """One CLI invocation: exit code and what it printed."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def run_cli(node: Path, *args: str, code: int = 0) -> Run:
    """`federation --node NODE ARGS...` in this thread, as a process would run it,
    its output captured; it must exit with `code`."""
    out, err = io.BytesIO(), io.BytesIO()
    out_text = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    err_text = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(err_text):
        try:
            exit_code = main(["--node", str(node), *args])
        except SystemExit as exc:  # argparse exits on a usage error
            exit_code = exc.code if isinstance(exc.code, int) else 1
    run = Run(exit_code, out.getvalue().decode(), err.getvalue().decode())
    assert run.code == code, f"federation {' '.join(args)}: exit {run.code}: {run.err}"
    return run


class Served:
    """Nodes served from a background thread, as `federation run` serves each: the
    peer API, the control socket, and (`follow`) the follow loops."""

    def __init__(self, clock: SetClock) -> None:
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.services: dict[Path, Service] = {}
        self.stacks: dict[Path, contextlib.AsyncExitStack] = {}
        self.following: dict[Path, asyncio.Task[None]] = {}

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT_S)

    async def _start(self, root: Path, port: int) -> Service:
        stack = contextlib.AsyncExitStack()
        node = await stack.enter_async_context(await Node.open(root, clock=self.clock))
        service = await stack.enter_async_context(open_service(node, port=port))
        self.stacks[root] = stack
        return service

    def start(self, root: Path, port: int = 0) -> Service:
        """Serve the node in `root` (port 0: any free port)."""
        service = self.call(self._start(root, port))
        self.services[root] = service
        return service

    def stop(self, root: Path) -> None:
        """Stop the node as a shut-down node stops (its port stays recorded)."""
        self.stop_following(root)
        self.call(self.stacks.pop(root).aclose())

    def follow(self, root: Path) -> None:
        """Run the node's follow loops, as `federation run` does."""

        async def start() -> asyncio.Task[None]:
            return asyncio.create_task(self.services[root].follow_peers())

        self.following[root] = self.call(start())

    def stop_following(self, root: Path) -> None:
        task = self.following.pop(root, None)
        if task is None:
            return

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self.call(stop())

    def url(self, root: Path) -> str:
        return f"http://127.0.0.1:{self.services[root].port}"

    def federate(self, a: Path, b: Path) -> None:
        """Each club adds the other from its invite (as `invite` and `peers add` do)."""
        self.call(self._federate(a, b))

    async def _federate(self, a: Path, b: Path) -> None:
        sa, sb = self.services[a], self.services[b]
        invite_a = await peering.invite(sa.rt.node, self.url(a))
        invite_b = await peering.invite(sb.rt.node, self.url(b))
        await peering.add(sa.rt.node, invite_b)
        await peering.add(sb.rt.node, invite_a)
        await sa.rt.refresh()
        await sb.rt.refresh()

    def refresh(self) -> None:
        """What the store watcher does: the served nodes see what the CLI wrote."""

        async def refresh_all() -> None:
            for root in self.stacks:
                await self.services[root].rt.refresh()

        self.call(refresh_all())

    def close(self) -> None:
        try:
            for root in list(self.stacks):
                self.stop(root)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT_S)
            self.loop.close()


def create(root: Path, name: str, clock: SetClock) -> bytes:
    """A new club's node (key stored unencrypted: tests do not pay for scrypt)."""
    return asyncio.run(
        init_node(
            root,
            name=name,
            listen="127.0.0.1:0",
            passphrase=None,
            plain_http=True,
            clock=clock,
        )
    )


def check_widths(lines: Sequence[str], columns: int = 80) -> None:
    from federation.cli.table import width

    wide = [line for line in lines if width(line) > columns]
    assert not wide, f"lines wider than {columns} columns: {wide}"
