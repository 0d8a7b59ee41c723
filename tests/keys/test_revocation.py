"""Revocation after a seizure, end to end over real nodes (protocol.md §2.2).

An attacker copies club a's node directory (key and all) and runs it as another node
on another port; a club d adds its invite, believing it is a, and the attacker's
posts travel d -> c -> b. Club a revokes its key with its recovery secret, from a
point before the seizure, and posts under its new key. After sync every peer rejects
the attacker's events after the cut, keeps the legitimate ones, follows the new key,
and a relay that held the attacker's events no longer passes them on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from federation.core.canonical import Kind
from federation.core.events import sign_event
from federation.core.invite import make_invite
from federation.errors import KeyFileError, UsageError
from federation.node import keys as node_keys
from federation.node import peering
from tests.harness import Federation
from tests.keys.support import RECOVERY, keys_in, public_log, start_club, texts


async def test_a_seized_key_is_revoked_and_every_peer_follows(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["b", "c", "d"], tls=False) as fed:
        a = await start_club(fed, tmp_path, "a")
        await fed.federate("a", "b")
        await fed.federate("b", "c")
        await fed.federate("c", "d")
        log = public_log(a.club)
        for text in ("legit one", "legit two"):
            await a.post(Kind.NOTE, {"text": text}, "public")

        async def count(member: str) -> int:
            return len(await texts(fed[member].node.store, log))

        async def everywhere(n: int) -> bool:
            return all([await count(m) == n for m in ("b", "c", "d")])

        await fed.wait_for(lambda: everywhere(2), what="every peer has a's two notes")

        # The seizure: the node directory copied whole, run by the attacker elsewhere.
        await fed.stop("a")
        shutil.copytree(tmp_path / "a", tmp_path / "rogue")
        a = await fed.start(tmp_path / "a", "a", port=a.port)
        seized_at = a.node.clock()
        rogue = await fed.start(tmp_path / "rogue", "rogue")
        seized_key = rogue.node.unlock()
        await peering.add(fed["d"].node, await rogue.invite())  # d believes it is club a
        await fed["d"].service.rt.refresh()
        for text in ("ROGUE one", "ROGUE two"):
            await rogue.post(Kind.NOTE, {"text": text}, "public")
        await rogue.service.rt.refresh()
        await fed.wait_for(lambda: everywhere(4), what="the rogue's posts reached every peer")

        # The club revokes with its recovery secret, from before the seizure, its node
        # not syncing meanwhile (`key revoke` runs with the node stopped: a round under
        # way would still judge the peers' events by the key in force before it).
        await a.stop_following()
        seized = a.node.unlock().public
        result = await node_keys.revoke(a.node, RECOVERY, before_us=seized_at)
        assert result.action == "revoke"
        assert result.old == seized
        await a.service.rt.refresh()
        a.start_following()
        assert a.service.rt.key.public == result.new
        assert await texts(a.node.store, log) == [
            '{"text":"legit one"}',
            '{"text":"legit two"}',
        ]
        await a.post(Kind.NOTE, {"text": "new key one"}, "public")
        await a.service.rt.refresh()

        async def followed(member: str) -> bool:
            held = await texts(fed[member].node.store, log)
            return held == [
                '{"text":"legit one"}',
                '{"text":"legit two"}',
                '{"text":"new key one"}',
            ]

        for member in ("b", "c", "d"):
            await fed.wait_for(lambda m=member: followed(m), what=f"{member} follows the new key")  # type: ignore[misc]
        # Request tokens: only the club's current key (the seized key's requests are
        # served as an anonymous requester's, public logs only).
        for member in ("b", "c", "d"):
            assert not fed[member].service.rt.authorized(a.club, seized)
            assert fed[member].service.rt.authorized(a.club, result.new)
        # The rogue node took the revocation from its peers, and refuses to sign now:
        with pytest.raises(KeyFileError, match="rotated or revoked"):
            await rogue.post(Kind.NOTE, {"text": "ROGUE refused"}, "public")
        # so the attacker signs with the seized key by hand: nobody takes it.
        head = (await rogue.node.store.log(log)).head  # type: ignore[union-attr]
        forged = sign_event(
            seized_key,
            club=a.club,
            log=log,
            head=head,
            time_us=rogue.node.clock(),
            kind=Kind.NOTE,
            payload=b'{"text":"ROGUE three"}',
        )
        await rogue.node.store.append([forged])
        await rogue.service.rt.refresh()
        await a.post(Kind.NOTE, {"text": "new key two"}, "public")
        await a.service.rt.refresh()

        async def four(member: str) -> bool:
            return await count(member) == 4

        for member in ("b", "c", "d"):
            await fed.wait_for(lambda m=member: four(m), what=f"{member} has a's new posts")  # type: ignore[misc]
        for member in ("b", "c", "d"):
            store = fed[member].node.store
            events = await store.events(log)
            assert [e.header.key for e in events] == [seized, seized, result.new, result.new]
            assert b"ROGUE" not in b"".join(e.payload or b"" for e in events)
            held = await store.held_apart()
            assert {h.seq for h in held if h.log == log} >= {3}
            assert all("revoked" in h.reason or "kept" in h.reason for h in held if h.log == log)
            assert [e.header.kind for e in await keys_in(store, a.club)] == [Kind.KEY]

        # A relay that held the attacker's events passes them on to nobody: a new club
        # e, federating with c only, receives a's log without one byte of them.
        e = await fed.add(tmp_path, "e", tls=False)
        await fed.federate("c", "e")
        await fed.wait_for(lambda: four("e"), what="e has a's log from c")
        received = b"".join(e.received)
        assert b"new key two" in received  # positive control: the bytes are looked at
        assert b"ROGUE" not in received

        # The seized key can no longer send the club's peers elsewhere: an invite it
        # signs (as the genesis key, with no key events) is refused where the
        # revocation is known; the club's own new invite carries its key events.
        genesis = (await a.node.store.clubs())[a.club]
        forged_invite = make_invite(seized_key, genesis, "Club a", rogue.url, b"")
        with pytest.raises(UsageError, match="since rotated or revoked"):
            await peering.add(fed["b"].node, forged_invite)
        assert {p.club: p.url for p in await fed["b"].node.store.peers()}[a.club] == a.url
        await peering.add(fed["b"].node, await a.invite())
