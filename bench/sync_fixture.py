"""The sync benchmarks' fixture: a source node relaying many clubs' logs, built once per size.

Fifty clubs each have four shared logs (two public, two federation) and a roster
log naming the source and the receiver, so the receiver may take every one of them:
the public logs by their audience, the federation logs because each origin's roster,
as the source holds it, names the receiver (protocol.md §5.4). The N note events are
spread evenly over the 200 logs. The source and the receiver are real node
directories (`init_node`, unencrypted keys as in tests/harness.py) that added each
other's invites, as `federation peers add` does on both sides.

Signing a million events takes about 30 s on one core, so the clubs are signed in
worker processes while this process verifies and stores what they return. The
result is kept under the system temp dir, keyed by N and FIXTURE_VERSION, and later
runs reuse it: `source` is the filled node that serves, and `receiver` is the empty
node that every run copies, so each run starts from empty. Delete the directory
(`cache_dir(N)`) to rebuild it; a cache that no longer opens or counts right is
rebuilt on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bench.common import note_payload
from federation.core import canonical
from federation.core.canonical import Audience, Genesis, Kind
from federation.core.crypto import SigningKey
from federation.core.events import Head, VerifiedRun, sign_event, verify_run
from federation.core.log import descriptor_bytes
from federation.core.payloads import make_payload
from federation.core.selection import roster_descriptor
from federation.errors import FederationError
from federation.node import peering
from federation.node.node import Node, init_node

# Bump when the fixture's content or layout changes: old caches are then ignored.
FIXTURE_VERSION = 2  # 2: nodes with the key envelope and an encrypted store
SYNC_CLUBS = 50
# Per club: two public and two federation logs. Never private: it never leaves a node.
LOG_AUDIENCES = ("public", "public", "federation", "federation")
SOURCE_NAME = "Bench source"
RECEIVER_NAME = "Bench receiver"
# The invites made at build time name an address nobody listens on; each run makes a
# fresh invite with the port the source is really serving on.
PLACEHOLDER_URL = "https://127.0.0.1:9"
# Events per transaction while building (at least; whole runs): as ingest commits.
APPEND_EVENTS = 20_000
# Clubs signed but not yet stored, at most this many per worker: bounds the memory.
QUEUED_CLUBS_PER_WORKER = 2

_BASE_TIME_US = 1_795_305_600_000_000  # 2026-11-22T00:00:00Z
_EVENT_SPACING_US = 1_000

# What a worker returns for one club: its genesis and, per log, the descriptor and
# the signed events (signed header, payload) in seq order.
SignedLog = tuple[bytes, list[tuple[bytes, bytes | None]]]
SignedClub = tuple[bytes, list[SignedLog]]


class FixtureInfo(msgspec.Struct, frozen=True):
    version: int
    events: int  # note events, spread over the clubs' shared logs
    expected: int  # events the receiver may receive: the notes and the rosters
    clubs: int
    logs: int  # logs the receiver may receive
    source_club: str
    receiver_club: str
    setup_s: float
    workers: int


@dataclass(frozen=True)
class Fixture:
    root: Path
    info: FixtureInfo
    cached: bool  # found in the cache (False: built by this run)
    load_s: float  # time to find (and check) or build it in this run

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def receiver(self) -> Path:
        return self.root / "receiver"


def cache_dir(events: int) -> Path:
    base = Path(tempfile.gettempdir()) / "federation-bench-cache"
    return base / f"sync-{events}-v{FIXTURE_VERSION}"


def _club_keys(index: int) -> tuple[SigningKey, bytes]:
    """Club `index`'s signing key and genesis, the same on every machine."""
    key = SigningKey(canonical.sha256(f"federation bench: sync club {index}".encode()))
    recovery = SigningKey(canonical.sha256(f"federation bench: sync recovery {index}".encode()))
    genesis = canonical.encode_genesis(
        Genesis(key.public, canonical.sha256(recovery.public), _BASE_TIME_US)
    )
    return key, genesis


def _sign_log(
    key: SigningKey, club: bytes, log: bytes, kind: Kind, payloads: Sequence[bytes]
) -> list[tuple[bytes, bytes | None]]:
    head: Head | None = None
    out: list[tuple[bytes, bytes | None]] = []
    for i, payload in enumerate(payloads):
        event = sign_event(
            key,
            club=club,
            log=log,
            head=head,
            time_us=_BASE_TIME_US + (i + 1) * _EVENT_SPACING_US,
            kind=kind,
            payload=payload,
        )
        head = Head(event.header.seq, event.id)
        out.append((event.signed, event.payload))
    return out


def sign_club(
    index: int, counts: Sequence[int], members: Sequence[tuple[bytes, str]]
) -> SignedClub:
    """Sign club `index`: its roster (adding `members`), then counts[j] notes in log j.

    Runs in a worker process; returns bytes only, which cross the process boundary
    cheaply (a pickled VerifiedEvent costs about ten times more).
    """
    key, genesis = _club_keys(index)
    club = canonical.club_id(genesis)
    roster = roster_descriptor(club)
    added = [
        make_payload(Kind.ROSTER, {"op": "added", "club": member.hex(), "name": name})
        for member, name in members
    ]
    logs: list[SignedLog] = [
        (roster, _sign_log(key, club, canonical.log_id(roster), Kind.ROSTER, added))
    ]
    for j, (kind, count) in enumerate(zip(LOG_AUDIENCES, counts, strict=True)):
        audience = Audience(kind)  # type: ignore[arg-type]
        descriptor = descriptor_bytes(club, f"bench-{kind}-{j}", audience)
        # Texts of every length in every log: offset each log's run through the cycle.
        first = (index * len(LOG_AUDIENCES) + j) * 101
        payloads = [note_payload(first + i) for i in range(count)]
        logs.append(
            (descriptor, _sign_log(key, club, canonical.log_id(descriptor), Kind.NOTE, payloads))
        )
    return genesis, logs


def split_events(events: int) -> list[list[int]]:
    """Note events per club and log: as even as N allows, the remainder to the first logs."""
    slots = SYNC_CLUBS * len(LOG_AUDIENCES)
    each, extra = divmod(events, slots)
    flat = [each + (1 if i < extra else 0) for i in range(slots)]
    n = len(LOG_AUDIENCES)
    return [flat[c * n : (c + 1) * n] for c in range(SYNC_CLUBS)]


async def _store_club(node: Node, signed: SignedClub) -> int:
    """Verify a worker's club as ingest would (the store takes only verified events), store it."""
    genesis, logs = signed
    club = canonical.club_id(genesis)
    key = canonical.decode_genesis(genesis).key
    store = node.store
    await store.put_club(club, genesis)
    pending: list[VerifiedRun] = []
    stored = 0
    for descriptor, run in logs:
        log = canonical.log_id(descriptor)
        await store.put_log(log, descriptor)
        verified, error = verify_run(log, None, run, lambda c, k: c == club and k == key, club=club)
        if error is not None:
            raise error
        pending.append(verified)
        if sum(map(len, pending)) >= APPEND_EVENTS:
            stored += sum(map(len, pending))
            await store.append_runs(pending)
            pending = []
    await store.append_runs(pending)
    return stored + sum(map(len, pending))


def _progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


async def _build(work: Path, events: int, workers: int) -> FixtureInfo:
    start = time.perf_counter()
    source, receiver = work / "source", work / "receiver"
    for path, name in ((source, SOURCE_NAME), (receiver, RECEIVER_NAME)):
        await init_node(path, name=name, listen="127.0.0.1:0", passphrase=None)
    async with await Node.open(source) as s, await Node.open(receiver) as r:
        await peering.add(s, await peering.invite(r, PLACEHOLDER_URL))
        await peering.add(r, await peering.invite(s, PLACEHOLDER_URL))
        members = [(s.club, SOURCE_NAME), (r.club, RECEIVER_NAME)]
        stored = 0
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")  # no fork of a running event loop
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            queued: deque[asyncio.Future[SignedClub]] = deque()
            for index, counts in enumerate(split_events(events)):
                queued.append(loop.run_in_executor(pool, sign_club, index, counts, members))
                while len(queued) > workers * QUEUED_CLUBS_PER_WORKER:
                    stored += await _store_club(s, await queued.popleft())
            while queued:
                stored += await _store_club(s, await queued.popleft())
        roster = await s.store.log(canonical.log_id(roster_descriptor(s.club)))
        own = 0 if roster is None or roster.head is None else roster.head.seq
        held = await s.store.count_events()
    expected = stored + own
    if held != expected:
        raise FederationError(f"fixture holds {held} events, expected {expected}")
    return FixtureInfo(
        version=FIXTURE_VERSION,
        events=events,
        expected=expected,
        clubs=SYNC_CLUBS,
        logs=SYNC_CLUBS * (len(LOG_AUDIENCES) + 1) + 1,
        source_club=s.club.hex(),
        receiver_club=r.club.hex(),
        setup_s=round(time.perf_counter() - start, 1),
        workers=workers,
    )


async def _check(root: Path) -> FixtureInfo | None:
    """The cached fixture at `root`, if it is whole and its store opens and counts right."""
    try:
        info = msgspec.json.decode((root / "fixture.json").read_bytes(), type=FixtureInfo)
        if info.version != FIXTURE_VERSION:
            return None
        async with await Node.open(root / "source") as node:
            if await node.store.count_events() != info.expected:
                return None
        async with await Node.open(root / "receiver"):
            pass
    except (OSError, msgspec.DecodeError, FederationError):
        return None
    return info


async def load_fixture(events: int) -> Fixture:
    """The cached fixture for `events` note events, built (and cached) if missing."""
    start = time.perf_counter()
    root = cache_dir(events)
    info = await _check(root)
    if info is not None:
        _progress(f"sync fixture of {events} events: cached at {root} (built in {info.setup_s} s)")
        return Fixture(root, info, cached=True, load_s=round(time.perf_counter() - start, 1))
    _progress(f"sync fixture of {events} events: building at {root} (cached for later runs)")
    shutil.rmtree(root, ignore_errors=True)
    work = root.parent / f"{root.name}.building-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        info = await _build(work, events, os.cpu_count() or 1)
        (work / "fixture.json").write_bytes(msgspec.json.encode(info))
        work.rename(root)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
        raise
    _progress(f"sync fixture of {events} events: built in {info.setup_s} s")
    return Fixture(root, info, cached=False, load_s=info.setup_s)
