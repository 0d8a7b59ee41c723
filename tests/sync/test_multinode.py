"""Sync end to end between real nodes: three or four clubs, each with its own SQLite
store, its own server on 127.0.0.1 (TLS pinned to the invite) and its own follow loops.

What is checked here is what the clubs rely on: every node converges to the same
heads for every log it may receive (DESIGN principle 5), relays follow the origin's
audience and signed roster (principle 10), nothing private crosses the boundary, not
even a count (principle 3), forks are kept and freeze only their log (principle 7),
and peers can be paused, resumed, removed, stopped and restarted (principle 12).
Every wait is bounded (Federation.wait_for); nothing sleeps longer than a second.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import aiohttp
import pytest

from federation.core import canonical
from federation.core.canonical import Kind
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.payloads import make_payload, read_payload
from federation.core.selection import fold_roster, roster_log_id
from federation.errors import RemoteProtocolError
from federation.node import audit, peering
from federation.node.follow import sync_round
from federation.store.base import LogRecord
from federation.sync import messages
from federation.sync.messages import Batch, FrameReader, Frontier, LogInfo, Want, WantLog
from federation.web.peer_api import CONTENT_TYPE, EVENTS_PATH, FRONTIER_PATH
from tests.harness import Federation, Member
from tests.store_access import readable_bytes

Heads = dict[bytes, Head]
Graph = dict[str, set[str]]

# --- what each node should hold ---------------------------------------------------------


def graph(names: Iterable[str], edges: Iterable[tuple[str, str]]) -> Graph:
    adjacent: Graph = {name: set() for name in names}
    for a, b in edges:
        adjacent[a].add(b)
        adjacent[b].add(a)
    return adjacent


def reach(adjacent: Graph, origin: str, within: set[str] | None = None) -> set[str]:
    """The members a log of `origin` can reach, hop by hop, through members in `within`."""
    found, queue = {origin}, deque([origin])
    while queue:
        for other in adjacent[queue.popleft()]:
            if other not in found and (within is None or other in within):
                found.add(other)
                queue.append(other)
    return found


async def held(member: Member) -> Heads:
    return {r.id: r.head for r in await member.node.store.logs() if r.head is not None}


async def own_logs(member: Member) -> list[LogRecord]:
    return [
        r for r in await member.node.store.logs() if r.club == member.club and r.head is not None
    ]


async def expected(fed: Federation, adjacent: Graph) -> dict[str, Heads]:
    """Every member's heads once converged, from the origins' own logs and the rules of
    protocol.md §5.4, for clubs that all federate mutually along `adjacent`."""
    names = {m.club: name for name, m in fed.members.items()}
    out: dict[str, Heads] = {name: {} for name in adjacent}
    for name in adjacent:
        for record in await own_logs(fed[name]):
            assert record.head is not None
            kind = record.audience.kind
            if kind == "private":
                receivers = {name}
            elif kind == "public":
                receivers = reach(adjacent, name)
            elif kind == "federation":  # the origin's roster: the clubs it federates with
                receivers = {name} | adjacent[name]
            else:  # a named audience travels only through named clubs
                named = {names[c] for c in record.audience.clubs if c in names}
                receivers = reach(adjacent, name, named | {name})
            for receiver in receivers:
                out[receiver][record.id] = record.head
    return out


async def describe(fed: Federation, want: Mapping[str, Heads]) -> str:
    lines = []
    for name, heads in want.items():
        have = await held(fed[name])
        for log in sorted(set(have) | set(heads)):
            if have.get(log) != heads.get(log):
                lines.append(
                    f"{name}: log {log.hex()[:12]} has "
                    f"{have[log].seq if log in have else None}, wants "
                    f"{heads[log].seq if log in heads else None}"
                )
    return "; ".join(lines)


async def wait_converged(fed: Federation, adjacent: Graph, what: str) -> None:
    """Until every member holds exactly what it may receive, at the origins' heads."""

    async def done() -> bool:
        want = await expected(fed, adjacent)
        stored = {name: await held(fed[name]) for name in want}
        # And each running node has seen its store: what its frontier shows comes from
        # its runtime, which learns of a sync's commits once they are made durable.
        seen = {
            name: {log: h for log, h in fed[name].service.rt.all_heads().items() if h is not None}
            for name in want
        }
        return all(stored[name] == heads == seen[name] for name, heads in want.items())

    try:
        await fed.wait_for(done, what=what)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: {await describe(fed, await expected(fed, adjacent))}"
        ) from None


async def log_of(member: Member, name: str) -> LogRecord:
    (record,) = [
        r for r in await member.node.store.logs() if r.club == member.club and r.name == name
    ]
    return record


async def head_of(member: Member, log: bytes) -> Head | None:
    record = await member.node.store.log(log)
    return None if record is None else record.head


async def holds(member: Member, event: VerifiedEvent) -> bool:
    return await member.node.store.event_at(event.header.log, event.header.seq) == event


def note(text: str) -> dict[str, object]:
    return {"text": text}


# --- convergence -------------------------------------------------------------------------

TOPOLOGIES: dict[str, tuple[list[str], list[tuple[str, str]]]] = {
    "line": (["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "d")]),
    "triangle": (["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")]),
}


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
async def test_clubs_converge_on_every_log_they_may_receive(tmp_path: Path, topology: str) -> None:
    names, edges = TOPOLOGIES[topology]
    adjacent = graph(names, edges)
    async with Federation.open(tmp_path, names) as fed:
        for a, b in edges:
            await fed.federate(a, b)
        for round_ in range(2):  # the second round flows through established long-polls
            for name in names:
                for audience in ("federation", "public", "private"):
                    for i in range(2):
                        text = f"{name} {audience} round {round_} #{i}"
                        await fed[name].post(Kind.NOTE, note(text), audience)
            await wait_converged(fed, adjacent, f"{topology} round {round_}")
        # Converged means the same bytes, not just the same heads: spot-check a relay.
        far = names[-1]
        for record in await own_logs(fed["a"]):
            if record.audience.kind == "public":
                ours = await fed["a"].node.store.raw_events(record.id, 0, 100)
                theirs = await fed[far].node.store.raw_events(record.id, 0, 100)
                assert ours == theirs
        for name in names:
            report = await audit.verify_store(fed[name].node.store, fed[name].node.authorized)
            assert report.ok, report.problems


# --- relays and audiences ------------------------------------------------------------------


async def test_relay_passes_on_only_what_the_origin_audience_allows(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b", "c", "d"]) as fed:
        a, b, c, d = (fed[n] for n in "abcd")
        # a - b - c, and d next to both b and c: d is named in none of a's audiences.
        for x, y in (("a", "b"), ("b", "c"), ("b", "d"), ("c", "d")):
            await fed.federate(x, y)
        bc = "clubs:" + ",".join(sorted(m.club.hex() for m in (b, c)))
        only_c = "clubs:" + c.club.hex()
        shared = await a.post(Kind.NOTE, note("a to its federation"), "federation")
        joint = await a.post(Kind.NOTE, note("a to b and c"), bc, log="joint")
        to_c = await a.post(Kind.NOTE, note("a to c alone"), only_c, log="to-c")
        secret = await a.post(Kind.NOTE, note("a keeps this"), "private")
        public = await a.post(Kind.NOTE, note("a to everyone"), "public")  # posted last

        async def relayed() -> bool:
            # c may take the public note from d before the joint one from b: wait for both.
            held = [await holds(m, public) for m in (c, d)] + [await holds(c, joint)]
            return all(held)

        # A named audience reaches a named club through a relay.
        await fed.wait_for(relayed, what="a's public note at c and d, its joint one at c")
        assert await holds(b, shared)
        for member in (c, d):  # not in a's roster: b must not pass a's federation log on
            assert await head_of(member, shared.header.log) is None
            assert await head_of(member, roster_log_id(a.club)) is None
        assert await head_of(d, joint.header.log) is None, "d is not named"
        for member in (b, c, d):  # c is named, but no club that holds the log peers with it
            assert await head_of(member, to_c.header.log) is None
            assert await head_of(member, secret.header.log) is None

        # a adds c: a's signed roster now names c. c has not added a and never talks to
        # a, so what c now gets of a's federation log can only come through b.
        await peering.add(a.node, await c.invite())
        await a.refresh()
        assert a.club not in c.service.rt.peers
        later = await a.post(Kind.NOTE, note("a to its federation, c included"), "federation")
        marker = await a.post(Kind.NOTE, note("a to everyone, again"), "public")

        async def c_has_it() -> bool:
            return await holds(c, later) and await holds(d, marker)

        await fed.wait_for(c_has_it, what="a's federation log at c, relayed by b")
        assert await head_of(c, shared.header.log) == await head_of(a, shared.header.log)
        roster: set[bytes] = set()
        assert fold_roster(roster, await c.node.store.events(roster_log_id(a.club), 0, 100))
        assert roster == {b.club, c.club}
        assert await head_of(d, shared.header.log) is None, "d is still not in a's roster"
        assert await head_of(c, to_c.header.log) is None  # still no path to c

        # c adds a back: now c syncs with a directly and gets the log named for it alone.
        await peering.add(c.node, await a.invite())
        await c.refresh()
        await fed.wait_for(lambda: holds(c, to_c), what="the log named for c, at c")
        final = await a.post(Kind.NOTE, note("a to everyone, last"), "public")

        async def everyone_has_final() -> bool:
            return all([await holds(m, final) for m in (b, c, d)])

        await fed.wait_for(everyone_has_final, what="the last public note everywhere")
        holders = {
            log: {m.name for m in (a, b, c, d) if await head_of(m, log) is not None}
            for log in (shared.header.log, joint.header.log, to_c.header.log)
        }
        assert holders == {
            shared.header.log: {"a", "b", "c"},
            joint.header.log: {"a", "b", "c"},
            to_c.header.log: {"a", "c"},
        }
        for member in (b, c, d):
            assert await head_of(member, secret.header.log) is None


# --- privacy at the boundary ---------------------------------------------------------------

PRIVATE_LOGS = ("private", "minutes", "members")


def private_text(name: str, log: str, i: int) -> str:
    return f"PRIVATE-{name}-{log}-{i}-never-leaves-club-{name}"


async def post_private(member: Member, *, start: int, count: int) -> list[VerifiedEvent]:
    out = []
    for n, log in enumerate(PRIVATE_LOGS):
        for i in range(start, start + count + n):  # a different number in each log
            fields = {
                "member": f"M{i}",
                "period": "2026-05",
                "text": private_text(member.name, log, i),
            }
            out.append(await member.post(Kind.REPORT, fields, "private", log=log))
    return out


def private_markers(member_name: str, events: list[VerifiedEvent]) -> list[bytes]:
    """Byte strings that would betray these private events if found off their node."""
    out: set[bytes] = set()
    for event in events:
        assert event.payload is not None
        out |= {event.payload, event.id, event.header.payload_hash, event.signed}
        out |= {
            event.header.log,
            event.header.log.hex().encode(),
            event.header.log.hex()[:16].encode(),
        }
        out.add(event.id.hex()[:16].encode())
    out.add(f"PRIVATE-{member_name}-".encode())
    return sorted(out)


def store_bytes(member: Member) -> bytes:
    """The node's store files as they are on disk, write-ahead log included, then what
    they hold decrypted (the store is encrypted: a leak would show in the rows only)."""
    return readable_bytes(member.root)


def decoded(member: Member) -> list[tuple[int | None, messages.Message]]:
    """Every message this member's client received, with the port of the member that
    sent it: frontiers whole, event streams frame by frame."""
    out: list[tuple[int | None, messages.Message]] = []
    for response in member.responses:
        body = bytes(response.body)
        if not body:
            continue  # cut off (a long-poll at shutdown)
        if response.path == FRONTIER_PATH:
            out.append((response.port, messages.decode(body)))
        elif response.path == EVENTS_PATH:
            try:
                out.extend((response.port, m) for m in FrameReader().feed(body))
            except RemoteProtocolError:  # an error answer is one message, not frames
                out.append((response.port, messages.decode(body)))
    return out


async def test_nothing_private_crosses_the_boundary(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    adjacent = graph(names, [("a", "b"), ("b", "c"), ("c", "a")])
    async with Federation.open(tmp_path, names) as fed:
        for x, y in (("a", "b"), ("b", "c"), ("c", "a")):
            await fed.federate(x, y)
        secrets: dict[str, list[VerifiedEvent]] = {}
        for name in names:
            secrets[name] = await post_private(fed[name], start=0, count=2)
            await fed[name].post(Kind.NOTE, note(f"{name} to its federation"), "federation")
            await fed[name].post(Kind.NOTE, note(f"{name} to everyone"), "public")
        await wait_converged(fed, adjacent, "the triangle")

        # A partner's view of a does not move when a writes privately: same frontier
        # bytes (digest and heads), and a long-poll on it is not woken by private work.
        b = fed["b"]
        client = b.service.client(fed["a"].club)
        before = await client.frontier(None, 0)
        assert isinstance(before, Frontier)
        assert before.logs is not None
        secrets["a"] += await post_private(fed["a"], start=10, count=3)
        secrets["a"] += [
            await fed["a"].post(Kind.NOTE, note("PRIVATE-a-new-log"), "private", log="new")
        ]
        after = await client.frontier(None, 0)
        assert messages.encode(after) == messages.encode(before)
        unchanged = await client.frontier(before.digest, 0.3)
        assert isinstance(unchanged, Frontier)
        assert unchanged.logs is None

        want = await expected(fed, adjacent)
        ports = {fed[n].port: n for n in names}
        for name in names:
            member = fed[name]
            others = [m for m in names if m != name]
            markers = [x for o in others for x in private_markers(o, secrets[o])]
            on_disk = store_bytes(member)
            # The chunks as they came, and each response whole (chunks of concurrent
            # responses interleave, so a marker could straddle two in the first).
            wire = b"".join(member.received) + b"\0".join(bytes(r.body) for r in member.responses)
            # The recording works: what others shared publicly is in it (a recorder that
            # records nothing would make the checks below pass without checking).
            for other in others:
                assert f"{other} to everyone".encode() in wire, f"{name} recorded nothing"
            for marker in markers:
                assert marker not in on_disk, f"{name}'s store holds {marker[:40]!r}"
                assert marker not in wire, f"{name} received {marker[:40]!r}"
            # Every frontier and stream this member received names only logs it may
            # receive, held by the member that sent it: no private log, not even a count.
            for port, message in decoded(member):
                sender = ports.get(port or 0, "?")
                if isinstance(message, Frontier) and message.logs is not None:
                    listed = {h.log for h in message.logs}
                    assert listed <= set(want[name]) & set(want[sender]), (name, sender)
                elif isinstance(message, LogInfo):
                    descriptor = canonical.decode_log(message.descriptor)
                    assert descriptor.audience.kind != "private"
                    assert message.id in want[name]
                elif isinstance(message, Batch):
                    assert message.log in want[name]


async def test_a_club_that_was_not_added_gets_public_logs_only(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b"]) as fed:
        d = await fed.add(tmp_path, "d", follow=False)  # syncs only when the test says
        a, b = fed["a"], fed["b"]
        await fed.federate("a", "b")
        shared = await a.post(Kind.NOTE, note("a to its federation"), "federation")
        await a.post(Kind.NOTE, note("a keeps this"), "private")
        await a.post(Kind.NOTE, note("a to everyone"), "public")
        b_public = await b.post(Kind.NOTE, note("b to everyone"), "public")

        async def synced() -> bool:
            return await holds(b, shared) and await holds(a, b_public)

        await fed.wait_for(synced, what="a and b to sync")

        async def public_at_a() -> set[bytes]:
            return {
                r.id
                for r in await a.node.store.logs()
                if r.audience.kind == "public" and r.head is not None
            }

        # Anyone, unauthenticated: public logs only, and a want for another log is
        # refused exactly as a log that does not exist.
        fingerprint = b.service.rt.peers[a.club].fingerprint
        async with aiohttp.ClientSession() as http:
            tls = aiohttp.Fingerprint(fingerprint)

            async def anonymous_frontier() -> set[bytes]:
                url = f"{a.url}{FRONTIER_PATH}?known=&wait=0"
                async with http.get(url, ssl=tls) as response:
                    assert response.status == 200
                    frontier = messages.decode(await response.read())
                assert isinstance(frontier, Frontier)
                assert frontier.logs is not None
                return {h.log for h in frontier.logs}

            # a's follow loops may still be storing what b relayed: the frontier follows
            # the store once the running node has seen the commit.
            async def frontier_is_the_public_logs() -> bool:
                return await anonymous_frontier() == await public_at_a()

            await fed.wait_for(frontier_is_the_public_logs, what="a's frontier to settle")
            body = messages.encode(Want([WantLog(shared.header.log, 0, 0, True)]))
            headers = {"Content-Type": CONTENT_TYPE}
            async with http.post(a.url + EVENTS_PATH, data=body, headers=headers, ssl=tls) as r:
                assert r.status == 404
                refusal = messages.decode(await r.read())
            assert isinstance(refusal, messages.Error)
            assert refusal.code == "unknown_log"

        # d holds a's invite, but a never added d and does not know its key: d's token
        # proves nothing to a, so d is an anonymous reader there (protocol.md §5.2) and
        # receives a's public logs, as README promises, and nothing else.
        await peering.add(d.node, await a.invite())
        await d.refresh()
        client = d.service.client(a.club)
        first = await sync_round(d.service.rt, client, known=None, wait_s=0.0)
        assert first.complete
        assert first.added >= 2  # a's and b's public notes
        assert await head_of(d, shared.header.log) is None

        # a learns d's club (its public log, relayed by b) but still has not added it:
        # d's signed requests are now accepted, for public logs only.
        await fed.federate("b", "d")
        d_public = await d.post(Kind.NOTE, note("d to everyone"), "public")
        await fed.wait_for(lambda: holds(a, d_public), what="d's public note at a through b")

        # As above: the store holds it a moment before the running node has seen the
        # commit (its ingest makes the commits durable first, node/ingest.py).
        async def signed_frontier_is_the_public_logs() -> bool:
            frontier = await client.frontier(None, 0)
            assert isinstance(frontier, Frontier)
            assert frontier.logs is not None
            return {h.log for h in frontier.logs} == await public_at_a()

        await fed.wait_for(signed_frontier_is_the_public_logs, what="a's frontier to d")
        with pytest.raises(RemoteProtocolError) as unknown:
            async for _ in client.events(Want([WantLog(shared.header.log, 0, 0, True)])):
                pass
        assert unknown.value.code == "unknown_log"
        result = await sync_round(d.service.rt, client, known=None, wait_s=0.0)
        assert result.complete
        # And through b, d's partner: b's own logs, but still not a's federation log.
        await sync_round(d.service.rt, d.service.client(b.club), known=None, wait_s=0.0)
        at_d = [r for r in await d.node.store.logs() if r.head is not None]
        from_a = {r.name for r in at_d if r.club == a.club}
        assert from_a == {"public"}
        from_b = {r.name for r in at_d if r.club == b.club}
        assert from_b == {"public", "roster"}  # b's roster log names d: d may read it


# --- peers: pause, resume, remove -----------------------------------------------------------


async def test_pause_resume_and_remove_a_peer(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b", "c"]) as fed:
        a, b, c = fed["a"], fed["b"], fed["c"]
        await fed.federate("a", "b")
        await fed.federate("a", "c")
        first = await a.post(Kind.NOTE, note("a to its federation, 1"), "federation")
        await fed.wait_for(lambda: holds(b, first), what="a's first note at b")

        # a pauses b: a stops syncing with b, and serves it as any stranger: public only.
        paused = await peering.set_state(a.node, "Club b", "paused")
        assert paused.state == "paused"
        await a.refresh()
        while_paused = await a.post(Kind.NOTE, note("a to its federation, 2"), "federation")
        public = await a.post(Kind.NOTE, note("a to everyone, 2"), "public")
        from_b = await b.post(Kind.NOTE, note("b to its federation"), "federation")

        async def public_arrived() -> bool:
            return await holds(b, public) and await holds(c, while_paused)

        await fed.wait_for(public_arrived, what="a's public note at b, its federation note at c")
        await asyncio.sleep(1.0)  # a would have fetched b's note within this, were it syncing
        assert not await holds(b, while_paused)
        assert not await holds(a, from_b)

        # Resume: both directions flow again.
        await peering.set_state(a.node, "Club b", "active")
        await a.refresh()

        async def resumed() -> bool:
            return await holds(b, while_paused) and await holds(a, from_b)

        await fed.wait_for(resumed, what="sync with b after resume")

        # Remove: a signs b out of its roster. b no longer receives a's federation logs,
        # also not through c (c follows a's roster); a's public logs still reach b,
        # since b still follows a and public is for anyone (protocol.md §5.4).
        removed = await peering.remove(a.node, "Club b")
        assert removed.club == b.club
        await a.refresh()
        assert b.club not in a.service.rt.peers
        await fed.federate("b", "c")
        after = await a.post(Kind.NOTE, note("a to its federation, 3"), "federation")
        public_after = await a.post(Kind.NOTE, note("a to everyone, 3"), "public")

        async def settled() -> bool:
            return await holds(b, public_after) and await holds(c, after)

        await fed.wait_for(settled, what="a's public note at b after the removal")
        roster_log = roster_log_id(a.club)
        for member in (a, c):
            events = await member.node.store.events(roster_log, 0, 100)
            folded: set[bytes] = set()
            assert fold_roster(folded, events)  # every roster payload is held (§5.4)
            assert folded == {c.club}
            ops = [(read_payload(e.header.kind, e.payload or b"") or {})["op"] for e in events]
            assert ops == ["added", "added", "removed"]
        # b may no longer read a's roster either: its copy stops before the removal.
        second = await a.node.store.event_at(roster_log, 2)
        assert second is not None
        assert await head_of(b, roster_log) == Head(2, second.id)
        # c passed on the removal and its own logs, never a's new federation event.
        c_note = await c.post(Kind.NOTE, note("c to everyone"), "public")
        await fed.wait_for(lambda: holds(b, c_note), what="c's public note at b")
        assert not await holds(b, after)


# --- forks ---------------------------------------------------------------------------------


async def test_a_fork_is_kept_as_proof_and_freezes_only_its_log(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b", "c"]) as fed:
        a, b, c = fed["a"], fed["b"], fed["c"]
        await fed.federate("a", "c")
        await fed.federate("b", "c")
        for i in range(2):
            await a.post(Kind.NOTE, note(f"a to everyone {i}"), "public")
        public = await log_of(a, "public")
        assert public.head is not None

        async def everyone_at(seq: int) -> bool:
            heads = [await head_of(m, public.id) for m in (b, c)]
            return all(h is not None and h.seq == seq for h in heads)

        await fed.wait_for(lambda: everyone_at(2), what="a's public log at b and c")

        # b stops syncing. a writes seq 3 as usual, and a second seq 3 signed by a's key
        # lands in b's store, as a restored old backup of a would have signed it.
        await b.stop_following()
        ours = await a.post(Kind.NOTE, note("a's real third note"), "public")
        await fed.wait_for(lambda: holds(c, ours), what="a's third note at c")
        theirs = sign_event(
            a.node.unlock(),
            club=a.club,
            log=public.id,
            head=public.head,
            time_us=a.node.clock(),
            kind=Kind.NOTE,
            payload=make_payload(Kind.NOTE, note("a's other third note")),
        )
        assert theirs.header.seq == ours.header.seq
        assert theirs.id != ours.id
        await b.node.store.append([theirs])
        await b.refresh()

        async def fork_at(member: Member) -> bool:
            return bool(await member.node.store.forks())

        await fed.wait_for(lambda: fork_at(c), what="c to detect the fork through b")
        (fork,) = await c.node.store.forks()
        assert (fork.club, fork.log, fork.seq) == (a.club, public.id, 3)
        assert {fork.ours, fork.theirs} == {ours.signed, theirs.signed}
        record = await c.node.store.log(public.id)
        assert record is not None
        assert record.frozen
        assert record.head == Head(3, ours.id)

        # b syncs again and finds the same fork from the other side.
        b.start_following()
        await fed.wait_for(lambda: fork_at(b), what="b to detect the fork through c")
        (fork_b,) = await b.node.store.forks()
        assert {fork_b.ours, fork_b.theirs} == {ours.signed, theirs.signed}

        # The frozen log takes nothing more; every other log keeps syncing. Several
        # logs, so that some sort after the frozen one in the frontier and the stream.
        stuck = await a.post(Kind.NOTE, note("a to everyone, after the fork"), "public")
        later = [
            await a.post(
                Kind.NOTE, note(f"a to its federation, log {i}"), "federation", log=f"f{i}"
            )
            for i in range(4)
        ]
        b_note = await b.post(Kind.NOTE, note("b to everyone"), "public")

        async def others_synced() -> bool:
            return all([await holds(c, e) for e in [*later, b_note]])

        await fed.wait_for(others_synced, what="other logs to keep syncing at c")
        assert not await holds(c, stuck)
        record = await c.node.store.log(public.id)
        assert record is not None
        assert record.head == Head(3, ours.id)

        # `federation status --json` on c tells the operator.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "federation",
            "--node",
            str(c.root),
            "status",
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        status = json.loads(out)
        assert status["forks"] == [{"club": a.club.hex(), "log": public.id.hex(), "seq": 3}]
        (frozen,) = [lg for lg in status["logs"] if lg["id"] == public.id.hex()]
        assert frozen["frozen"] is True
        assert frozen["head_seq"] == 3
        assert {p["name"] for p in status["peers"]} == {"Club a", "Club b"}


# --- restarts and interruptions -----------------------------------------------------------


async def test_a_stopped_node_catches_up_when_started_again(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    adjacent = graph(names, [("a", "b"), ("b", "c")])
    async with Federation.open(tmp_path, names) as fed:
        await fed.federate("a", "b")
        await fed.federate("b", "c")
        for name in names:
            await fed[name].post(Kind.NOTE, note(f"{name} to its federation"), "federation")
            await fed[name].post(Kind.NOTE, note(f"{name} to everyone"), "public")
        await wait_converged(fed, adjacent, "before the stop")

        port = fed["b"].port
        await fed.stop("b")  # the relay between a and c goes away
        for name in ("a", "c"):
            for i in range(3):
                await fed[name].post(Kind.NOTE, note(f"{name} while b is down {i}"), "public")
                await fed[name].post(Kind.NOTE, note(f"{name} fed, b down {i}"), "federation")
        b = await fed.restart("b")  # a new node process, as it were, on b's directory
        assert b.port == port
        assert b is fed["b"]
        await wait_converged(fed, adjacent, "after b restarted")


class Interrupted(Exception):
    pass


async def test_sync_resumes_after_an_interruption_mid_stream(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a", "b", "c"], follow=False) as fed:
        a, b = fed["a"], fed["b"]
        await fed.federate("a", "b")
        # More events than one batch (BATCH_MAX_EVENTS), signed in one go and stored
        # in one transaction, as a club with a long history holds them.
        record = await log_of(a, "federation")
        key, head, run = a.node.unlock(), record.head, []
        for i in range(messages.BATCH_MAX_EVENTS + 500):
            event = sign_event(
                key,
                club=a.club,
                log=record.id,
                head=head,
                time_us=a.node.clock(),
                kind=Kind.NOTE,
                payload=make_payload(Kind.NOTE, note(f"history {i}")),
            )
            run.append(event)
            head = Head(event.header.seq, event.id)
        await a.node.store.append(run)
        await a.refresh()

        # The first round dies right after its first batch of the long log, as a
        # stop, a crash of the task or a lost connection would cut it.
        batches: list[int] = []

        def cut(taken: int) -> None:
            batches.append(taken)
            if taken == messages.BATCH_MAX_EVENTS:  # not a's one-event roster log
                raise Interrupted

        client = b.service.client(a.club)
        with pytest.raises(Interrupted):
            await asyncio.wait_for(
                sync_round(b.service.rt, client, known=None, wait_s=0.0, advance=cut), 30
            )
        assert batches[-1] == messages.BATCH_MAX_EVENTS
        partial = await head_of(b, record.id)
        assert partial is not None
        assert partial.seq == messages.BATCH_MAX_EVENTS

        # What was taken survives a restart, verifies, and the next rounds resume from it.
        b = await fed.restart("b", follow=False)
        assert await head_of(b, record.id) == partial
        report = await audit.verify_store(b.node.store, b.node.authorized)
        assert report.ok, report.problems
        b.start_following()
        await fed.wait_for(
            lambda: holds(b, run[-1]), what="b to resume and catch up after the interruption"
        )
        assert await head_of(b, record.id) == head


async def test_a_new_event_reaches_two_hops_away_through_long_polls(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    async with Federation.open(tmp_path, names) as fed:
        a, c = fed["a"], fed["c"]
        await fed.federate("a", "b")
        await fed.federate("b", "c")
        await a.post(Kind.NOTE, note("a, to start"), "public")
        await wait_converged(fed, graph(names, [("a", "b"), ("b", "c")]), "the first note")

        async def long_polling() -> bool:
            statuses = [p.status for n in names for p in await fed[n].node.store.peers()]
            return all(status.known is not None for status in statuses)

        await fed.wait_for(long_polling, what="every follow loop to hold a long-poll")
        # Idle, a long-poll costs nothing: c asks b hardly at all while nothing changes.
        asked = len(c.responses)
        await asyncio.sleep(1.0)
        assert len(c.responses) - asked <= 2

        started = time.monotonic()
        event = await a.post(Kind.NOTE, note("a, two hops to c"), "public")
        await fed.wait_for(lambda: holds(c, event), timeout_s=10.0, what="a's note at c")
        elapsed = time.monotonic() - started
        print(f"a new event reached c, two hops away, in {elapsed * 1000:.0f} ms")
        assert elapsed < 10.0
