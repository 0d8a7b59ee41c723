"""Quotas on what peers make a node hold, and blocked clubs (protocol.md §6.3, §6.4).

A peer can relay any number of honestly signed logs: one club may sign a hundred
thousand one-event logs, or a thousand clubs may each sign one. Signatures prove who
wrote them, not that anyone wants them. So the clubs and logs new to this node that
one peer's answer may add are bounded per answer, per origin club and in total, and
an operator may block a club outright.

Pure: the node reads what it holds from its store, and `Quota` decides, for each new
club and log a peer offers, whether to take it. A refusal is a warning, never an
error: the valid rest of the answer still lands. A lasting refusal (a blocked club,
a club or the node at its quota) is remembered, in `lasting`, so that the next rounds
do not ask for that log again; one over the per-round quota is asked for again in the
next round. Our own club's logs are never refused: a node restored from a backup
must catch up with what it published (§3.6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from federation.core.ids import short

# Logs of one origin club held here. A club has its standard logs (one per audience
# and its roster) and one per joint campaign's audience: five hundred is decades of
# campaigns; a club signing more is filling its partners' disks. Under
# MAX_NEW_LOGS_PER_ROUND, so one club alone never takes a whole round's quota.
MAX_LOGS_PER_CLUB = 500
# Clubs held in total (other than our own): far beyond a federation of small clubs
# and the public clubs their members follow.
MAX_CLUBS_HELD = 5000
# Logs held in total (other than our own): half of MAX_FRONTIER_LOGS, so that a
# frontier of everything a node holds stays far from the message limit.
MAX_LOGS_HELD = 50_000
# Clubs new to this node that one answer of one peer (a round, unless the peer says
# `more`) may add: a first sync with a large federation takes a few rounds, and a
# flood of clubs grows the store slowly enough to be noticed and blocked.
MAX_NEW_CLUBS_PER_ROUND = 100
# Logs new to this node that one answer of one peer may add, for the same reasons:
# ten new clubs' worth of logs and more per round.
MAX_NEW_LOGS_PER_ROUND = 1000


@dataclass(frozen=True, slots=True)
class Limits:
    """The quotas, the constants above unless a test chooses smaller ones."""

    logs_per_club: int = MAX_LOGS_PER_CLUB
    clubs_held: int = MAX_CLUBS_HELD
    logs_held: int = MAX_LOGS_HELD
    new_clubs_per_round: int = MAX_NEW_CLUBS_PER_ROUND
    new_logs_per_round: int = MAX_NEW_LOGS_PER_ROUND


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a club's log (or club record) was not taken. `lasting`: not asked for again
    until the node restarts or the operator acts; otherwise only for this round."""

    club: bytes
    why: str
    lasting: bool


@dataclass
class Quota:
    """What a node may still take, for one answer of one peer.

    `clubs` and `logs`: how many clubs and logs other than our own the node held when
    the answer began; `logs_of`: the same per club; `own`: our club (never refused);
    `peers`: our active peers, whose own logs the totals do not refuse (a full node
    still syncs with the clubs it chose; the per-club quota still holds); `blocked`:
    the clubs the operator blocked; `lasting`: where lasting refusals are added (the
    running node's set, shared by its rounds).
    """

    clubs: int
    logs: int
    logs_of: Mapping[bytes, int]
    own: bytes
    peers: frozenset[bytes] = frozenset()
    blocked: frozenset[bytes] = frozenset()
    limits: Limits = Limits()
    lasting: set[bytes] = field(default_factory=set)
    new_clubs: set[bytes] = field(default_factory=set)
    new_logs: dict[bytes, int] = field(default_factory=dict)  # club -> logs taken now

    def refuse_club(self, club: bytes) -> Refusal | None:
        """A club record offered by a peer: refused only if the club is blocked."""
        if club in self.blocked:
            return Refusal(club, "blocked by this node's operator", lasting=True)
        return None

    def check(self, log: bytes, club: bytes, *, new_club: bool) -> Refusal | None:
        """May a log new to this node, of `club`, be taken? Counts nothing."""
        refusal = self._why(club, new_club=new_club)
        if refusal is not None and refusal.lasting:
            self.lasting.add(log)
        return refusal

    def take(self, log: bytes, club: bytes, *, new_club: bool) -> Refusal | None:
        """The same, just before the log (and its club, if new) is stored: checks
        again, and counts it if it may be taken."""
        refusal = self.check(log, club, new_club=new_club)
        if refusal is None and club != self.own:
            if new_club:
                self.new_clubs.add(club)
            self.new_logs[club] = self.new_logs.get(club, 0) + 1
        return refusal

    def _why(self, club: bytes, *, new_club: bool) -> Refusal | None:
        if club in self.blocked:
            return Refusal(club, "blocked by this node's operator", lasting=True)
        if club == self.own:
            return None
        limits, taken = self.limits, sum(self.new_logs.values())
        if self.logs_of.get(club, 0) + self.new_logs.get(club, 0) >= limits.logs_per_club:
            why = f"the club holds {limits.logs_per_club} logs here, the most one club may"
            return Refusal(club, why, lasting=True)
        is_new = new_club and club not in self.new_clubs
        if club not in self.peers:  # the totals never cut a node off from its partners
            if self.logs + taken >= limits.logs_held:
                why = f"this node holds {limits.logs_held} logs, its quota"
                return Refusal(club, why, lasting=True)
            if is_new and self.clubs + len(self.new_clubs) >= limits.clubs_held:
                why = f"this node holds {limits.clubs_held} clubs, its quota"
                return Refusal(club, why, lasting=True)
        if is_new and len(self.new_clubs) >= limits.new_clubs_per_round:
            why = f"{limits.new_clubs_per_round} new clubs this round, the most a round takes"
            return Refusal(club, why, lasting=False)
        if taken >= limits.new_logs_per_round:
            why = f"{limits.new_logs_per_round} new logs this round, the most a round takes"
            return Refusal(club, why, lasting=False)
        return None


def warnings(refused: Mapping[bytes, Refusal]) -> list[str]:
    """One line per reason, naming the club when one club was refused for it: for the
    round's result and the peer's status."""
    by_why: dict[str, list[bytes]] = {}
    for refusal in refused.values():
        by_why.setdefault(refusal.why, []).append(refusal.club)
    lines = []
    for why, clubs in by_why.items():
        n, distinct = len(clubs), set(clubs)
        whose = f"club {short(clubs[0])}" if len(distinct) == 1 else f"{len(distinct)} clubs"
        lines.append(f"refused {n} log{'s' if n != 1 else ''} of {whose}: {why}")
    return lines
