"""The clubs a node can name, and the commands' one way to name a club (core.naming).

Known clubs: our own club (named in config.toml), our peers (named in their
invites), the clubs whose genesis this node holds, the blocked clubs, and every club
a roster held here names (a roster event carries the name the rostering club gave
it, protocol.md §3.2). Our own name, our peers' names and our own roster's names are
the operator's choices; another club's roster is its word (core.naming says why
that matters).

Every command that takes a club (`log --club`, `post --audience clubs:…`, `sync`,
`peers pause|resume|remove`, `block`, `unblock`, the proposal commands, `calendar
--club`) resolves it through `find_club` (or `find_clubs`).
"""

from __future__ import annotations

from typing import Protocol

from federation.core import log
from federation.core.canonical import MAX_AUDIENCE_CLUBS, Audience, Kind
from federation.core.config import Config
from federation.core.naming import Named, full_id, resolve_club
from federation.core.payloads import read_payload
from federation.core.selection import roster_log_id
from federation.errors import UsageError
from federation.store.base import PAGE_EVENTS, Store


class NodeView(Protocol):
    """What naming needs of a node (`node.node.Node` has it)."""

    @property
    def store(self) -> Store: ...
    @property
    def club(self) -> bytes: ...
    @property
    def config(self) -> Config: ...


async def roster_names(store: Store, club: bytes) -> dict[bytes, str]:
    """The names `club`'s roster (as held here) gives the clubs it lists, the latest
    name of each; payloads missing here name nothing."""
    names: dict[bytes, str] = {}
    after = 0
    log = roster_log_id(club)
    while page := await store.events(log, after, PAGE_EVENTS):
        after = page[-1].header.seq
        for e in page:
            if e.header.kind != Kind.ROSTER or e.payload is None:
                continue
            fields = read_payload(Kind.ROSTER, e.payload)
            if fields is None:
                continue
            try:
                listed = bytes.fromhex(str(fields["club"]))
            except ValueError:  # pragma: no cover - the payload type checks the pattern
                continue
            if fields.get("name"):
                names[listed] = str(fields["name"])
    return names


async def known_clubs(node: NodeView, *, blocked: bool = True) -> list[Named]:
    """Every club this node can name, with every name it knows for each."""
    store = node.store
    found = [Named(node.club, node.config.club.name)]
    found += [Named(p.club, p.name) for p in await store.peers()]
    holders = await store.clubs()
    for holder in holders:
        trusted = holder == node.club
        found += [Named(c, n, trusted) for c, n in (await roster_names(store, holder)).items()]
    found += [Named(c) for c in holders]
    if blocked:
        found += [Named(c) for c in await store.blocked()]
    return found


async def find_club(node: NodeView, ref: str, *, what: str = "club") -> bytes:
    """The club `ref` names (a name, case-insensitive, or an id prefix of at least
    six hex digits), among the clubs this node knows; else UsageError listing the
    candidates."""
    return resolve_club(ref, await known_clubs(node), what=what)


async def club_names(node: NodeView) -> dict[bytes, str]:
    """A name for each club that has one, for people: ours, a peer's, or else the
    first roster's that names it (F2's listings use it)."""
    names: dict[bytes, str] = {}
    known = await known_clubs(node, blocked=False)  # ours, then peers', then rosters'
    for n in sorted(known, key=lambda n: not n.trusted):  # a stable sort: that order kept
        if n.name:
            names.setdefault(n.id, n.name)
    return names


async def parse_audience(node: NodeView, text: str) -> Audience:
    """An audience as `post --audience` takes it: private, federation, public, or
    `clubs:` and clubs each named by the one rule (a name or an id prefix). A whole
    64-digit id this node does not know is kept as given: the posting rails
    (node/rails.py) decide whether such an audience reaches anyone."""
    value = text.strip()
    if not value.startswith("clubs:"):
        return log.parse_audience(value)
    parts = [p.strip() for p in value[len("clubs:") :].split(",") if p.strip()]
    if not parts:
        raise UsageError("audience clubs: needs at least one club, e.g. clubs:NAME,NAME")
    known = await known_clubs(node, blocked=False)
    ids = {n.id for n in known}
    clubs: set[bytes] = set()
    for part in parts:
        whole = full_id(part)
        clubs.add(whole if whole is not None and whole not in ids else resolve_club(part, known))
    if len(clubs) > MAX_AUDIENCE_CLUBS:
        raise UsageError(f"a named audience lists at most {MAX_AUDIENCE_CLUBS} clubs")
    return Audience("clubs", tuple(sorted(clubs)))
