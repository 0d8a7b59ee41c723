"""Helpers for the key tests: a club with a known recovery key, its public log."""

from __future__ import annotations

from pathlib import Path

from federation.core import canonical
from federation.core.crypto import SigningKey
from federation.core.events import VerifiedEvent
from federation.core.keys import key_log_id
from federation.core.log import default_log_name, descriptor_bytes, parse_audience
from federation.node.node import init_node
from federation.store.base import LogStore
from tests.harness import Federation, Member

RECOVERY_SEED = canonical.sha256(b"tests/keys recovery seed")
RECOVERY = SigningKey(RECOVERY_SEED)


async def start_club(fed: Federation, root: Path, name: str) -> Member:
    """A member whose recovery key the test knows (the operator's words, in life)."""
    path = root / name
    await init_node(
        path,
        name=f"Club {name}",
        listen="127.0.0.1:0",
        passphrase=None,
        plain_http=True,
        recovery_seed=RECOVERY_SEED,
    )
    return await fed.start(path, name)


def public_log(club: bytes) -> bytes:
    a = parse_audience("public")
    return canonical.log_id(descriptor_bytes(club, default_log_name(a), a))


async def texts(store: LogStore, log: bytes) -> list[str]:
    """The note texts of a log as held, in seq order."""
    return [e.payload.decode() if e.payload is not None else "" for e in await store.events(log)]


async def keys_in(store: LogStore, club: bytes) -> list[VerifiedEvent]:
    return await store.events(key_log_id(club))
