"""Ingest: verify received clubs, logs and event runs and store them (protocol.md §4, §6.3).

Used by sync and by import. A run is verified against the log's head with the bulk
shortcut of §4.4, then appended; events at seqs we already hold are compared: the
same bytes are skipped (idempotence), different validly signed bytes are a fork,
kept as evidence, and the log is frozen. Appends are batched into large
transactions, and the next batch is verified while the last one commits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import ChainMap
from collections.abc import AsyncIterator, Sequence

from federation.core import canonical
from federation.core.canonical import Genesis
from federation.core.events import (
    Head,
    VerifiedEvent,
    VerifiedRun,
    runs_of,
    verify_event,
    verify_run,
)
from federation.core.keys import (
    KeyAuthority,
    KeyHistory,
    check_key_event,
    first_outside,
    key_log_id,
    revoke_beats,
    with_event,
)
from federation.core.log import fork_between
from federation.errors import FederationError, ForkError, InvalidEventError
from federation.node import keylog, projector
from federation.node.system import Clock
from federation.node.tasks import open_task_group
from federation.store.base import ForkRecord, LogRecord, Store
from federation.sync import quota as quotas
from federation.sync.quota import Quota, Refusal

# Events per transaction: one commit per this many events keeps the commit cost small
# per event, while a crash loses at most this much re-fetchable work (nothing
# acknowledged: a peer's events are re-sent on the next round). The commits are made
# durable together, once, when the ingest closes (a power cut before that loses at
# most its commits: the store keeps a prefix of them).
COMMIT_EVENTS = 20_000


class Ingest:
    def __init__(
        self,
        store: Store,
        genesis: dict[bytes, Genesis],
        clock: Clock,
        *,
        allow_private: bool = False,
        group: asyncio.TaskGroup | None = None,
        quota: Quota | None = None,
    ) -> None:
        """`allow_private`: take private logs (an import of our own backup), never from a peer.
        `group`: where a commit runs while the next batch is verified (`open_ingest`);
        without one, each commit is awaited where it is made. `quota`: what a peer's
        answer may add (protocol.md §6.4); None for an import, which the operator chose."""
        self.quota = quota
        self.refused: dict[bytes, Refusal] = {}  # log -> why it was not taken
        self.store = store
        self._group = group
        self.allow_private = allow_private
        self.genesis = genesis
        self.clock = clock
        self.heads: dict[bytes, Head | None] = {}
        self.clubs: dict[bytes, bytes] = {}  # log -> the club of its descriptor
        self.frozen: set[bytes] = set()
        self.added = 0
        self.already = 0
        self.forks: list[ForkError] = []
        self.filled = 0  # missing payloads filled in (§6.3)
        self.erased = 0  # payloads erased by the erasure events taken (§3.5)
        self._pending: list[VerifiedRun] = []
        self._pending_events = 0
        self._offered: dict[bytes, bytes] = {}  # club -> genesis a peer sent, not stored
        self._candidates: dict[bytes, Genesis] = {}  # the same, decoded and checked
        # Each club's key epochs (protocol.md §2.2), read from its key log on first use.
        self.histories: dict[bytes, KeyHistory] = {}
        self._histories_read: set[bytes] = set()
        self._firsts: dict[bytes, bytes] = {}  # log -> id of its event 1 (cut entries)
        self._key_logs: dict[bytes, bytes] = {}  # club -> its key log id (§2.2)
        self.held_apart = 0  # events moved out of their logs by key events taken
        self._keys = KeyAuthority(ChainMap(self.genesis, self._candidates), self.histories)
        self._unstored: dict[bytes, tuple[bytes, bytes]] = {}  # log -> (descriptor, club)
        # A peer's clubs and logs whose first events verified: stored with those events,
        # in their transaction (a write of their own would wait for the commit ahead).
        self._new_clubs: dict[bytes, bytes] = {}
        self._new_logs: dict[bytes, bytes] = {}
        self._records: dict[bytes, LogRecord] | None = None
        self._commit: asyncio.Task[None] | None = None

    def authorized(self, club: bytes, key: bytes) -> bool:
        """protocol.md §2.2, decided by `core.keys`: for the clubs we hold, and for
        those a peer offered with a log we asked for (stored once an event verifies)."""
        return self._keys.may_sign(club, key)

    async def club(self, club: bytes, genesis: bytes) -> None:
        g = canonical.decode_genesis(genesis)
        if canonical.club_id(genesis) != club:
            raise InvalidEventError("club id is not the hash of its genesis", club=club)
        if club not in self.genesis:
            await self.store.put_club(club, genesis)
            self.genesis[club] = g

    def offer_club(self, club: bytes, genesis: bytes, *, limit: int) -> None:
        """A peer's club record: kept aside, and stored only once a log we asked for
        names that club, so a peer cannot fill our store with clubs nobody uses."""
        if club in self.genesis:
            return
        if self.quota is not None and self.quota.refuse_club(club) is not None:
            return  # a blocked club: its logs are refused, and reported, as they come
        if len(self._offered) >= limit:
            raise InvalidEventError("peer offered more clubs than the logs it was asked for")
        self._offered[club] = genesis

    async def log(self, log: bytes, descriptor: bytes) -> None:
        """A log's descriptor. From a peer (allow_private False) it is kept aside with
        its club, and both are stored only once one of its events verifies: a peer
        cannot fill our store with clubs and logs that hold nothing (protocol.md §6.3)."""
        d = canonical.decode_log(descriptor)
        if canonical.log_id(descriptor) != log:
            raise InvalidEventError("log id is not the hash of its descriptor", log=log)
        if d.audience.kind == "private" and not self.allow_private:
            raise InvalidEventError("a private log never leaves its node", log=log)
        if self.quota is not None:  # before anything is kept or verified (§6.4)
            refusal = None
            if d.club in self.quota.blocked or await self._record(log) is None:
                refusal = self.quota.check(log, d.club, new_club=d.club not in self.genesis)
            if refusal is not None:
                self.refused[log] = refusal
                return
        if d.club not in self.genesis and d.club in self._offered:
            genesis = self._offered[d.club]
            if canonical.club_id(genesis) != d.club:
                raise InvalidEventError("club id is not the hash of its genesis", club=d.club)
            self._candidates[d.club] = canonical.decode_genesis(genesis)
        if d.club not in self.genesis and d.club not in self._candidates:
            raise InvalidEventError("log of a club whose genesis was not given", log=log)
        if self.allow_private:
            await self.store.put_log(log, descriptor)
            if self._records is not None:  # it holds this log now (one read, not all)
                record = await self.store.log(log)
                if record is not None:
                    self._records[log] = record
        elif await self._record(log) is None:
            self._unstored[log] = (descriptor, d.club)

    def _keep_new_log(self, log: bytes) -> bool:
        """The first event of a log from a peer verified: keep its club and log with it,
        unless a quota refuses them now (False): then nothing of the log is stored."""
        descriptor, club = self._unstored.pop(log)
        if self.quota is not None:
            refusal = self.quota.take(log, club, new_club=club not in self.genesis)
            if refusal is not None:
                self.refused[log] = refusal
                return False
        if club not in self.genesis:
            self._new_clubs[club] = self._offered.pop(club)
            self.genesis[club] = self._candidates.pop(club)
        self._new_logs[log] = descriptor
        return True

    def warnings(self) -> list[str]:
        """What was refused over a quota or as blocked: warnings, not errors (§6.4)."""
        return quotas.warnings(self.refused)

    async def _record(self, log: bytes) -> LogRecord | None:
        """The log as the store held it when this ingest began (None: not held then).
        Read in one query: a read a log would queue behind the commit running on the
        store's thread (a bulk sync of many new logs waited seconds so). The heads are
        as fresh as the frontier the round compared, whose want asked for the
        descriptor of every log not held then; should another peer's ingest store the
        same log or events meanwhile, the store keeps only what is new of ours
        (store.append_runs, the chain rule), and a different event at a held seq is
        refused."""
        if self._records is None:
            self._records = {r.id: r for r in await self.store.logs()}
        return self._records.get(log)

    async def _head(self, log: bytes) -> Head | None:
        if log not in self.heads:
            record = await self._record(log)
            if record is None and log in self._unstored:
                self.heads[log] = None
                self.clubs[log] = self._unstored[log][1]
                return None
            if record is None:
                raise InvalidEventError("events of a log whose descriptor was not given", log=log)
            if record.frozen:
                self.frozen.add(log)
            self.heads[log] = record.head
            self.clubs[log] = record.club
        return self.heads[log]

    async def run(
        self, log: bytes, events: Sequence[tuple[bytes, bytes | None]]
    ) -> tuple[int, FederationError | None]:
        """Verify a run of one log and queue its valid prefix.

        Returns how many of the events were taken (queued or already held) and the
        error that stopped the rest, if any. A refused log's events are skipped: none
        taken, no error (the rest of the answer still lands).
        """
        if log in self.refused:
            return 0, None
        head = await self._head(log)
        club = self.clubs[log]
        await self._read_history(club)
        if log == self._key_log(club):
            return await self._key_run(log, club, events)
        if log in self.frozen:
            return 0, InvalidEventError("log is frozen after a fork; not taking more", log=log)
        start = 0
        while start < len(events) and head is not None:
            signed, payload = events[start]
            try:
                seq = canonical.decode_header(signed).seq
            except InvalidEventError:
                break  # verify_run reports it with its place
            if not 0 < seq <= head.seq:
                break
            problem = await self._held(log, seq, signed, payload)
            if problem is not None:
                return start, problem
            start += 1
        rotated = self._keys.rotated(club)
        # §4.4's shortcut lets the last signature vouch for the run; where the club's
        # keys changed within it, every signature is checked (protocol.md §2.2).
        every = rotated and len({keylog.signing_key_of(signed) for signed, _ in events[start:]}) > 1
        verified, error = verify_run(
            log, head, events[start:], self.authorized, club=club, every_signature=every
        )
        if verified and rotated:
            verified, outside = await self._in_windows(club, verified)
            error = outside or error
        if verified and log in self._unstored and not self._keep_new_log(log):
            return 0, None  # over a quota: nothing of it is stored
        if verified:
            self.heads[log] = verified.head
            self._pending.append(verified)
            self._pending_events += len(verified)
            if self._pending_events >= COMMIT_EVENTS:
                await self.flush(wait=False)
        return start + len(verified), error

    async def _held(
        self, log: bytes, seq: int, signed: bytes, payload: bytes | None
    ) -> FederationError | None:
        """An event at a seq we hold: the same one (skip) or a fork (keep the proof)."""
        await self.flush()
        held = await self.store.event_at(log, seq)
        if held is None:
            return InvalidEventError("held event missing from the store", log=log, seq=seq)
        if held.signed == signed:
            self.already += 1
            if held.payload is None and payload is not None:
                return await self._fill(log, seq, held, payload)
            return None
        try:  # a fork counts only if the other event is validly signed
            theirs = verify_event(signed, payload, self.authorized)
        except InvalidEventError as exc:
            return exc
        if self._keys.rotated(theirs.header.club):  # a key outside its window forks nothing
            _, outside = await self._in_windows(theirs.header.club, runs_of([theirs])[0])
            if outside is not None:
                return outside
        try:
            # Fork evidence is evidence (protocol.md §3.6): both headers must verify on
            # their own. Ours may have been stored inside a run, where only the run's
            # last signature was checked (§4.4): check its own signature now.
            verify_event(held.signed, None, self.authorized)
        except InvalidEventError:
            return InvalidEventError(
                "another event at a seq we hold, but ours is signed only through the "
                "chain: not portable proof of a fork; not recording it",
                club=theirs.header.club,
                log=log,
                seq=seq,
            )
        fork = fork_between(held, theirs)
        if fork is None:
            return InvalidEventError(
                "event does not belong at this log and seq",
                club=theirs.header.club,
                log=log,
                seq=seq,
            )
        await self.store.record_fork(
            ForkRecord(theirs.header.club, log, seq, held.signed, signed, self.clock())
        )
        self.frozen.add(log)
        self.forks.append(fork)
        return fork

    # --- key events (protocol.md §2.2) ---------------------------------------------

    def _key_log(self, club: bytes) -> bytes:
        found = self._key_logs.get(club)
        if found is None:
            found = self._key_logs[club] = key_log_id(club)
        return found

    async def _read_history(self, club: bytes) -> None:
        if club in self._histories_read:
            return
        self._histories_read.add(club)
        g = self.genesis.get(club) or self._candidates.get(club)
        if self._records is None:
            self._records = {r.id: r for r in await self.store.logs()}
        # From the records read once per ingest: no query per club (the hot path).
        if g is None or key_log_id(club) not in self._records:
            return
        history = await keylog.read_history(self.store, club, g)
        if history.rotated:
            self.histories[club] = history

    async def _first(self, log: bytes, run: VerifiedRun) -> bytes:
        if log not in self._firsts:
            if run.after is None:
                self._firsts[log] = run.ids[0]
            else:
                await self.flush()
                found = await keylog.first_id(self.store, log)
                self._firsts[log] = run.ids[0] if found is None else found
        return self._firsts[log]

    async def _in_windows(
        self, club: bytes, run: VerifiedRun
    ) -> tuple[VerifiedRun, InvalidEventError | None]:
        """The prefix of a verified run whose events' keys may sign them where they
        stand (protocol.md §2.2), and the error naming the first that may not."""
        history = self.histories[club]
        first = await self._first(run.log, run)
        found = first_outside(
            history,
            run.log,
            first,
            (
                (run.first + i, keylog.signing_key_of(signed), eid)
                for i, (signed, eid) in enumerate(zip(run.signed, run.ids, strict=True))
            ),
        )
        if found is None:
            return run, None
        seq, reason = found
        n = seq - run.first
        kept = VerifiedRun(
            run.log, run.club, run.after, run.ids[:n], run.signed[:n], run.payloads[:n]
        )
        return kept, InvalidEventError(reason, club=club, log=run.log, seq=seq)

    async def _key_run(
        self, log: bytes, club: bytes, events: Sequence[tuple[bytes, bytes | None]]
    ) -> tuple[int, FederationError | None]:
        """A club's key log: each event checked on its own, signature and all, against
        the epochs before it, and taken at once; then the club's windows are applied
        to every log of it held here (protocol.md §2.2). Key logs are a few events."""
        await self.flush()
        g = self.genesis.get(club) or self._candidates.get(club)
        if g is None:  # pragma: no cover - _head checked the log's club
            return 0, InvalidEventError("key log of an unknown club", log=log)
        history = self.histories.get(club) or KeyHistory.of(g)
        taken = 0
        changed = False
        for signed, payload in events:
            try:
                # Any key here: which one may sign a key event is check_key_event's rule.
                event = verify_event(signed, payload, lambda c, k: c == club)
                h = event.header
                if h.log != log:
                    raise InvalidEventError("event belongs to another log", club=club, log=log)
                record = await self.store.log(log)
                held = None if record is None or record.head is None else record.head.seq
                if held is not None and h.seq <= held:
                    old = await self.store.event_at(log, h.seq)
                    assert old is not None
                    if old.signed == signed:
                        self.already += 1
                        taken += 1
                        continue
                    base = history.before(h.seq)
                    epoch = check_key_event(base, h, payload)
                    if epoch.action != "revoke" and not revoke_beats(old.header, old.payload):
                        # The held event is the club's revocation, which beats any
                        # key event at its seq that is not one (§2.2): a rotation a
                        # relay sends after it (the seizer's) is refused, no fork.
                        raise InvalidEventError(
                            "replaced by the club's revocation at this seq of its keys log",
                            club=club,
                            log=log,
                            seq=h.seq,
                        )
                    if epoch.action != "revoke" or not revoke_beats(old.header, old.payload):
                        return taken, await self._key_fork(old, event)
                    if h.prev != old.header.prev:
                        raise InvalidEventError(
                            "previous-hash link broken (the event does not follow the one "
                            "before it)",
                            club=club,
                            log=log,
                            seq=h.seq,
                        )
                    await self.store.hold_apart(
                        log,
                        h.seq,
                        f"replaced by the club's revocation at seq {h.seq} of its keys log",
                        self.clock(),
                    )
                    history = base
                else:
                    # The chain rule first (§3.4), with its own clear messages: a gap,
                    # or an event that does not follow the head held.
                    if h.seq != (held or 0) + 1:
                        raise InvalidEventError(
                            f"seq gap in the keys log: expected seq {(held or 0) + 1}, got {h.seq}",
                            club=club,
                            log=log,
                            seq=h.seq,
                        )
                    if record is not None and record.head is not None and h.prev != record.head.id:
                        raise InvalidEventError(
                            "previous-hash link broken (the event does not follow the one "
                            "before it)",
                            club=club,
                            log=log,
                            seq=h.seq,
                        )
                    epoch = check_key_event(history, h, payload)
                if log in self._unstored and not self._keep_new_log(log):
                    return 0, None
                self.heads[log] = Head(h.seq, event.id)
                await self._store_key_event(event)
                history = with_event(history, epoch, event.id, h.time_us)
                self.histories[club] = history
                changed = True
                taken += 1
            except InvalidEventError as exc:
                if changed:
                    await self._apply_windows(club, history)
                return taken, exc
        if changed:
            await self._apply_windows(club, history)
        return taken, None

    async def _store_key_event(self, event: VerifiedEvent) -> None:
        self._pending.append(runs_of([event])[0])
        self._pending_events += 1
        await self.flush()

    async def _key_fork(self, held: VerifiedEvent, theirs: VerifiedEvent) -> FederationError:
        """Two key events at one seq where neither replaces the other (two revocations:
        the recovery secret signed twice): a real fork of the key log (§3.6)."""
        fork = fork_between(held, theirs)
        if fork is None:
            return InvalidEventError(
                "event does not belong at this log and seq",
                club=theirs.header.club,
                log=theirs.header.log,
                seq=theirs.header.seq,
            )
        await self.store.record_fork(
            ForkRecord(
                theirs.header.club,
                theirs.header.log,
                theirs.header.seq,
                held.signed,
                theirs.signed,
                self.clock(),
            )
        )
        self.frozen.add(theirs.header.log)
        self.forks.append(fork)
        return fork

    async def _apply_windows(self, club: bytes, history: KeyHistory) -> None:
        """Move out of the club's logs what its keys may no longer sign there, and
        forget the heads read before (they may be lower now, and logs unfrozen)."""
        await self.flush()
        self.held_apart += await keylog.apply_windows(self.store, history, club, self.clock())
        self._records = None
        self.heads.clear()
        self.frozen.clear()

    async def _fill(
        self, log: bytes, seq: int, held: VerifiedEvent, payload: bytes
    ) -> FederationError | None:
        """The same event with the payload we lack (protocol.md §6.3): from any peer,
        kept if it matches the header's hash and size and is missing here, not erased
        by its origin or wiped here (the store decides, `fill_payload`)."""
        h = held.header
        if len(payload) != h.payload_size or canonical.sha256(payload) != h.payload_hash:
            return InvalidEventError(
                "payload does not match its header's hash and size",
                club=h.club,
                log=log,
                seq=seq,
            )
        # Made durable with the answer's commits, at `aclose` (§6.3): one fsync, not one
        # a payload.
        if await self.store.fill_payload(log, seq, payload, durable=False):
            self.filled += 1
        return None

    async def flush(self, *, wait: bool = True) -> None:
        """Commit what is queued. With wait=False the commit runs while the caller
        goes on verifying; the next flush waits for it first, so commits stay in order."""
        if self._commit is not None:
            task, self._commit = self._commit, None
            await task
        if self._pending:
            batch, self._pending = self._pending, []
            clubs, self._new_clubs = self._new_clubs, {}
            logs, self._new_logs = self._new_logs, {}
            self.added += self._pending_events
            self._pending_events = 0
            commit = self._append(batch, clubs, logs)
            if self._group is None:
                await commit
            else:
                self._commit = self._group.create_task(commit)
        if wait and self._commit is not None:
            task, self._commit = self._commit, None
            await task

    async def _append(
        self, batch: list[VerifiedRun], clubs: dict[bytes, bytes], logs: dict[bytes, bytes]
    ) -> None:
        # Not fsynced one by one: a power cut loses at most this ingest's commits,
        # which the peer sends again; `aclose` makes them durable (store.base).
        self.erased += await self.store.append_runs(batch, clubs=clubs, logs=logs, durable=False)

    async def aclose(self) -> None:
        """Commit everything queued (call on success and on error alike). Where a
        payload was erased or filled in, the views fold its log again now, so no
        erased text stays in their saved rows (the store already reset their read
        position, so they never show it meanwhile: node.projector)."""
        try:
            await self.flush()
        finally:  # what was committed before a failure is kept: made durable too
            await self.store.make_durable()
        if self.erased or self.filled or self.held_apart:
            await projector.catch_up(self.store)


@contextlib.asynccontextmanager
async def open_ingest(
    store: Store,
    genesis: dict[bytes, Genesis],
    clock: Clock,
    *,
    allow_private: bool = False,
    quota: Quota | None = None,
) -> AsyncIterator[Ingest]:
    """An Ingest whose background commits are owned by a TaskGroup; on leaving, what
    is queued is committed, on success and on error alike (a valid prefix is kept:
    DESIGN principle 14)."""
    async with open_task_group() as group:
        ingest = Ingest(
            store, genesis, clock, allow_private=allow_private, group=group, quota=quota
        )
        try:
            yield ingest
        finally:
            await ingest.aclose()
