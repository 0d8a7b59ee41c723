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
from federation.core.keys import key_log_descriptor, key_log_id, leads_to_key_in_force
from federation.core.naming import resolve_club
from federation.core.selection import ROSTER_LOG_NAME
from federation.errors import UsageError
from federation.node import naming
from federation.node.ingest import open_ingest
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
    # After a rotation the key that signs is not the genesis key: the invite carries
    # the club's key events, which show it (protocol.md §5.1, §2.2).
    keys = [(e.signed, e.payload or b"") for e in await node.store.events(key_log_id(node.club))]
    return make_invite(key, genesis, node.config.club.name, url, fingerprint, keys)


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
    # protocol.md §5.1, §2.2: an invite signed by a key the club has since replaced
    # (as this node knows from the club's keys log) is refused: a seized key can no
    # longer send the club's peers to another address, nor can the seizer's own
    # rotation once the club's revocation is held here (the same number of key events,
    # another chain): the invite's key must be the one in force here once its key
    # events are taken, checked before anything is written.
    held = node.keys.history(club)
    shown = found.history()
    if held is not None and not leads_to_key_in_force(held, shown):
        raise UsageError(
            "this invite is signed by a key the club has since rotated or revoked (see its "
            "keys log); ask the club for a new invite"
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
    if len(shown.epochs) > 1:  # the club's key events: taken now, as from a peer
        await _take_key_events(node, found)
    if club in existing:  # a new invite from a known club: new address or certificate
        peer = msgspec.structs.replace(
            existing[club], name=peer.name, url=peer.url, fingerprint=peer.fingerprint
        )
    else:
        await _roster_event(node, "added", club, found.name)
    await node.store.put_peer(peer)
    return peer


async def _take_key_events(node: Node, found: Invite) -> None:
    log = key_log_id(found.club)
    events = [(bytes.fromhex(k.signed), bytes.fromhex(k.payload)) for k in found.keys]
    async with open_ingest(node.store, node.genesis, node.clock) as ingest:
        await ingest.log(log, key_log_descriptor(found.club))
        await ingest.run(log, events)
    await node.load_clubs()


async def find(node: Node, ref: str) -> PeerRecord:
    """A peer by name (case-insensitive) or a club id prefix of at least six hex
    digits: the one naming rule (node/naming.py), among the peers."""
    peers = {p.club: p for p in await node.store.peers()}
    known = [n for n in await naming.known_clubs(node) if n.id in peers]
    if not known:
        raise UsageError("this club has no peers yet; add one with `federation peers add`")
    return peers[resolve_club(ref, known, what="peer")]


async def set_state(node: Node, ref: str, state: str) -> PeerRecord:
    peer = msgspec.structs.replace(await find(node, ref), state=state)
    await node.store.put_peer(peer)
    return peer


async def remove(node: Node, ref: str) -> PeerRecord:
    peer = await find(node, ref)
    await _roster_event(node, "removed", peer.club, peer.name)
    await node.store.remove_peer(peer.club)
    return peer
