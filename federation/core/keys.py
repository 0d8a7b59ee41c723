"""Keys: the one authority on which keys may sign for a club (protocol.md §2.2).

Verification (`events.verify_event`, `events.verify_run`), ingest, request tokens
(`sync.auth`) and unlocking the node's own key all ask here, never compare keys
themselves.

A club's keys come in **epochs**: the genesis key first, then one epoch per key
event (kind KEY) of the club's log named `keys` (audience public), in that log's
order. A key event hands over to a new key with a **cut**: for each of the club's
logs, the last event (seq and id) the replaced key's epoch keeps. So epoch j's key
may sign log L at seq s iff lo_j(L) < s <= hi_j(L) (its **window**), where lo_j is
the cut of epoch j (0 for the genesis, and for a log its cut does not name) and hi_j
the lowest cut of any later epoch (infinite for the last epoch; a log a cut does not
name is cut at 0), so windows never overlap even when a later cut goes below an
earlier one (fork recovery). A
`rotate` is signed by the key in force; a `revoke` by the club's recovery key, whose
sha256 the genesis holds. Cut entries are sealed (§2.2): only a holder of a log,
who knows its first event's id, can find and open the entry of that log.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from federation.core import canonical, crypto
from federation.core.canonical import (
    CUT_ID_TAG,
    CUT_KEY_TAG,
    VERSION,
    ZERO_HASH,
    Audience,
    Genesis,
    Header,
    Kind,
    LogDescriptor,
    sha256,
)
from federation.errors import InvalidEventError

# The predicate verifiers take: (club, key) -> may `key` sign for `club` at all (§2.2).
# `KeyAuthority.may_sign` is one; a test may pass a narrower one of its own. Where in
# a log a key may sign is its window (`KeyAuthority.window`), which ingest applies.
KeyCheck = Callable[[bytes, bytes], bool]

KEY_LOG_NAME = "keys"
# A cut entry: a 32-byte tag, then u64 seq || 32-byte id sealed (40 + 16 bytes).
CUT_TAG_BYTES = 32
CUT_SEALED_BYTES = 8 + 32 + 16
CUT_ENTRY_BYTES = CUT_TAG_BYTES + CUT_SEALED_BYTES  # 88
# Entries are padded with random ones to a multiple of this (at least this many), so
# the count tells a reader of the public key log at most the club's logs to within 8.
CUT_PAD = 8
_NONCE = bytes(crypto.AEAD_NONCE_BYTES)  # the sealing key is unique per entry
INFINITE = math.inf
Window = tuple[int, float]  # (lo, hi): the key may sign seqs lo < s <= hi


def key_log_descriptor(club: bytes) -> bytes:
    return canonical.encode_log(LogDescriptor(club, KEY_LOG_NAME, Audience("public")))


def key_log_id(club: bytes) -> bytes:
    """Every node can compute any club's key log id from the club id alone."""
    return canonical.log_id(key_log_descriptor(club))


# --- sealed cut entries ----------------------------------------------------------------


def _derive(tag: bytes, log: bytes, first: bytes, n: int) -> bytes:
    return sha256(tag + bytes([VERSION]) + log + first + struct.pack(">Q", n))


def cut_tag(log: bytes, first: bytes, n: int) -> bytes:
    """The tag of log `log`'s entry in the key event at key-log seq `n`; `first` is the
    id of the log's event 1."""
    return _derive(CUT_ID_TAG, log, first, n)


def seal_cut_entry(log: bytes, first: bytes, n: int, seq: int, event: bytes) -> bytes:
    key = _derive(CUT_KEY_TAG, log, first, n)
    sealed = crypto.seal(key, _NONCE, struct.pack(">Q", seq) + event, b"")
    return cut_tag(log, first, n) + sealed


def open_cut_entry(entry: bytes, log: bytes, first: bytes, n: int) -> tuple[int, bytes] | None:
    """(seq, event id) if `entry` is log `log`'s, else None."""
    if len(entry) != CUT_ENTRY_BYTES or entry[:CUT_TAG_BYTES] != cut_tag(log, first, n):
        return None
    opened = crypto.open_sealed(
        _derive(CUT_KEY_TAG, log, first, n), _NONCE, entry[CUT_TAG_BYTES:], b""
    )
    if opened is None or len(opened) != 8 + 32:
        return None
    return struct.unpack(">Q", opened[:8])[0], opened[8:]


def padding_entries(count: int) -> int:
    """How many random entries pad `count` real ones (§2.2)."""
    total = max(CUT_PAD, -(-count // CUT_PAD) * CUT_PAD)
    return total - count


class CutMark(msgspec.Struct, frozen=True):
    """Where the replaced key's window ends in one log: that log's first event id and
    the last event (seq, id) kept."""

    log: bytes
    first: bytes
    seq: int
    event: bytes


def seal_cut(n: int, marks: Sequence[CutMark], padding: bytes) -> tuple[bytes, ...]:
    """The sealed entries of a key event at key-log seq `n`, with random entries cut
    from `padding` (CUT_ENTRY_BYTES * padding_entries(len(marks)) random bytes, drawn
    by the shell), sorted so their order tells nothing."""
    dummies = padding_entries(len(marks))
    if len(padding) != dummies * CUT_ENTRY_BYTES:
        raise ValueError(f"padding must be {dummies * CUT_ENTRY_BYTES} random bytes")
    entries = [seal_cut_entry(m.log, m.first, n, m.seq, m.event) for m in marks]
    entries += [padding[i * CUT_ENTRY_BYTES : (i + 1) * CUT_ENTRY_BYTES] for i in range(dummies)]
    return tuple(sorted(entries))


# --- key events and the club's epochs ---------------------------------------------------


class KeyChangeFields(msgspec.Struct, frozen=True):
    """A key event's payload as the key rule reads it (lenient: core.payloads.KeyChange
    is what a maker checks)."""

    action: str
    key: str
    revoked: str
    cut: tuple[str, ...] = ()


_key_change = msgspec.json.Decoder(KeyChangeFields)


@dataclass(frozen=True)
class Epoch:
    """One key's time as the club's signing key: from key-log seq `n` (0: genesis)."""

    key: bytes
    n: int
    action: str  # "genesis", "rotate" or "revoke"
    cut: tuple[bytes, ...] = ()  # the sealed entries of the event that began it
    event: bytes = ZERO_HASH  # that event's id
    time_us: int = 0
    # The cut's entries by tag: finding a log's entry costs one hash, not one an entry
    # (a cut a document carries may hold hundreds, checked for each event it shows).
    by_tag: Mapping[bytes, tuple[bytes, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[bytes, tuple[bytes, ...]] = {}
        for entry in self.cut:
            index[entry[:CUT_TAG_BYTES]] = (*index.get(entry[:CUT_TAG_BYTES], ()), entry)
        object.__setattr__(self, "by_tag", index)


@dataclass
class _LogWindows:
    """KeyHistory.window_at's work for one log: windows from the last epoch down, and
    the lowest cut among them."""

    found: list[tuple[Window, bytes | None]] = field(default_factory=list)
    end: tuple[float, bytes | None] = (INFINITE, None)


@dataclass(frozen=True)
class KeyHistory:
    """A club's epochs, oldest first; the last one's key signs now."""

    genesis: Genesis
    epochs: tuple[Epoch, ...]
    # The windows `window_at` worked out, by (log, first): the history never changes,
    # and a document or a run shows many events of one log.
    _windows: dict[tuple[bytes, bytes | None], _LogWindows] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def of(cls, genesis: Genesis) -> KeyHistory:
        return cls(genesis, (Epoch(genesis.key, 0, "genesis", time_us=genesis.time_us),))

    @property
    def current(self) -> Epoch:
        return self.epochs[-1]

    @property
    def keys(self) -> frozenset[bytes]:
        return frozenset(e.key for e in self.epochs)

    @property
    def rotated(self) -> bool:
        return len(self.epochs) > 1

    def before(self, seq: int) -> KeyHistory:
        """The epochs begun before key-log seq `seq`: what was in force at seq - 1."""
        return KeyHistory(self.genesis, tuple(e for e in self.epochs if e.n < seq))

    def epoch_of(self, key: bytes) -> int | None:
        for j, e in enumerate(self.epochs):
            if e.key == key:
                return j
        return None

    def window(self, log: bytes, first: bytes | None, key: bytes) -> Window | None:
        """Where `key` may sign log `log` (whose event 1 has id `first`; None while
        the log is empty): (lo, hi), seqs lo < s <= hi. None: not a key of the club."""
        j = self.epoch_of(key)
        if j is None:
            return None
        lo = 0 if j == 0 else self.cut_of(j, log, first)[0]
        return lo, self.end_of(j, log, first)[0]

    def end_of(self, j: int, log: bytes, first: bytes | None) -> tuple[float, bytes | None]:
        """Where epoch j's window in `log` ends: the lowest cut of any later epoch (a
        later, lower cut ends every earlier window there too, so windows never
        overlap), with the event id that cut names; (INFINITE, None) for the last."""
        end: tuple[float, bytes | None] = (INFINITE, None)
        for i in range(j + 1, len(self.epochs)):
            cut = self.cut_of(i, log, first)
            if cut[0] <= end[0]:
                end = cut
        return end

    def window_at(self, j: int, log: bytes, first: bytes | None) -> tuple[Window, bytes | None]:
        """Epoch j's window in `log` (as `window` gives it) and the event id its end
        names (as `end_of`), working down from the last epoch: each cut is opened once
        for the history, not once for every earlier key asked about (a hostile
        document's hundreds of key events, checked for each event it shows)."""
        known = self._windows.setdefault((log, first), _LogWindows())
        for i in range(len(self.epochs) - 1 - len(known.found), j - 1, -1):
            cut = self.cut_of(i, log, first)
            known.found.append(((cut[0], known.end[0]), known.end[1]))
            if cut[0] < known.end[0]:  # the lowest later cut; of equal ones, the latest
                known.end = cut
        return known.found[len(self.epochs) - 1 - j]

    def cut_of(self, j: int, log: bytes, first: bytes | None) -> tuple[int, bytes | None]:
        """Epoch j's cut for `log`: (seq, id) of the last event the epoch before keeps;
        (0, None) if its cut does not name the log."""
        if first is None or j == 0:
            return 0, None
        epoch = self.epochs[j]
        for entry in epoch.by_tag.get(cut_tag(log, first, epoch.n), ()):
            found = open_cut_entry(entry, log, first, epoch.n)
            if found is not None:
                return found
        return 0, None


def _hex_key(text: str, what: str, fail: Callable[[str], InvalidEventError]) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise fail(f"key event's {what} is not hex") from None
    if len(value) != 32:
        raise fail(f"key event's {what} is not a 32-byte key")
    return value


def check_key_event(history: KeyHistory, header: Header, payload: bytes | None) -> Epoch:
    """protocol.md §2.2: may this event (already checked as an event, signature and
    all, at key-log seq header.seq) follow `history` (the epochs before its seq)?
    Returns the epoch it begins; raises InvalidEventError saying why not."""

    def fail(reason: str) -> InvalidEventError:
        return InvalidEventError(reason, club=header.club, log=header.log, seq=header.seq)

    if header.kind != Kind.KEY:
        raise fail("the keys log holds key events only")
    if payload is None:  # absence is not permission (DESIGN principle 16)
        raise fail("key event without its payload: cannot tell which key it hands over to")
    try:
        fields = _key_change.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        raise fail("key event payload does not decode") from None
    new = _hex_key(fields.key, "key", fail)
    revoked = _hex_key(fields.revoked, "revoked key", fail)
    current = history.current
    if revoked != current.key:
        raise fail(
            f"key event replaces key {revoked.hex()[:12]}, but the key in force at seq "
            f"{header.seq - 1} of the keys log is {current.key.hex()[:12]}"
        )
    recovery = history.genesis.recovery
    if fields.action == "rotate":
        if header.key != current.key:
            raise fail("a rotation must be signed by the key in force")
    elif fields.action == "revoke":
        if recovery == ZERO_HASH:
            raise fail("this club has no recovery key: it cannot revoke a key")
        if sha256(header.key) != recovery:
            raise fail(
                "a revocation must be signed by the club's recovery key: this one is not "
                "the key its genesis names"
            )
    else:
        raise fail(f"unknown key event action {fields.action!r}")
    if new in history.keys or crypto.is_weak_public_key(new) or sha256(new) == recovery:
        raise fail("the new key must differ from every earlier key of the club (no rotation back)")
    try:
        cut = tuple(bytes.fromhex(e) for e in fields.cut)
    except ValueError:
        raise fail("key event cut entry is not hex") from None
    if any(len(e) != CUT_ENTRY_BYTES for e in cut) or len(cut) % CUT_PAD:
        raise fail(f"key event cut entries must be {CUT_ENTRY_BYTES} bytes, {CUT_PAD} at a time")
    return Epoch(new, header.seq, fields.action, cut, time_us=header.time_us)


def fold_key_log(
    genesis: Genesis, events: Iterable[tuple[Header, bytes | None, bytes]]
) -> KeyHistory:
    """The epochs of a club from its key log's events (header, payload, event id), in
    seq order; raises at the first event that may not follow."""
    history = KeyHistory.of(genesis)
    for header, payload, eid in events:
        epoch = check_key_event(history, header, payload)
        history = KeyHistory(genesis, (*history.epochs, _with_id(epoch, eid, header.time_us)))
    return history


def _with_id(epoch: Epoch, eid: bytes, time_us: int) -> Epoch:
    return Epoch(epoch.key, epoch.n, epoch.action, epoch.cut, eid, time_us)


def with_event(history: KeyHistory, epoch: Epoch, eid: bytes, time_us: int) -> KeyHistory:
    """`history` followed by a checked key event's epoch."""
    return KeyHistory(history.genesis, (*history.epochs, _with_id(epoch, eid, time_us)))


def first_outside(
    history: KeyHistory, log: bytes, first: bytes, events: Iterable[tuple[int, bytes, bytes]]
) -> tuple[int, str] | None:
    """The first of a log's events (seq, key, id), in seq order, that its key may not
    sign there (§2.2), with why; None if all may. An event at the very seq a cut names
    that is not the event the cut names is outside too: the club kept another one."""
    windows: dict[bytes, tuple[Window, bytes | None] | None] = {}
    for seq, key, eid in events:
        if key not in windows:
            j = history.epoch_of(key)
            windows[key] = None if j is None else history.window_at(j, log, first)
        found = windows[key]
        if found is None or not found[0][0] < seq <= found[0][1]:
            return seq, outside_reason(history, key)
        if seq == found[0][1] and eid != found[1]:
            return seq, "not the event the club kept at this seq when it changed its key"
    return None


def revoke_beats(held: Header, held_payload: bytes | None) -> bool:
    """protocol.md §2.2: a revocation at key-log seq s replaces a held key event at s
    unless that one is itself a revocation (then two revocations at one seq are a
    fork: the recovery secret signed twice)."""
    if held.kind != Kind.KEY or held_payload is None:
        return True
    try:
        return _key_change.decode(held_payload).action != "revoke"
    except (msgspec.DecodeError, RecursionError):
        return True


def leads_to_key_in_force(held: KeyHistory, shown: KeyHistory) -> bool:
    """protocol.md §5.1, §2.2: would the key events a document shows (`shown`, each
    already checked), once taken by a node holding `held`, leave the document's last
    key in force there? Yes if they extend the held key log, or if where they first
    differ theirs is a revocation and the held one is not (a revocation beats it). A
    shorter copy of the log, or another chain at a seq (the seizer's own rotation once
    the club's revocation is held), is no."""
    for mine, theirs in zip(held.epochs[1:], shown.epochs[1:], strict=False):
        if mine.event != theirs.event:
            return theirs.action == "revoke" and mine.action != "revoke"
    return len(shown.epochs) >= len(held.epochs)


def outside_reason(history: KeyHistory, key: bytes) -> str:
    """Why an event signed by `key` is outside its window, for people."""
    j = history.epoch_of(key)
    if j is None:
        return "signed by a key that is not one of the club's keys"
    if j == len(history.epochs) - 1:
        return "signed by the club's key before its window in this log"
    after = history.epochs[j + 1]
    how = "revoked" if after.action == "revoke" else "rotated"
    return (
        f"signed by a key the club {how} at seq {after.n} of its keys log "
        f"(key {key.hex()[:12]}), after that key's last event in this log"
    )


class KeyAuthority:
    """Which keys sign for which clubs, from the clubs' genesis records and key logs.

    It reads `genesis` (club id -> decoded genesis) and `histories` (club id -> its
    epochs, for clubs whose key log holds key events) live, not copies: a node or an
    ingest that learns a club or a key event adds it there and the authority follows.
    """

    __slots__ = ("_genesis", "_histories")

    def __init__(
        self, genesis: Mapping[bytes, Genesis], histories: Mapping[bytes, KeyHistory] | None = None
    ) -> None:
        self._genesis = genesis
        self._histories: Mapping[bytes, KeyHistory] = histories if histories is not None else {}

    def history(self, club: bytes) -> KeyHistory | None:
        found = self._histories.get(club)
        if found is not None:
            return found
        g = self._genesis.get(club)
        return None if g is None else KeyHistory.of(g)

    def may_sign(self, club: bytes, key: bytes) -> bool:
        """protocol.md §2.2: `key` is one of the club's keys (the genesis key or one a
        key event introduced). Where in each log it may sign is `window`."""
        if club not in self._histories:  # the common case: never rotated
            g = self._genesis.get(club)
            return g is not None and g.key == key
        return key in self._histories[club].keys

    def rotated(self, club: bytes) -> bool:
        """Whether windows matter for this club (it has key events)."""
        h = self._histories.get(club)
        return h is not None and h.rotated

    def window(self, club: bytes, log: bytes, first: bytes | None, key: bytes) -> Window | None:
        h = self.history(club)
        return None if h is None else h.window(log, first, key)

    def signing_key(self, club: bytes) -> bytes | None:
        """The key that signs the club's new events now (None: an unknown club)."""
        h = self.history(club)
        return None if h is None else h.current.key

    def is_signing_key(self, club: bytes, key: bytes) -> bool:
        """Whether `key` is the club's current signing key: what unlocking the node's
        key file and request tokens check, so a node never signs with a key its peers
        would refuse, and a revoked key's requests are served as anonymous."""
        current = self.signing_key(club)
        return current is not None and current == key
