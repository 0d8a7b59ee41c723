"""The key authority: which keys may sign for a club (protocol.md §2.2)."""

from __future__ import annotations

from federation.core import canonical
from federation.core.canonical import Genesis
from federation.core.events import verify_event
from federation.core.keys import KeyAuthority
from tests.conftest import Club

A, B = Club.make(b"keys club a"), Club.make(b"keys club b")


def genesis_of(club: Club) -> Genesis:
    return canonical.decode_genesis(club.genesis)


def test_in_version_1_only_the_genesis_key_signs() -> None:
    keys = KeyAuthority({A.id: genesis_of(A)})
    assert keys.may_sign(A.id, A.key.public)
    assert not keys.may_sign(A.id, B.key.public)  # another club's key
    assert not keys.may_sign(B.id, B.key.public)  # a club whose genesis we lack
    assert not keys.may_sign(A.id, A.key.public[:-1] + b"\0")


def test_the_signing_key_is_what_unlocking_checks() -> None:
    keys = KeyAuthority({A.id: genesis_of(A)})
    assert keys.signing_key(A.id) == A.key.public
    assert keys.signing_key(B.id) is None
    assert keys.is_signing_key(A.id, A.key.public)
    assert not keys.is_signing_key(A.id, B.key.public)
    assert not keys.is_signing_key(B.id, B.key.public)


def test_the_authority_follows_the_clubs_it_is_given() -> None:
    """Ingest and the node add clubs as they learn them: no stale copy may refuse them."""
    genesis: dict[bytes, Genesis] = {}
    keys = KeyAuthority(genesis)
    assert not keys.may_sign(B.id, B.key.public)
    genesis[B.id] = genesis_of(B)
    assert keys.may_sign(B.id, B.key.public)


def test_verification_asks_the_authority() -> None:
    event = A.chain(1)[0]
    assert verify_event(event.signed, event.payload, KeyAuthority({A.id: genesis_of(A)}).may_sign)


# --- rotation and revocation (protocol.md §2.2) ---------------------------------------

import struct  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from federation.core.canonical import Kind, sha256  # noqa: E402
from federation.core.crypto import SigningKey  # noqa: E402
from federation.core.events import Head, VerifiedEvent, sign_event  # noqa: E402
from federation.core.keys import (  # noqa: E402
    CUT_ENTRY_BYTES,
    CutMark,
    KeyHistory,
    check_key_event,
    first_outside,
    fold_key_log,
    key_log_id,
    open_cut_entry,
    padding_entries,
    seal_cut,
    with_event,
)
from federation.core.payloads import make_payload  # noqa: E402
from federation.errors import InvalidEventError  # noqa: E402

RECOVERY = SigningKey(sha256(b"test recovery"))
K0 = SigningKey(sha256(b"test k0"))
G = Genesis(K0.public, sha256(RECOVERY.public), 1)
CLUB = canonical.club_id(canonical.encode_genesis(G))
LOG_L, FIRST_L = sha256(b"log L"), sha256(b"first event of L")
LOG_M, FIRST_M = sha256(b"log M"), sha256(b"first event of M")


def _pad(n: int) -> bytes:
    """Stand-in padding (the node draws random bytes): n entries' worth."""
    return bytes((i * 7) % 256 for i in range(n * CUT_ENTRY_BYTES))


def key_event(
    signer: SigningKey,
    history: KeyHistory,
    new: SigningKey,
    marks: list[CutMark],
    *,
    action: str = "rotate",
    revoked: bytes | None = None,
    head: Head | None = None,
) -> VerifiedEvent:
    n = history.current.n + 1 if head is None else head.seq + 1
    if head is None and n > 1:
        head = Head(n - 1, history.current.event)
    cut = seal_cut(n, marks, _pad(padding_entries(len(marks))))
    payload = make_payload(
        Kind.KEY,
        {
            "action": action,
            "key": new.public.hex(),
            "revoked": (revoked or history.current.key).hex(),
            "cut": [e.hex() for e in cut],
        },
    )
    return sign_event(
        signer,
        club=CLUB,
        log=key_log_id(CLUB),
        head=head,
        time_us=10 + n,
        kind=Kind.KEY,
        payload=payload,
    )


def take(history: KeyHistory, event: VerifiedEvent) -> KeyHistory:
    epoch = check_key_event(history, event.header, event.payload)
    return with_event(history, epoch, event.id, event.header.time_us)


def test_a_cut_entry_opens_only_for_its_log_first_event_and_key_event() -> None:
    cut = seal_cut(3, [CutMark(LOG_L, FIRST_L, 41, b"\x11" * 32)], _pad(7))
    assert len(cut) == 8
    assert all(len(e) == CUT_ENTRY_BYTES for e in cut)
    opened = [open_cut_entry(e, LOG_L, FIRST_L, 3) for e in cut]
    assert [o for o in opened if o is not None] == [(41, b"\x11" * 32)]
    for log, first, n in ((LOG_M, FIRST_L, 3), (LOG_L, FIRST_M, 3), (LOG_L, FIRST_L, 4)):
        assert all(open_cut_entry(e, log, first, n) is None for e in cut)
    # the sealed part says nothing in the clear: seq and id are not in the bytes
    assert all(struct.pack(">Q", 41) not in e and b"\x11" * 32 not in e for e in cut)


def test_padding_makes_a_multiple_of_eight_and_never_none() -> None:
    assert [padding_entries(n) + n for n in (0, 1, 7, 8, 9, 16)] == [8, 8, 8, 8, 16, 16]


def test_rotation_windows() -> None:
    k1 = SigningKey(sha256(b"test k1"))
    h0 = KeyHistory.of(G)
    rotate = key_event(K0, h0, k1, [CutMark(LOG_L, FIRST_L, 5, b"\x05" * 32)])
    h1 = take(h0, rotate)
    assert h1.current.key == k1.public
    assert h1.window(LOG_L, FIRST_L, K0.public) == (0, 5)
    assert h1.window(LOG_L, FIRST_L, k1.public) == (5, float("inf"))
    assert h1.window(LOG_M, FIRST_M, K0.public) == (0, 0)  # not named: the old key signs none
    assert h1.window(LOG_M, FIRST_M, k1.public) == (0, float("inf"))
    assert h1.window(LOG_L, FIRST_L, RECOVERY.public) is None
    events = [(s, K0.public, b"\x05" * 32 if s == 5 else bytes(32)) for s in range(1, 6)]
    assert first_outside(h1, LOG_L, FIRST_L, [*events, (6, k1.public, bytes(32))]) is None
    found = first_outside(h1, LOG_L, FIRST_L, [*events, (6, K0.public, bytes(32))])
    assert found is not None
    assert found[0] == 6
    assert "rotated at seq 1" in found[1]
    # at the cut's own seq, only the event the cut names is the old key's
    other = [*events[:4], (5, K0.public, b"\x55" * 32)]
    assert first_outside(h1, LOG_L, FIRST_L, other) == (
        5,
        "not the event the club kept at this seq when it changed its key",
    )
    assert fold_key_log(G, [(rotate.header, rotate.payload, rotate.id)]).current.key == k1.public


def test_revocation_needs_the_recovery_key() -> None:
    k1, k2 = SigningKey(sha256(b"test k1")), SigningKey(sha256(b"test k2"))
    h0 = KeyHistory.of(G)
    revoke = key_event(RECOVERY, h0, k1, [], action="revoke")
    assert take(h0, revoke).current.action == "revoke"
    forged = key_event(k2, h0, k1, [], action="revoke")  # any other key
    with pytest.raises(InvalidEventError, match="recovery key"):
        take(h0, forged)
    by_k0 = key_event(K0, h0, k1, [], action="revoke")  # not even the seized key
    with pytest.raises(InvalidEventError, match="recovery key"):
        take(h0, by_k0)
    none = KeyHistory.of(Genesis(K0.public, bytes(32), 1))
    with pytest.raises(InvalidEventError, match="no recovery key"):
        take(none, revoke)


def test_no_rotation_back_no_replay_no_wrong_signer() -> None:
    k1, k2 = SigningKey(sha256(b"test k1")), SigningKey(sha256(b"test k2"))
    h0 = KeyHistory.of(G)
    first = key_event(K0, h0, k1, [])
    h1 = take(h0, first)
    with pytest.raises(InvalidEventError, match="differ from every earlier key"):
        take(h1, key_event(k1, h1, K0, []))
    with pytest.raises(InvalidEventError, match="differ from every earlier key"):
        take(h1, key_event(k1, h1, RECOVERY, []))
    # the old rotation replayed: it replaces k0, but k1 is in force now
    with pytest.raises(InvalidEventError, match="key in force"):
        take(h1, first)
    with pytest.raises(InvalidEventError, match="signed by the key in force"):
        take(h1, key_event(K0, h1, k2, [], revoked=k1.public))
    note = sign_event(
        k1, club=CLUB, log=key_log_id(CLUB), head=None, time_us=1, kind=Kind.NOTE, payload=b"{}"
    )
    with pytest.raises(InvalidEventError, match="key events only"):
        take(h1, note)
    with pytest.raises(InvalidEventError, match="without its payload"):
        check_key_event(h1, first.header, None)


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.one_of(st.none(), st.integers(0, 30)), min_size=1, max_size=5),
    seqs=st.integers(1, 40),
)
def test_each_seq_has_at_most_one_key_and_keys_follow_their_order(
    cuts: list[int | None], seqs: int
) -> None:
    """The windows of a log are disjoint, in epoch order: no seq is signable by two keys,
    and a later key never signs below an earlier key's window (§2.2), whatever the cuts:
    a cut may go below an earlier one (fork recovery) or not name the log (None)."""
    history = KeyHistory.of(G)
    keys = [K0]
    for i, cut in enumerate(cuts):
        new = SigningKey(sha256(b"prop key %d" % i))
        marks = [CutMark(LOG_L, FIRST_L, cut, b"\x01" * 32)] if cut else []
        history = take(history, key_event(keys[-1], history, new, marks))
        keys.append(new)
    last_epoch = -1
    for s in range(1, seqs + 1):
        allowed = [
            j
            for j, k in enumerate(keys)
            if (w := history.window(LOG_L, FIRST_L, k.public)) is not None and w[0] < s <= w[1]
        ]
        assert len(allowed) <= 1
        if allowed:
            assert allowed[0] >= last_epoch
            last_epoch = allowed[0]
