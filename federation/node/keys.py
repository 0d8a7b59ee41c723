"""The club's own key events: `federation key rotate` and `federation key revoke`
(protocol.md §2.2). The rule is `core.keys`; reading key logs and applying windows
is `node.keylog`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from federation.core import crypto
from federation.core.canonical import Audience, Kind, sha256
from federation.core.events import Head, sign_event
from federation.core.evidence import MAX_CARRIED_KEY_EVENTS
from federation.core.ids import short
from federation.core.keys import (
    CUT_ENTRY_BYTES,
    KEY_LOG_NAME,
    CutMark,
    KeyHistory,
    check_key_event,
    padding_entries,
    seal_cut,
    with_event,
)
from federation.core.payloads import make_payload
from federation.errors import UsageError
from federation.node.keylog import apply_windows, signing_key_of
from federation.node.node import REPLACED_BY_REVOCATION, Node
from federation.node.system import random_bytes
from federation.store.base import PAGE_EVENTS

# --- the club's own key events ----------------------------------------------------------


class KeyChangeResult(msgspec.Struct, frozen=True):
    """What `federation key rotate | revoke` did, for the CLI."""

    action: str
    old: bytes
    new: bytes
    seq: int  # the key event's seq in the keys log
    event: bytes
    logs: int  # logs the cut names
    dropped: dict[str, int]  # own log name -> events of ours moved out (outside the window)


async def own_cut(
    node: Node, *, before_us: int | None = None, frozen_too: bool = True
) -> tuple[list[CutMark], dict[str, int]]:
    """The cut of our own logs: each log's head, or its last event made before
    `before_us`; a frozen log (a fork) is cut just below its fork, so both branches
    fall outside the old key's window and the log goes on (protocol.md §2.2). Returns
    the marks and, per log name, how many of our events fall outside."""
    forks: dict[bytes, int] = {}
    if frozen_too:
        for f in await node.store.forks():
            if f.club == node.club and not f.resolved:
                forks[f.log] = min(f.seq, forks.get(f.log, f.seq))
    marks: list[CutMark] = []
    dropped: dict[str, int] = {}
    for record in await node.store.logs():
        if record.club != node.club or record.head is None or record.name == KEY_LOG_NAME:
            continue
        last = record.head.seq
        if record.id in forks:
            last = forks[record.id] - 1
        if before_us is not None:
            last = min(last, await _last_before(node, record.id, before_us))
        if last < record.head.seq:
            dropped[record.name] = record.head.seq - last
        if last == 0:
            continue  # not named: the new key signs the log from seq 1
        kept = await node.store.event_at(record.id, last)
        first = await node.store.event_at(record.id, 1)
        assert kept is not None
        assert first is not None
        marks.append(CutMark(record.id, first.id, last, kept.id))
    return marks, dropped


async def _last_before(node: Node, log: bytes, before_us: int) -> int:
    last, after = 0, 0
    while page := await node.store.events(log, after, PAGE_EVENTS):
        for e in page:
            if e.header.time_us >= before_us:
                return last
            last = e.header.seq
        after = page[-1].header.seq
    return last


def _key_payload(action: str, new: bytes, old: bytes, n: int, marks: list[CutMark]) -> bytes:
    padding = random_bytes(padding_entries(len(marks)) * CUT_ENTRY_BYTES)
    cut = seal_cut(n, marks, padding)
    return make_payload(
        Kind.KEY,
        {"action": action, "key": new.hex(), "revoked": old.hex(), "cut": [e.hex() for e in cut]},
    )


async def rotate(node: Node) -> KeyChangeResult:
    """Hand the club over to a new signing key, signed by the key in force; every
    frozen own log is cut below its fork and carried on (protocol.md §2.2).

    Run again after one that finished, it rotates again, as asked: unlike a second
    revocation this voids nothing. It is signed by the key in force and cut at our
    heads, so every event that key signed stays in its window on every peer, and the
    key it replaces never left this node. Its only cost is one of the key events a
    club may make (`MAX_CARRIED_KEY_EVENTS`), and a routine rotation must not need a flag."""
    old = node.unlock()
    history = node.keys.history(node.club)
    assert history is not None
    if history.current.n >= MAX_CARRIED_KEY_EVENTS:
        # Invites, evidence and agreement records carry the club's key events, at most
        # this many (protocol.md §2.2): one more and none of them would verify. A
        # revocation is never refused so: recovering from a seizure comes first.
        raise UsageError(
            f"the club has changed its key {history.current.n} times, the most its "
            "invites, evidence and agreement records can carry; nothing was changed"
        )
    marks, dropped = await own_cut(node)
    return await _hand_over(node, "rotate", old, history, marks, dropped)


async def revoke(
    node: Node,
    recovery: crypto.SigningKey,
    *,
    before_us: int | None = None,
    again: bool = False,
) -> KeyChangeResult:
    """Revoke the key in this node's key file with the club's recovery key, from its
    own heads or from `before_us`, and continue under a new key (protocol.md §2.2).
    The revocation takes the keys-log seq right after the event that introduced the
    revoked key: whatever the seizer added to the keys log after it is replaced.
    `again`: the key a revocation put in was seized too (`revocation_target`)."""
    steps, result = await revocation_steps(node, recovery, before_us=before_us, again=again)
    for step in steps:
        await step.run()
    return result


async def revocation_steps(
    node: Node,
    recovery: crypto.SigningKey,
    *,
    before_us: int | None = None,
    again: bool = False,
) -> tuple[list[Step], KeyChangeResult]:
    """`revoke`'s writes, not yet made (`key_change_steps`)."""
    j = await check_revoke(node, recovery, before_us=before_us, again=again)
    history = node.keys.history(node.club)
    assert history is not None
    marks, dropped = await own_cut(node, before_us=before_us)
    base = KeyHistory(history.genesis, history.epochs[: j + 1])
    return await key_change_steps(
        node, "revoke", recovery, base, marks, dropped, revoked=history.epochs[j].key
    )


async def check_revoke(
    node: Node, recovery: crypto.SigningKey, *, before_us: int | None, again: bool = False
) -> int:
    """Refuse a revocation that `revoke` would refuse, reading only (the CLI asks this
    before it takes the run lock). Returns the epoch it ends (`revocation_target`)."""
    genesis = node.genesis[node.club]
    if genesis.recovery == bytes(32):
        raise UsageError("this club was made without a recovery key: it cannot revoke its key")
    if sha256(recovery.public) != genesis.recovery:
        raise UsageError(
            "these words are not this club's recovery secret (its genesis names another "
            "recovery key); nothing was changed"
        )
    if before_us is not None and before_us > node.clock():
        when = dt.datetime.fromtimestamp(before_us / 1e6, dt.UTC).isoformat()
        raise UsageError(
            f"--before {when} is in the future: a revocation names a point the club's "
            "logs have reached; nothing was changed"
        )
    if before_us is not None and before_us < genesis.time_us:
        # A point before the club existed would put every event it ever signed outside
        # the window, for good, on every peer: a mistyped year, never a seizure.
        raise UsageError(
            f"--before {_when(before_us)} is before the club was created "
            f"({_when(genesis.time_us)}): give a time after it, or leave --before out to "
            "revoke from this node's heads; nothing was changed"
        )
    history = node.keys.history(node.club)
    assert history is not None
    j = await revocation_target(node, history, again=again)
    epoch = history.epochs[j]
    if before_us is not None and j > 0 and before_us < epoch.time_us:
        # The key signed nothing before its key event: a point before it would void the
        # events of the keys before it (a later, lower cut ends their windows, §2.2).
        raise UsageError(
            f"--before {_when(before_us)} is before key {short(epoch.key)} was put in "
            f"({_when(epoch.time_us)}, seq {epoch.n} of the club's keys log): give a time "
            "after it, or leave --before out to revoke from this node's heads; nothing "
            "was changed"
        )
    return j


async def revocation_target(node: Node, history: KeyHistory, *, again: bool) -> int:
    """The epoch a revocation ends: that of the key in this node's key file, in force
    or not (a seizer may have rotated it away, §2.2).

    A revocation the club already made is never made twice by mistake: its recovery
    secret is not on the node, so a key event after the key file's epoch that is a
    revocation is the club's own. Revoking that key again would put a second
    revocation at the same keys-log seq (a fork of the keys log, §2.2); revoking the
    key a revocation put in would kill the club's fresh key on every peer. Both are
    what rerunning a `key revoke` that finished (or that another command finished,
    `Node.open`) would do, so both are refused unless `again` says the fresh key was
    seized too; then the revocation ends the epoch the club's last revocation began."""
    held = node.key_in_file()  # in force or not: a seizer may have rotated it away
    j = history.epoch_of(held.public)
    if j is None:
        raise UsageError("this node's key is not one of the club's keys; nothing to revoke")
    last = len(history.epochs) - 1
    if j < last and history.epochs[j + 1].action == "revoke":
        revocation = history.epochs[j + 1]
        while j < last and history.epochs[j + 1].action == "revoke":
            j += 1
        if j < last:
            # The key that revocation put in was handed over since: by the club on
            # another node, or by whoever seized it. This node cannot tell which, and a
            # revocation from here would replace that hand-over on every peer.
            later = history.epochs[j + 1]
            raise UsageError(
                f"key {short(held.public)} in this node's key file was revoked at "
                f"{_when(revocation.time_us)}, and key {short(history.epochs[j].key)} it "
                f"put in was handed over since (seq {later.n} of the club's keys log, to "
                f"key {short(later.key)}): this node's key file is older than the club's "
                "keys; run `key revoke` on the node that holds one of those keys. Nothing "
                "was changed"
            )
        if not again:
            raise UsageError(
                f"key {short(held.public)} in this node's key file was already revoked at "
                f"{_when(revocation.time_us)} (seq {revocation.n} of the club's keys log, "
                f"new key {short(revocation.key)}); revoking it twice would fork the keys "
                f"log: nothing was changed. If key {short(history.epochs[j].key)} was "
                "seized too, run `federation key revoke --again` to revoke it as well"
            )
        return j
    epoch = history.epochs[j]
    if again or j < last or epoch.action != "revoke":
        return j  # not put in by a revocation, or a key event since that we did not make
    if await _signed_elsewhere(node, epoch.key):
        return j  # a fork signed by it (§3.6): a copy of it signs elsewhere
    raise UsageError(
        f"the club's key was already revoked at {_when(epoch.time_us)} (seq {epoch.n} of "
        f"its keys log, new key {short(epoch.key)}, in this node's key file): nothing was "
        f"changed. If key {short(epoch.key)} was seized too, run `federation key revoke "
        "--again` to revoke it as well"
    )


async def _signed_elsewhere(node: Node, key: bytes) -> bool:
    """Evidence that `key` signs somewhere else too: a fork of one of the club's own
    logs (two events at one seq, §3.6) with either branch signed by it. The events
    this node signed with it are no such evidence: the node made them."""
    return any(
        key in (signing_key_of(fork.ours), signing_key_of(fork.theirs))
        for fork in await node.store.forks()
        if fork.club == node.club and not fork.resolved
    )


def _when(time_us: int) -> str:
    return dt.datetime.fromtimestamp(time_us / 1e6, dt.UTC).isoformat("T", "seconds")


@dataclass(frozen=True)
class Step:
    """One write of a key change, in the order `key_change_steps` gives them."""

    name: str
    run: Callable[[], Awaitable[object]]


async def _hand_over(
    node: Node,
    action: str,
    signer: crypto.SigningKey,
    base: KeyHistory,
    marks: list[CutMark],
    dropped: dict[str, int],
    *,
    revoked: bytes | None = None,
) -> KeyChangeResult:
    steps, result = await key_change_steps(
        node, action, signer, base, marks, dropped, revoked=revoked
    )
    for step in steps:
        await step.run()
    return result


async def key_change_steps(
    node: Node,
    action: str,
    signer: crypto.SigningKey,
    base: KeyHistory,
    marks: list[CutMark],
    dropped: dict[str, int],
    *,
    revoked: bytes | None = None,
) -> tuple[list[Step], KeyChangeResult]:
    """The key event, signed and checked, and the writes that make it so, in order.

    A crash may stop them anywhere; each state it leaves is finished or undone by the
    next start or by running the command again (tests/seized/test_interrupted.py):
    until the key event is appended, a new `key rotate|revoke` starts over, and the
    staged key (`club.key.next`) is dropped at the next unlock, except after the
    seizer's key events were held apart: the seized key is in force here again, so
    `unlock` refuses and says to run `key revoke` again. Once the event is appended,
    `Node.open` applies the windows and makes the staged key the key file: the key
    file is replaced last, after every event outside the old key's window has moved."""
    old = revoked if revoked is not None else signer.public
    record = await node.own_log(Audience("public"), KEY_LOG_NAME)
    n = base.current.n + 1
    head: Head | None = None
    if n > 1:
        before = await node.store.event_at(record.id, n - 1)
        assert before is not None
        head = Head(n - 1, before.id)
    new = crypto.SigningKey(random_bytes(crypto.SECRET_KEY_BYTES))
    payload = _key_payload(action, new.public, old, n, marks)
    event = sign_event(
        signer,
        club=node.club,
        log=record.id,
        head=head,
        time_us=node.clock(),
        kind=Kind.KEY,
        payload=payload,
    )
    # Our own rule first, before anything is written (core.keys, §2.2).
    epoch = check_key_event(base, event.header, payload)
    history = with_event(base, epoch, event.id, event.header.time_us)

    async def stage() -> None:
        node.stage_signing_key(new)  # finished or rolled back at the next start

    async def replace_seizers() -> None:
        if record.head is not None and record.head.seq >= n:  # the seizer's key events
            reason = f"{REPLACED_BY_REVOCATION} at seq {n} of its keys log"
            await node.store.hold_apart(record.id, n, reason, node.clock())

    async def append() -> None:
        await node.store.append([event])

    async def windows() -> None:
        await node.load_clubs()
        await apply_windows(node.store, history, node.club, node.clock())

    async def key_file() -> None:
        node.replace_signing_key(new)

    steps = [
        Step("stage the next key", stage),
        Step("hold apart the seizer's key events", replace_seizers),
        Step("append the key event", append),
        Step("apply the new windows", windows),
        Step("make the next key the key file", key_file),
    ]
    result = KeyChangeResult(action, old, new.public, n, event.id, len(marks), dropped)
    return steps, result
