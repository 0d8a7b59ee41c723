"""Peering: invites out, invites in, and the club's signed roster (protocol.md §5.1, §5.4).

Adding a peer stores its club (genesis), its address and certificate fingerprint,
and signs a roster event into the club's "roster" log, which is what relays read
to decide who may receive the club's `federation` logs. Removing does the reverse.
Pausing only stops syncing; the roster is unchanged.
"""

from __future__ import annotations

import msgspec

from federation.core import canonical, crypto
from federation.core.canonical import Audience, Kind
from federation.core.config import parse_listen
from federation.core.invite import Invite, make_invite, read_invite
from federation.core.selection import ROSTER_LOG_NAME
from federation.errors import UsageError
from federation.node.node import Node
from federation.store.base import PeerRecord


def own_url(node: Node) -> str:
    if node.config.node.public_url:
        return node.config.node.public_url
    host, port = parse_listen(node.config.node.listen)
    scheme = "http" if node.config.node.plain_http else "https"
    if host in ("0.0.0.0", "::"):
        raise UsageError(
            "node.listen binds every address: set node.public_url to the address other "
            "clubs should use, or pass --url"
        )
    return f"{scheme}://{host}:{port}"


async def invite(node: Node, url: str | None = None) -> str:
    key = node.unlock()
    genesis = (await node.store.clubs())[node.club]
    url = url or own_url(node)
    fingerprint = b""
    if url.startswith("https:"):
        fingerprint = crypto.certificate_fingerprint(node.paths.tls_cert.read_bytes())
    return make_invite(key, genesis, node.config.club.name, url, fingerprint)


async def _roster_event(node: Node, op: str, club: bytes, name: str) -> None:
    await node.post(
        Kind.ROSTER,
        {"op": op, "club": club.hex(), "name": name},
        Audience("federation"),
        ROSTER_LOG_NAME,
    )


async def add(node: Node, text: str) -> PeerRecord:
    found: Invite = read_invite(text)
    club = found.club
    if club == node.club:
        raise UsageError("that is this club's own invite; add another club's")
    if club in await node.store.blocked():
        raise UsageError(
            f"club {club.hex()} is blocked here: `federation unblock {club.hex()[:12]}` first"
        )
    existing = {p.club: p for p in await node.store.peers()}
    genesis = bytes.fromhex(found.genesis)
    await node.store.put_club(club, genesis)
    node.genesis[club] = canonical.decode_genesis(genesis)
    peer = PeerRecord(
        club=club,
        name=found.name,
        url=found.url,
        fingerprint=bytes.fromhex(found.fingerprint),
        state="active",
        added_us=node.clock(),
    )
    if club in existing:  # a new invite from a known club: new address or certificate
        peer = msgspec.structs.replace(
            existing[club], name=peer.name, url=peer.url, fingerprint=peer.fingerprint
        )
    else:
        await _roster_event(node, "added", club, found.name)
    await node.store.put_peer(peer)
    return peer


async def find(node: Node, ref: str) -> PeerRecord:
    """A peer by name or club id prefix (at least 4 hex digits)."""
    peers = await node.store.peers()
    matches = [
        p
        for p in peers
        if p.name == ref or (len(ref) >= 4 and p.club.hex().startswith(ref.lower()))
    ]
    if not matches:
        raise UsageError(f"no peer {ref!r}; see `federation peers list`")
    if len(matches) > 1:
        raise UsageError(f"{ref!r} names more than one peer; give more of the club id")
    return matches[0]


async def set_state(node: Node, ref: str, state: str) -> PeerRecord:
    peer = msgspec.structs.replace(await find(node, ref), state=state)
    await node.store.put_peer(peer)
    return peer


async def remove(node: Node, ref: str) -> PeerRecord:
    peer = await find(node, ref)
    await _roster_event(node, "removed", peer.club, peer.name)
    await node.store.remove_peer(peer.club)
    return peer
