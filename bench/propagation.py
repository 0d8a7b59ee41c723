"""How long a post takes to reach a club two hops away: A -> B -> C.

Three real nodes (TLS on 127.0.0.1, SQLite stores) in this process, A and B peered
both ways, B and C peered both ways, each running its follow loops
(`Service.follow_peers`), as `federation run` does. A posts into its public log;
B relays it to C, which is not A's peer. The time runs from the post until C's
caches (refreshed after each commit) show the event.

Two ways to post are timed:

- the value: through A's control socket, as `federation post` does from its own
  process while the node runs (node/control.py); A wakes its long-polls before it
  answers, so no store poll is waited for.
- `hops_only_ms`: through the node's own connection, refreshing its caches at once
  (as tests/harness.py does): the two hops alone.

Pauses between posts are drawn at random (seeded, the seed is in the line), so posts
fall at every phase of the store poll instead of locking to one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from bench.common import TLS, BenchError, Measurement
from federation.core.canonical import Audience, Kind
from federation.node import peering
from federation.node.control import Posted
from federation.node.control_client import call
from federation.node.follow import sync_round
from federation.node.node import Node, init_node
from federation.node.runtime import STORE_POLL_S
from federation.service import Service, open_service

if TYPE_CHECKING:
    from bench.sync import SyncSession

POSTS = 10
# A post that has not reached C after this long is a failure, not a slow result.
TIMEOUT_S = 10.0
# Between posts the follow loops go back to their long-polls; then a random pause.
SETTLE_S = 0.1
SEED = 20261122


class Triangle:
    """Nodes a, b, c with a-b and b-c peered, and the follow loops running."""

    def __init__(self, services: dict[str, Service], cli: Node) -> None:
        self.services = services
        self.cli = cli
        self.follows: list[asyncio.Task[None]] = []
        self.log_lines: list[str] = []
        self.teardown: list[str] = []

    def check_alive(self) -> None:
        """A follow loop that ended on its own has failed: say how, rather than time out."""
        for task in self.follows:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise BenchError(f"a follow loop failed: {_describe(task.exception())}")

    async def post(self, text: str, *, via_cli: bool) -> float:
        """Post on A; the milliseconds until C holds the event."""
        a, c = self.services["a"], self.services["c"]
        start = time.perf_counter()
        fields: dict[str, object] = {"text": text}
        if via_cli:
            request: dict[str, object] = {"op": "post", "kind": "note", "fields": fields}
            request["audience"] = "public"
            done = await asyncio.to_thread(call, a.rt.node.paths.root, request)
            if done is None:
                raise BenchError("A's control socket did not answer")
            posted = msgspec.json.decode(done, type=Posted)
            record, event = posted.record, posted.event
        else:
            record, event = await a.rt.node.post(Kind.NOTE, fields, Audience("public"))
            await a.rt.refresh()
        rt = c.rt
        deadline = start + TIMEOUT_S
        while True:
            version = rt.version
            held = rt.logs.get(record.id)
            if held is not None and held.head is not None and held.head.seq >= event.header.seq:
                return round((time.perf_counter() - start) * 1000, 2)
            self.check_alive()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise BenchError(f"C did not receive A's post {text!r} within {TIMEOUT_S} s")
            await rt.wait_changed(version, min(left, 0.5))


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return repr(exc)


async def _stop(task: asyncio.Task[None], errors: list[str]) -> None:
    """Cancel a follow loop; what it raises on the way out is kept for the line."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        errors.append(_describe(exc))


@contextlib.asynccontextmanager
async def _triangle(root: Path) -> AsyncIterator[Triangle]:
    async with contextlib.AsyncExitStack() as stack:
        services: dict[str, Service] = {}
        for name in ("a", "b", "c"):
            await init_node(root / name, name=f"Club {name}", listen="127.0.0.1:0", passphrase=None)
            node = await stack.enter_async_context(await Node.open(root / name))
            services[name] = await stack.enter_async_context(open_service(node, port=0))
        for x, y in (("a", "b"), ("b", "c")):
            sx, sy = services[x], services[y]
            invite_x = await peering.invite(sx.rt.node, f"https://127.0.0.1:{sx.port}")
            invite_y = await peering.invite(sy.rt.node, f"https://127.0.0.1:{sy.port}")
            await peering.add(sx.rt.node, invite_y)
            await peering.add(sy.rt.node, invite_x)
        for service in services.values():
            await service.rt.refresh()
        # Untimed: the peers meet and swap their rosters one round at a time, so the
        # follow loops start from nodes that are in step (and, before the store took
        # its writes in turns, B's two first rounds could not collide: see RESULTS.md).
        for service in services.values():
            for club in list(service.rt.peers):
                await sync_round(service.rt, service.client(club), known=None, wait_s=0.0)
        # The CLI's connection: a second open of A's node directory.
        triangle = Triangle(services, await stack.enter_async_context(await Node.open(root / "a")))
        # Plain tasks, cancelled on the way out, so that an error in the timing reaches
        # the caller as itself and not inside a TaskGroup's ExceptionGroup.
        for service in services.values():
            task = asyncio.create_task(service.follow_peers(triangle.log_lines.append))
            triangle.follows.append(task)
            stack.push_async_callback(_stop, task, triangle.teardown)
        yield triangle


async def propagation_two_hops(
    session: SyncSession, selected: Collection[str]
) -> list[Measurement]:
    """A post on A until C holds it, through B: median of POSTS, each way of posting."""
    pause = random.Random(SEED)
    async with _triangle(session.directory / "propagation") as triangle:

        async def timed(i: int, *, via_cli: bool) -> float:
            ms = await triangle.post(f"propagation {i}", via_cli=via_cli)
            await asyncio.sleep(SETTLE_S + pause.uniform(0, STORE_POLL_S))
            return ms

        await timed(0, via_cli=False)  # untimed: A's public log and club reach B and C
        via_cli = [await timed(1 + i, via_cli=True) for i in range(POSTS)]
        direct = [await timed(1 + POSTS + i, via_cli=False) for i in range(POSTS)]
        triangle.check_alive()
    errors = [line for line in triangle.log_lines if "received" not in line]
    for line in triangle.teardown:
        print(f"bench: propagation: a follow loop failed as it stopped: {line}", file=sys.stderr)
    return [
        Measurement(
            "propagation_two_hops",
            "ms",
            via_cli,
            path="post on A (its control socket, as `federation post`) -> B -> C holds it",
            store_poll_s=STORE_POLL_S,
            hops_only_ms=round(statistics.median(direct), 1),
            hops_only_runs=[float(ms) for ms in direct],
            nodes="3 nodes in one process, one event loop",
            transport=TLS + ", long-poll frontier",
            seed=SEED,
            follow_errors=[str(line) for line in errors],
            teardown_errors=[*triangle.teardown],
            target="< 1000 ms",
        )
    ]
