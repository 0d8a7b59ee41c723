"""Rotation followed by peers (protocol.md §2.2): the club hands over to a new key with
a key event signed by the key in force; peers take it and the club's new events."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from federation.core.canonical import Kind
from federation.core.events import Head, sign_event
from federation.core.evidence import check_evidence, decode_evidence, evidence_of
from federation.errors import InvalidEventError
from federation.node import keys as node_keys
from tests.harness import Federation
from tests.keys.support import keys_in, public_log, start_club, texts


async def test_a_rotation_is_followed_by_peers(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["b", "c"], tls=False) as fed:
        a = await start_club(fed, tmp_path, "a")
        await fed.federate("a", "b")
        await fed.federate("b", "c")
        await a.post(Kind.NOTE, {"text": "before"}, "public")
        log = public_log(a.club)

        async def has(member: str, n: int) -> bool:
            return len(await texts(fed[member].node.store, log)) >= n

        await fed.wait_for(lambda: has("c", 1), what="c has a's first note")
        old_key = a.node.unlock()
        old = old_key.public
        result = await node_keys.rotate(a.node)
        assert result.old == old
        assert result.new != old
        await a.service.rt.refresh()
        assert a.service.rt.key.public == result.new
        event = await a.post(Kind.NOTE, {"text": "after"}, "public")
        assert event.header.key == result.new
        await a.service.rt.refresh()
        await fed.wait_for(lambda: has("c", 2), what="c has a's note signed by the new key")
        for member in ("b", "c"):
            store = fed[member].node.store
            assert [e.header.kind for e in await keys_in(store, a.club)] == [Kind.KEY]
            held = await store.events(log)
            assert [e.header.key for e in held] == [old, result.new]
            assert await store.held_apart() == []
        # An event signed by the new key verifies offline (verify-event, the feed's
        # /events/ID) with the club's key events and the log's first event id.
        store = a.node.store
        keys = [(e.signed, e.payload or b"") for e in await keys_in(store, a.club)]
        genesis = (await store.clubs())[a.club]
        descriptor = (await store.log(log)).descriptor  # type: ignore[union-attr]
        first = (await store.events(log))[0]
        doc = decode_evidence(
            msgspec.json.encode(evidence_of(event, genesis, descriptor, keys, first.id))
        )
        assert check_evidence(doc).id == event.id
        with pytest.raises(InvalidEventError, match="not authorised"):
            check_evidence(
                decode_evidence(msgspec.json.encode(evidence_of(event, genesis, descriptor)))
            )
        # the old key, past its window: refused offline too
        late = sign_event(
            old_key,
            club=a.club,
            log=log,
            head=Head(2, event.id),
            time_us=1,
            kind=Kind.NOTE,
            payload=b"{}",
        )
        with pytest.raises(InvalidEventError, match="rotated"):
            check_evidence(
                decode_evidence(
                    msgspec.json.encode(evidence_of(late, genesis, descriptor, keys, first.id))
                )
            )
        # After the rotation the node no longer holds the genesis key: its invite is
        # signed by the new key and carries the club's key events (protocol.md §5.1).
        d = await fed.add(tmp_path, "d", tls=False)
        await fed.federate("a", "d")
        assert d.node.keys.signing_key(a.club) == result.new
        await fed.wait_for(lambda: has("d", 2), what="d has a's log")
