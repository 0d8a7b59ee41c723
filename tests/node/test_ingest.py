"""Ingest against a real SQLite store: what two peers' rounds at once must not break."""

from __future__ import annotations

from pathlib import Path

from federation.core import canonical
from federation.node.ingest import Ingest
from federation.store.sqlite import SqliteStore
from tests.conftest import Club, run_of


async def test_two_peers_delivering_the_same_events_at_once_do_not_collide(
    tmp_path: Path, club: Club
) -> None:
    """Both rounds began from the same heads (a relay diamond: b and c both pass a's
    new events to d). The second commit finds them held and adds only what is new."""
    async with await SqliteStore.open(tmp_path / "store.sqlite", create=True) as store:
        await store.put_club(club.id, club.genesis)
        await store.put_log(club.log(), club.descriptors["federation"])
        genesis = {club.id: canonical.decode_genesis(club.genesis)}
        events = club.chain(40)
        first, second = (Ingest(store, dict(genesis), lambda: 0) for _ in range(2))
        assert await first.run(club.log(), run_of(events[:30])) == (30, None)
        assert await second.run(club.log(), run_of(events[:40])) == (40, None)
        await first.aclose()
        await second.aclose()  # passes through the head the first one stored
        assert await store.events(club.log()) == events
        late = Ingest(store, dict(genesis), lambda: 0)
        assert await late.run(club.log(), run_of(events[30:35])) == (5, None)
        await late.aclose()  # all held by now
        assert await store.events(club.log()) == events
