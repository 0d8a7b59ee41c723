"""A write cancelled at any moment leaves the SQLite connection usable (no open BEGIN).

Follow loops are cancelled whenever a peer is paused or removed, so a write can be
cut at any await: before, during or after BEGIN, the body, or COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from federation.store.base import ProjectionUpdate
from federation.store.sqlite import SqliteStore


@pytest.mark.parametrize("delay_s", [0.0, 0.0001, 0.0005, 0.001, 0.003])
async def test_cancelled_writes_leave_no_transaction_open(tmp_path: Path, delay_s: float) -> None:
    store = await SqliteStore.open(tmp_path / "store.sqlite", create=True)
    try:
        for i in range(15):
            update = ProjectionUpdate({("calendar", f"k{i}"): b"{}"}, {b"log": i})
            task = asyncio.create_task(store.save_projection(update))
            await asyncio.sleep(delay_s)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert not store._db.in_transaction
        await store.set_meta("after", b"ok")  # the connection still writes
        assert await store.get_meta("after") == b"ok"
    finally:
        await store.aclose()
