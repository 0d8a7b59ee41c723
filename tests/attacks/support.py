"""What the attack tests share: a hostile client's requests, crafted as protocol.md
writes them, and the probe that shows the honest node still answers during an attack."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.harness import Member
from tests.sync.test_hostile_client import Reply, call, frontier_target, token

__all__ = ["Reply", "as_probe", "call", "frontier_target", "token"]


async def as_probe(http: aiohttp.ClientSession, node: Member, within_s: float) -> float:
    """An anonymous frontier request answers 200 within `within_s`; returns the seconds."""
    start = time.monotonic()
    async with asyncio.timeout(within_s):
        reply = await call(http, node, "GET", frontier_target())
    assert reply.status == 200, reply
    return time.monotonic() - start
