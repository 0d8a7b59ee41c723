"""The demo's own checks of what each node holds, read from the nodes' stores.

A node may hold another club's log only if that club's audience includes it; the
demo checks this on every node, and waits until each holds all it should.
"""

from __future__ import annotations

from collections.abc import Callable

from federation.demo.console import query
from federation.demo.spec import DemoSpec


def _reach(specs: dict[str, DemoSpec], origin: str, through: set[str]) -> set[str]:
    """The clubs connected to `origin` through peers, every step within `through`."""
    seen, todo = {origin}, [origin]
    while todo:
        for peer in specs[todo.pop()].club.peers:
            if peer not in seen and peer in through:
                seen.add(peer)
                todo.append(peer)
    return seen


def _expected(
    specs: dict[str, DemoSpec], clubs: dict[str, str], origin: str, holder: str, audience: str
) -> bool:
    """May `holder`'s node hold a log of `origin`'s with this audience, and should it?

    Public: every club connected to the origin through peers; federation: the
    origin's peers (the demo's clubs sign every peer into their rosters); clubs:
    the named clubs connected to the origin through named clubs (a relay passes a
    `clubs` log only to the clubs it names); private never leaves the origin's node."""
    if audience == "public":
        return holder in _reach(specs, origin, set(specs))
    if audience == "federation":
        return holder in specs[origin].club.peers
    if audience.startswith("clubs:"):
        named = set(audience.removeprefix("clubs:").split(","))
        return holder in _reach(specs, origin, {n for n in specs if clubs.get(n) in named})
    return False


def _logs(node: str) -> dict[tuple[str, str], tuple[str, int]]:
    """(club, log name) -> (audience, head seq), of every log a node holds."""
    status = query("--node", node, "status", "--json")
    return {(r["club"], r["name"]): (r["audience"], r["head_seq"]) for r in status["logs"]}


def audience_problems(
    specs: dict[str, DemoSpec], clubs: dict[str, str], node: dict[str, str]
) -> list[str]:
    """Every log a node holds that its origin's audience does not allow it."""
    name_of = {club: name for name, club in clubs.items()}
    problems = []
    for holder in specs:
        for (club, log), (audience, _) in _logs(node[holder]).items():
            origin = name_of.get(club)
            if origin is None or (
                origin != holder and not _expected(specs, clubs, origin, holder, audience)
            ):
                problems.append(
                    f"the {holder} node holds {origin or club[:12]}'s {log} log ({audience}), "
                    "which its audience does not allow"
                )
    return problems


def in_step(
    specs: dict[str, DemoSpec], clubs: dict[str, str], node: dict[str, str]
) -> Callable[[], bool]:
    """A check: does every node hold, up to its head, every log it should, and has it
    heard from every peer, with nothing left to fetch?"""

    def check() -> bool:
        held = {name: _logs(node[name]) for name in specs}
        for origin, club in clubs.items():
            for (owner, log), (audience, seq) in held[origin].items():
                if owner != club or not seq:  # an empty log has nothing to send
                    continue
                for holder in specs:
                    expected = holder != origin and _expected(
                        specs, clubs, origin, holder, audience
                    )
                    if expected and held[holder].get((club, log)) != (audience, seq):
                        return False
        for name in specs:
            for peer in query("--node", node[name], "peers", "--json"):
                if not peer["last_contact_us"] or peer["behind"]:
                    return False
        return True

    return check
