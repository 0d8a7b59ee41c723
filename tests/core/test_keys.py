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
