"""Keys: the one authority on which keys may sign for a club (protocol.md §2.2).

Verification (`events.verify_event`, `events.verify_run`), ingest, request tokens
(`sync.auth`) and unlocking the node's own key all ask here, never compare keys
themselves. Today a club's only signing key is its genesis key; key rotation and
revocation (reserved for a later version, §2.2) will widen `KeyAuthority` and no
caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from federation.core.canonical import Genesis

# The predicate verifiers take: (club, key) -> may `key` sign for `club` (§2.2).
# `KeyAuthority.may_sign` is one; a test may pass a narrower one of its own.
KeyCheck = Callable[[bytes, bytes], bool]


class KeyAuthority:
    """Which keys sign for which clubs, from the clubs' genesis records.

    It reads `genesis` (club id -> decoded genesis) live, not a copy: a node or an
    ingest that learns a new club adds it to that mapping and the authority follows.
    """

    __slots__ = ("_genesis",)

    def __init__(self, genesis: Mapping[bytes, Genesis]) -> None:
        self._genesis = genesis

    def may_sign(self, club: bytes, key: bytes) -> bool:
        """protocol.md §2.2: in version 1, a key may sign for a club if and only if it
        is, byte for byte, the key of the club's genesis."""
        g = self._genesis.get(club)
        return g is not None and g.key == key

    def signing_key(self, club: bytes) -> bytes | None:
        """The key that signs the club's new events now (None: an unknown club).
        Today the genesis key; after a rotation it will be the newest key."""
        g = self._genesis.get(club)
        return None if g is None else g.key

    def is_signing_key(self, club: bytes, key: bytes) -> bool:
        """Whether `key` is the club's current signing key: what unlocking the node's
        key file checks, so a node never signs with a key its peers would refuse."""
        current = self.signing_key(club)
        return current is not None and current == key
