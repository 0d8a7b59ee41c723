"""Structured concurrency for the shell: every task has an owner that outlives it.

`open_task_group` is asyncio's TaskGroup, with one difference that matters to a CLI
and to callers that catch our exception tree: on Python 3.11 a TaskGroup wraps any
error of its body or its tasks in an ExceptionGroup, so `except FederationError`
would miss a failed commit. Here one failure comes out as itself; several distinct
ones stay a group (a bug to report, not an operator's error).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def open_task_group() -> AsyncIterator[asyncio.TaskGroup]:
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as group_error:
        distinct = list({id(e): e for e in group_error.exceptions}.values())
        if len(distinct) == 1:
            raise distinct[0] from None
        raise
