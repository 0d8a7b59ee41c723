"""`federation verify`: check every club, log, chain link, payload and signature held.

Unlike ingest (which may use the bulk shortcut of protocol.md §4.4), the audit
checks every signature one by one: it is the answer to "is everything I hold what
its club signed?", and it also catches an invalid signature that a club's own key
committed to. It reads the stored bytes, not decoded rows, so a flipped byte is
reported where it is: club, log, seq and what is wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import msgspec

from federation.core import canonical
from federation.core.canonical import Genesis
from federation.core.events import Head, KeyCheck, verify_run
from federation.core.ids import short
from federation.core.keys import KeyHistory, check_key_event, first_outside, key_log_id, with_event
from federation.errors import FederationError
from federation.node import keylog
from federation.store.base import PAGE_EVENTS, ForkRecord, LogRecord, LogStore


class Problem(msgspec.Struct, frozen=True):
    club: str
    log: str
    seq: int | None
    reason: str

    def __str__(self) -> str:
        where = f"club {self.club[:12]} log {self.log[:12]}"
        if self.seq is not None:
            where += f" seq {self.seq}"
        return f"{where}: {self.reason}"


class VerifyReport(msgspec.Struct):
    clubs: int = 0
    logs: int = 0
    events: int = 0
    erased: int = 0
    problems: list[Problem] = msgspec.field(default_factory=list)
    forks: list[ForkRecord] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything held verifies (a fork is evidence, not a problem of the store)."""
        return not self.problems

    @property
    def unresolved(self) -> list[ForkRecord]:
        """Forks no later key event carried on (protocol.md §2.2, §3.6): `federation
        verify` fails while there is one."""
        return [f for f in self.forks if not f.resolved]


async def verify_store(
    store: LogStore, authorized: KeyCheck, advance: Callable[[int], None] | None = None
) -> VerifyReport:
    """Audit everything held. `advance(n)` is told of every n events checked."""
    report = VerifyReport()
    clubs = await store.clubs()
    report.clubs = len(clubs)
    for club_id, genesis in clubs.items():
        try:
            canonical.decode_genesis(genesis)
            if canonical.club_id(genesis) != club_id:
                raise FederationError("club id is not the hash of its genesis")
        except FederationError as exc:
            report.problems.append(Problem(club_id.hex(), "", None, f"club genesis: {exc}"))
    decoded: dict[bytes, Genesis] = {}
    for club_id, g in clubs.items():
        with contextlib.suppress(FederationError):
            decoded[club_id] = canonical.decode_genesis(g)
    # Each club's key epochs (protocol.md §2.2): its key log is checked event by event
    # against them, and every other log against their windows.
    histories = await keylog.load_histories(store, decoded)
    for record in await store.logs():
        report.logs += 1
        club, log = record.club.hex(), record.id.hex()
        if canonical.log_id(record.descriptor) != record.id:
            report.problems.append(Problem(club, log, None, "log id is not its descriptor's hash"))
            continue
        if record.club not in clubs:
            report.problems.append(Problem(club, log, None, "the club's genesis is missing"))
            continue
        is_key_log = record.id == key_log_id(record.club)
        problem = await _verify_log(
            store,
            record,
            # Who may sign a key event is check_key_event's rule, checked below.
            _any_key_of(record.club) if is_key_log else authorized,
            report,
            advance,
        )
        if problem is None and record.club in decoded:
            problem = await _check_keys(store, record, decoded[record.club], histories, is_key_log)
        if problem is None:
            continue
        report.problems.append(Problem(club, log, problem[0], problem[1]))
    report.forks = await store.forks()
    return report


async def _verify_log(
    store: LogStore,
    record: LogRecord,
    authorized: KeyCheck,
    report: VerifyReport,
    advance: Callable[[int], None] | None,
) -> tuple[int | None, str] | None:
    """Check one log page by page; the first problem as (seq, reason), or None."""
    log = record.id
    after: Head | None = None
    while True:
        page = await store.raw_events(log, after.seq if after else 0, PAGE_EVENTS)
        verified, error = verify_run(
            log,
            after,
            [(r.signed, r.payload) for r in page],
            authorized,
            club=record.club,
            every_signature=True,
        )
        report.events += len(verified)
        report.erased += sum(1 for payload in verified.payloads if payload is None)
        if advance is not None:
            advance(len(verified))
        if error is not None:
            return page[len(verified)].seq, error.reason
        after = verified.head
        if len(page) < PAGE_EVENTS:
            break
    stored = await store.log(log)
    if stored is not None and stored.head != after:
        held = stored.head.seq if stored.head else 0
        return (
            None,
            f"log head says seq {held} but the events end at seq {after.seq if after else 0}",
        )
    return None


def _any_key_of(club: bytes) -> KeyCheck:
    return lambda c, k: c == club


async def _check_keys(
    store: LogStore,
    record: LogRecord,
    genesis: Genesis,
    histories: Mapping[bytes, KeyHistory],
    is_key_log: bool,
) -> tuple[int | None, str] | None:
    """protocol.md §2.2: the key log's events follow one another by the key rule, and
    every other event's key may sign it where it stands (its window)."""
    if is_key_log:
        history = KeyHistory.of(genesis)
        for e in await store.events(record.id, 0, PAGE_EVENTS):
            try:
                epoch = check_key_event(history, e.header, e.payload)
            except FederationError as exc:
                return e.header.seq, str(exc)
            history = with_event(history, epoch, e.id, e.header.time_us)
        return None
    epochs = histories.get(record.club)
    if epochs is None:
        return None
    first = await keylog.first_id(store, record.id)
    after = 0
    while first is not None and (page := await store.raw_events(record.id, after, PAGE_EVENTS)):
        found = first_outside(
            epochs,
            record.id,
            first,
            (
                (r.seq, canonical.decode_header(r.signed).key, canonical.sha256(r.signed))
                for r in page
            ),
        )
        if found is not None:
            return found
        after = page[-1].seq
    return None


def describe_fork(fork: ForkRecord) -> str:
    where = f"club {short(fork.club)} log {short(fork.log)} seq {fork.seq}"
    if fork.resolved:
        return (
            f"{where}: fork (two signed events), resolved: a later key event's cut left "
            "both outside the old key's window, and the log goes on (both are kept as evidence)"
        )
    return (
        f"{where}: fork (two signed events); the log is frozen and both are kept as "
        "evidence. If it is this club's own log, carry it on with `federation key rotate`"
    )
