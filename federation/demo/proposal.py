"""The demo's joint campaign proposal (protocol.md §3.7-3.8), with the nodes running.

The hub proposes a joint campaign to two of its partners (the origin and the
target of the sync scenes); the origin amends it; both accept the amended version,
and so does the hub, which agrees it on all three nodes. The hub exports the
agreement record and `proposal verify` checks it offline. The outsider, a fourth
club that federates with the three, never receives any of it: the demo checks its
store and an export of everything it holds for the proposal's text.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from federation.demo.check import in_step
from federation.demo.console import federation, joined, query, say, section, shown_path
from federation.demo.processes import Nodes, wait_until
from federation.demo.spec import Cast, DemoSpec
from federation.errors import FederationError

# Where the proposer writes the agreement record, and the outsider its export, in
# the demo directory.
AGREEMENT_FILE = "agreement.json"
OUTSIDER_EXPORT = "{name}-export.jsonl"
# Days from now: answers are due at DEADLINE_DAYS, the march is on ACTION_DAYS.
DEADLINE_DAYS = 4
ACTION_DAYS = 19


class Story(msgspec.Struct, frozen=True):
    """The proposal's words; tests/test_demo.py looks for them on every node."""

    title: str = "Winter rent freeze: joint day of action"
    amended_title: str = "Winter rent freeze: joint march and rally"
    aims: str = "A rent freeze on the riverside estates until April, and no evictions this winter."
    ask_all: str = "a bloc of eight marchers with your banner"
    ask_amended: str = "a bloc of eight marchers, and the tea stall at the rally"
    action: str = "March to the Town Hall"
    place: str = "Town Hall steps"
    hour: int = 11
    amended_hour: int = 13
    # What each club commits when it accepts the amended version, by role.
    origin_commits: str = "eight marchers and the tea stall"
    target_commits: str = "ten marchers and a bookstall on the history of rent strikes"
    hub_commits: str = "the stewards, the sound system and the Town Hall booking"

    def texts(self) -> list[str]:
        """Every distinctive text of the proposal: none may reach the outsider."""
        return [
            self.title,
            self.amended_title,
            self.aims,
            self.ask_all,
            self.ask_amended,
            self.origin_commits,
            self.target_commits,
            self.hub_commits,
        ]


STORY = Story()


def _time(t: dt.datetime) -> str:
    return f"{t:%Y-%m-%dT%H:%MZ}"


def _outcome(node: str, proposal: str) -> dict[str, Any] | None:
    """The outcome of one proposal as a node computes it, or None if it holds none."""
    for outcome in query("--node", node, "proposal", "list", "--json"):
        if outcome["proposal"] == proposal:
            found: dict[str, Any] = outcome
            return found
    return None


def _holds(nodes_at: list[str], proposal: str, state: str, version: str) -> Callable[[], bool]:
    def check() -> bool:
        for node in nodes_at:
            o = _outcome(node, proposal)
            if o is None or (o["state"], o["version"]["id"]) != (state, version):
                return False
        return True

    return check


def _hex(out: str, what: str) -> str:
    found = re.search(r"\b[0-9a-f]{64}\b", out)
    if found is None:
        raise FederationError(f"`proposal {what}` printed no id: {out.strip()!r}")
    return found.group(0)


def show_proposal(
    root: Path,
    specs: dict[str, DemoSpec],
    clubs: dict[str, str],
    roles: Cast,
    nodes: Nodes,
    step: int,
    story: Story = STORY,
) -> str:
    """The proposal scene; returns the proposal id."""
    hub, origin, target, outsider = roles.hub, roles.origin, roles.target, roles.outsider
    node = {name: shown_path(root / name) for name in specs}
    name_of = {name: spec.club.name for name, spec in specs.items()}
    short = {name: club[:12] for name, club in clubs.items()}
    three = [hub, origin, target]
    now = dt.datetime.now(dt.UTC)
    deadline = (now + dt.timedelta(days=DEADLINE_DAYS)).replace(
        hour=18, minute=0, second=0, microsecond=0
    )
    day = (now + dt.timedelta(days=ACTION_DAYS)).replace(minute=0, second=0, microsecond=0)
    starts, amended_starts = day.replace(hour=story.hour), day.replace(hour=story.amended_hour)
    partners = [p for p in specs[outsider].club.peers if p in three]

    section(
        f"{step}. A joint campaign, proposed, amended and agreed",
        "Clubs that refuse a centre still need to decide together, club by club. "
        f"{name_of[hub]} proposes a joint campaign to {name_of[origin]} and "
        f"{name_of[target]}: a title, its aims, what each club is asked to commit, the "
        f"action it plans (with a date and a place), a rule stated up front (`all`: every "
        f"invited club must accept, the default) and a deadline for answers, "
        f"{DEADLINE_DAYS} days from now.",
        "",
        "It travels in a log whose audience is exactly these three clubs (`clubs:`, "
        f"not `federation`). {name_of[outsider]} federates with "
        + joined(name_of[p] for p in partners)
        + ", but is not invited: watch what it gets.",
        "",
        "Club ids are shown by their first 12 digits: "
        + ", ".join(f"{short[n]} is {name_of[n]}" for n in three)
        + ".",
    )
    out = federation(
        "--node",
        node[hub],
        "proposal",
        "new",
        "--title",
        story.title,
        "--to",
        name_of[origin],
        "--to",
        name_of[target],
        "--aims",
        story.aims,
        "--ask",
        f"*={story.ask_all}",
        "--action",
        f"{story.action}@{story.place}@{_time(starts)}",
        "--deadline",
        _time(deadline),
    )
    proposal = _hex(out, "new")
    took = wait_until(
        f"the proposal reaching {name_of[origin]} and {name_of[target]}",
        _holds([node[origin], node[target]], proposal, "open", proposal),
        nodes,
    )
    print()
    say(
        f"{took:.1f} s later both invited clubs' nodes hold it. On {name_of[origin]}'s "
        "node (any prefix of the proposal id will do):",
        "",
    )
    federation("--node", node[origin], "proposal", "show", proposal[:12])
    print()
    say(
        f"{name_of[origin]}'s members work the early shift, and it can offer more than "
        f"marchers: it amends the proposal, moving the march to {story.amended_hour}:00 "
        "and adding the tea stall to what it is asked for. An amendment is a new version "
        "with an id of its own: every answer names the exact version it answers, so each "
        "club answers the new one afresh, under the same rule.",
        "",
    )
    out = federation(
        "--node",
        node[origin],
        "proposal",
        "amend",
        proposal[:12],
        "--title",
        story.amended_title,
        "--ask",
        f"*={story.ask_all}",
        "--ask",
        f"{short[origin]}={story.ask_amended}",
        "--action",
        f"{story.action}@{story.place}@{_time(amended_starts)}",
    )
    amended = _hex(out, "amend")
    wait_until(
        f"the amendment reaching {name_of[hub]} and {name_of[target]}",
        _holds([node[hub], node[target]], proposal, "open", amended),
        nodes,
    )
    say(
        "",
        f"{name_of[target]} does not federate with {name_of[origin]}: it gets the "
        f"amendment from {name_of[hub]}, which may relay it because the log's audience "
        f"names {name_of[target]}. Both invited clubs accept the amended version, each "
        f"saying what it commits; then {name_of[hub]}, whose first version the amendment "
        "replaced, accepts it too, and that meets the rule:",
        "",
    )
    federation(
        "--node", node[origin], "proposal", "accept", proposal[:12], "--text", story.origin_commits
    )
    federation(
        "--node", node[target], "proposal", "accept", proposal[:12], "--text", story.target_commits
    )
    wait_until(
        f"the acceptances reaching {name_of[hub]}",
        lambda: (
            {clubs[origin], clubs[target]}
            <= set((_outcome(node[hub], proposal) or {}).get("accepted", {}))
        ),
        nodes,
    )
    federation(
        "--node", node[hub], "proposal", "accept", proposal[:12], "--text", story.hub_commits
    )
    took = wait_until(
        "the proposal agreed on all three nodes",
        _holds([node[n] for n in three], proposal, "agreed", amended),
        nodes,
    )
    outcomes = {n: _outcome(node[n], proposal) or {} for n in three}
    agreed = {
        n: (o["version"]["id"], {c: a["text"] for c, a in o["accepted"].items()})
        for n, o in outcomes.items()
    }
    commitments = {
        clubs[origin]: story.origin_commits,
        clubs[target]: story.target_commits,
        clubs[hub]: story.hub_commits,
    }
    if any(seen != (amended, commitments) for seen in agreed.values()):
        raise FederationError(
            "the three nodes do not agree on the amended version and who committed what"
        )
    print()
    say(
        f"{took:.1f} s later the proposal is agreed on all three nodes. No server decided "
        "it and no job had to run: each node works the outcome out from the signed "
        "answers it holds, and any node holding them gets the same one.",
        "",
    )
    for name in three:
        federation("--node", node[name], "proposal", "list")
    print()
    say(
        f"In full, on {name_of[hub]}'s node: the agreed version, who accepted it and what "
        "each committed, and, for the proposer, which versions reached each invited club:",
        "",
    )
    federation("--node", node[hub], "proposal", "show", proposal[:12])
    print()
    say(
        f"Checked on all three nodes: agreed, with the amended version {amended[:12]}, "
        "and the same three commitments.",
    )

    record = shown_path(root / AGREEMENT_FILE)
    say(
        "",
        f"{name_of[hub]} exports the agreement record: the agreed version, the rule and "
        "every signed step, with the identity of each club. Anyone can check it offline, "
        "with no node and no network: `proposal verify` checks every signature one by "
        "one and replays the rule.",
        "",
    )
    federation("--node", node[hub], "proposal", "export", proposal[:12], "-o", record)
    checked = federation("proposal", "verify", record)
    if not checked.startswith(f"agreement verified: {story.amended_title}"):
        raise FederationError(f"`proposal verify {record}` did not verify the agreement")

    wait_until("the nodes getting in step again", in_step(specs, clubs, node), nodes)
    dump = shown_path(root / OUTSIDER_EXPORT.format(name=outsider))
    print()
    say(
        f"And {name_of[outsider]}, which federates with "
        + joined(name_of[p] for p in partners)
        + "? Its node is in step with its partners. It runs one `sync` round with each "
        "by hand, lists the proposals it holds, and exports everything it holds, to "
        "search it for the proposal:",
        "",
    )
    federation("--node", node[outsider], "sync")
    federation("--node", node[outsider], "proposal", "list")
    federation("--node", node[outsider], "export", "-o", dump, stderr=True)
    held = Path(dump).read_bytes()
    found = [t for t in [*story.texts(), proposal, amended] if t.encode() in held]
    listed = query("--node", node[outsider], "proposal", "list", "--json")
    logs = query("--node", node[outsider], "status", "--json")["logs"]
    shared = [r for r in logs if str(r["audience"]).startswith("clubs:")]
    if found or listed or shared:
        raise FederationError(
            f"{name_of[outsider]}'s node holds some of the proposal, which was never meant "
            f"for it: {(found or listed or shared)[0]!r}"
        )
    print()
    say(
        f"None of the proposal is there: {len(held)} bytes exported, and not one of them "
        "is the proposal's title, aims, asks, commitments or ids. Its partners never even "
        "showed it that the proposal's logs exist: a node shows a club only the logs that "
        f"club may receive (protocol.md §5.4). Yet {name_of[outsider]} is a partner like "
        f"any other: it holds {name_of[hub]}'s federation events, its campaign among them:",
        "",
    )
    federation("--node", node[outsider], "log", "--club", short[hub])
    print()
    say(
        f"Checked on {name_of[outsider]}'s node: no proposal (`proposal list --json` is "
        "empty), no log addressed to a named set of clubs, and neither title nor any "
        "commitment in its export.",
    )
    return proposal
