"""Typed node metadata in the store's meta table, encoded and decoded here only.

The restore guard (protocol.md §3.6): for each of the club's own logs, the highest
seq a peer's frontier showed, and which peer showed it. `node/follow.py` writes it
after every frontier; `Node.post` refuses a log whose head is below it.
"""

from __future__ import annotations

import msgspec

from federation.store.base import PeerStore

_GUARD_PREFIX = "own_behind:"


class RestoreGuard(msgspec.Struct, frozen=True):
    """A peer showed our own log `log` up to `seq` (named `peer` for people)."""

    log: bytes
    seq: int
    peer: str


def _guard_key(log: bytes) -> str:
    return f"{_GUARD_PREFIX}{log.hex()}"


# The value is "seq\npeer" in UTF-8, as nodes have always written it: guards in
# stores made before this module keep working, with no migration.
def _encode_guard(guard: RestoreGuard) -> bytes:
    return f"{guard.seq}\n{guard.peer}".encode()


def _decode_guard(log: bytes, value: bytes) -> RestoreGuard:
    seq, _, peer = value.decode(errors="replace").partition("\n")
    return RestoreGuard(log, int(seq) if seq.isascii() and seq.isdigit() else 0, peer)


async def read_restore_guard(store: PeerStore, log: bytes) -> RestoreGuard | None:
    """The restore guard of our own log `log`, or None if no peer showed it ahead."""
    value = await store.get_meta(_guard_key(log))
    return None if value is None else _decode_guard(log, value)


async def write_restore_guard(store: PeerStore, guard: RestoreGuard) -> None:
    await store.set_meta(_guard_key(guard.log), _encode_guard(guard))
