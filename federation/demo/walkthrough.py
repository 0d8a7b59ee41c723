"""The scripted steps of the demo, and what it prints between them.

Create a node per club, sign each spec's posts, peer the clubs, start the nodes,
and show sync at work: a new post travelling from node to node, what a relay passes
on and what it must not, per-peer status. Then verify, erase, calendar and
campaigns, a joint campaign proposal (demo/proposal.py) and the public feed;
`keep_running` leaves the federation running for the user until Ctrl-C.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from federation.core.invite import read_invite
from federation.demo.check import audience_problems, in_step
from federation.demo.console import (
    count,
    federation,
    joined,
    query,
    quote,
    say,
    section,
    shown_path,
)
from federation.demo.feed import feed_address, feed_url, show_feed
from federation.demo.processes import FIRST_SYNC_S, RUN_LOG, Nodes, check_ports, wait_until
from federation.demo.proposal import show_proposal
from federation.demo.seizure import RESTORED_DIR, recovery_options, show_seizure
from federation.demo.spec import FEATURED, DemoSpec, Post, cast, describe, post_arguments
from federation.errors import ConfigError, FederationError
from federation.node.keyfile import PASSPHRASE_ENV

# Printed on purpose: it protects nothing but demo keys. A real club chooses its own.
DEMO_PASSPHRASE = "demo passphrase, not a secret"
# Invites are long (the club's genesis, address, fingerprint and signature): on
# screen, this many characters of one are enough to recognise it.
INVITE_SHOWN = 60


def event_id(out: str) -> str:
    event = out.split(maxsplit=1)[0] if out.strip() else ""
    if not re.fullmatch(r"[0-9a-f]{64}", event):
        raise FederationError(f"`post` printed no event id: {out.strip()!r}")
    return event


def walk(
    root: Path, specs: dict[str, DemoSpec], listens: dict[str, str], nodes: Nodes
) -> dict[str, str]:
    """The scripted part, with the nodes running from step 5 on; returns the club ids."""
    featured = FEATURED if FEATURED in specs else next(iter(specs))
    order = [featured, *sorted(set(specs) - {featured})]
    node = {name: shown_path(root / name) for name in order}
    name_of = {name: specs[name].club.name for name in order}
    to_erase = [(n, p) for n in order for p in specs[n].posts if p.erase]
    if not to_erase:
        raise ConfigError("no post in nodes/ is marked `erase = true`; mark one to demo erasure")
    roles = cast(specs, featured)
    hub, origin, target = roles.hub, roles.origin, roles.target
    # The clubs Harbour gets Northside's public events through: Riverside and Millbrook.
    relays = [n for n in order if n in specs[target].club.peers and n in specs[origin].club.peers]
    links = sorted({tuple(sorted((a, b))) for a in order for b in specs[a].club.peers})

    section(
        f"federation demo: {len(specs)} clubs, each running its own node",
        "Clubs of organisers keep signed, hash-chained logs of what they do, each club on "
        "its own node: no club is in charge and no platform holds everyone's data. Clubs "
        "that choose each other federate: their nodes sync what they may share. This "
        f"demo creates a node for each club in nodes/ ({', '.join(name_of.values())}) "
        f"under {shown_path(root)}/, federates them, runs them, and shows what travels "
        "and what never does.",
        "",
        "Every step below is a real command, nearly all of them `federation` ones, "
        "printed so that you can repeat it. To type them yourself, put the command on your "
        "PATH and give it the demo clubs' passphrase:",
    )
    print("$ . .venv/bin/activate")
    print(f"$ export {PASSPHRASE_ENV}={quote(DEMO_PASSPHRASE)}")
    print()
    say(
        "Each club's signing key is sealed with a passphrase: federation asks for it at a "
        f"terminal, or reads {PASSPHRASE_ENV}. This one is a demo value, printed on "
        "purpose; a real club chooses its own and keeps it out of scripts."
    )

    section(
        "1. Create a node for each club",
        "`init` makes the club's identity and its node directory: the signing key sealed "
        "with the passphrase, a recovery secret shown once as words to write down (to "
        "revoke a seized key; the demo writes it to a file beside each node, and splits "
        "one club's among five members), a TLS certificate for partner clubs to pin, and "
        "the store, encrypted.",
    )
    clubs: dict[str, str] = {}
    feed = feed_address(listens, featured)
    for name in order:
        serve_feed = ["--feed-listen", feed] if name == featured else []
        out = federation(
            "--node",
            node[name],
            "init",
            "--name",
            specs[name].club.name,
            "--listen",
            listens[name],
            *serve_feed,
            *recovery_options(root, name, roles.origin),
        )
        clubs[name] = out.split(maxsplit=1)[0] if out.strip() else ""
        if not re.fullmatch(r"[0-9a-f]{64}", clubs[name]):
            raise FederationError(f"`init` printed no club id: {out.strip()!r}")
    short = {name: club[:12] for name, club in clubs.items()}
    say("", "The first line is the club's id. The nodes do not know each other yet.")

    section(
        "2. Record what each club did",
        "Each event is signed into the club's log for its audience:",
        "- private: the club alone. It never leaves the node. Members' monthly reports go here.",
        "- federation: the clubs this club federates with.",
        "- public: anyone, including readers of the public feed.",
    )
    erase_ids: list[tuple[str, str, Post]] = []
    for name in order:
        print(f"# {name_of[name]}")
        for post in specs[name].posts:
            if post.live:
                continue
            event = event_id(federation("--node", node[name], *post_arguments(post)))
            if post.erase:
                erase_ids.append((name, event, post))
        print()

    section(
        f"3. What {name_of[featured]}'s node holds",
        "One log per audience, each its own hash chain; the log column (private#1, "
        "public#1, ...) names the log and the event's seq in it. Because private events "
        "live in a log of their own, a partner club will never even learn how many there are.",
    )
    federation("--node", node[featured], "log")

    section(
        "4. Peering: clubs choose each other",
        "Peers are named, never discovered. A club gives its invite to the clubs it "
        "chooses, in person or over a channel it trusts: the invite carries the club's "
        "id, name, address and TLS certificate fingerprint, signed by the club's key.",
    )
    invites: dict[str, str] = {}
    for name in order:
        invites[name] = federation("--node", node[name], "invite", clip=INVITE_SHOWN).strip()
        found = read_invite(invites[name])
        print(
            f"    (club {found.club.hex()[:12]}, {found.url}, "
            f"TLS fingerprint {found.fingerprint[:12]}…)"
        )
    print()
    say(
        "Each club adds the invites of the clubs in its spec's `peers`. Federation is "
        "mutual: both sides add each other. Here "
        + "; ".join(f"{name_of[a]} <-> {name_of[b]}" for a, b in links)
        + f". {name_of[origin]} and {name_of[target]} do not federate with each other.",
        "",
        "On one machine, `$(...)` passes the other node's invite straight in; between "
        "real clubs you paste the invite you were given.",
        "",
    )
    for name in order:
        for peer in specs[name].club.peers:
            federation(
                "--node",
                node[name],
                "peers",
                "add",
                invites[peer],
                shown=f'--node {quote(node[name])} peers add "$(federation --node '
                f'{quote(node[peer])} invite)"',
            )
    say(
        "",
        "Adding a peer also signs it into the club's roster, a federation log of its own: "
        "relays read a club's roster to know who may receive that club's federation events.",
    )

    section(
        "5. Start the nodes",
        "`run` serves the club's partners over TLS pinned to the invite's fingerprint and "
        "follows every peer: it asks for the peer's frontier (what it holds: one head per "
        "log), fetches what is missing, checks every event, and waits for more. The demo "
        "starts each node in the background and keeps what it says in run.log.",
    )
    check_ports({**listens, f"{featured} feed": feed})
    for name in order:
        nodes.run(name, root / name, listens[name])
    nodes.wait_listening()
    took = wait_until(
        "the nodes' first sync", in_step(specs, clubs, node), nodes, timeout_s=FIRST_SYNC_S
    )
    print()
    say(
        f"All {len(order)} nodes are listening ("
        + ", ".join(f"{name} on {listens[name]}" for name in order)
        + f"), and {took:.1f} s later each held what its partners may share with it. A "
        "node that started before its peer may not have reached it at first, and tried again "
        "a moment later (its run.log says so). They sync on their own from now on; the demo "
        "stops them when it ends."
    )

    live_posts = [post for post in specs[origin].posts if post.live]
    section(
        f"6. Sync: {name_of[origin]} posts, the others receive",
        f"With the nodes running, {name_of[origin]} posts {count(len(live_posts))} more "
        f"event{'s' * (len(live_posts) != 1)}, "
        "just as before. "
        f"Its node tells {name_of[hub]}'s node, which is waiting on it, within a moment.",
    )
    live = [
        (event_id(federation("--node", node[origin], *post_arguments(post))), post)
        for post in live_posts
    ]
    shared = {event for event, post in live if post.audience != "private"}
    public = {event for event, post in live if post.audience == "public"}

    def holds(name: str, events: set[str]) -> Callable[[], bool]:
        def check() -> bool:
            held = query(
                "--node", node[name], "log", "--club", clubs[origin], "--limit", "100000", "--json"
            )
            return events <= {e["id"] for e in held}

        return check

    took = wait_until(f"{name_of[hub]} receiving the new events", holds(hub, shared), nodes)
    took += wait_until(
        f"{name_of[target]} receiving the public event, relayed",
        holds(target, public),
        nodes,
    )
    wait_until("the nodes getting in step again", in_step(specs, clubs, node), nodes)
    print()
    say(
        f"{name_of[hub]} had both new events, and {name_of[target]} the public one, "
        f"{took:.1f} s after the posts. Everything {name_of[hub]}'s node now holds from "
        f"{name_of[origin]} (`--club` takes a prefix of the club id):",
        "",
    )
    federation("--node", node[hub], "log", "--club", short[origin])
    print()
    say(f"And what {name_of[target]}'s node holds from {name_of[origin]}:", "")
    federation("--node", node[target], "log", "--club", short[origin])
    print()
    say(
        f"{name_of[target]} never talks to {name_of[origin]}: it got these through "
        f"{joined(name_of[n] for n in relays)}, which relay. Signed events cannot be forged "
        "by a relay, but they could leak there, so a relay passes on an event only to "
        "clubs its author's audience includes. To be sure nothing more is on the way, "
        f"{name_of[target]} runs one `sync` round with each of its peers by hand (its "
        f"node does this on its own), then looks for {name_of[origin]}'s notes:",
        "",
    )
    federation("--node", node[target], "sync")
    federation("--node", node[target], "log", "--club", short[origin], "--kind", "note")
    held = {e["id"] for e in query("--node", node[target], "log", "--limit", "100000", "--json")}
    leaked = [post for event, post in live if post.audience != "public" and event in held]
    if leaked or not public <= held:
        raise FederationError(
            f"{name_of[target]} holds {name_of[origin]}'s non-public new events "
            "or lacks its public one: relaying broke the origin's audience"
        )
    print()
    say(
        f"- Relayed: {name_of[origin]}'s public events. Public means anyone, so "
        f"{joined(name_of[n] for n in relays)} pass them to {name_of[target]}.",
        f"- Not relayed: {name_of[origin]}'s federation events (its campaign and its new "
        f"note). Its signed roster names {joined(name_of[n] for n in relays)}: "
        f"{name_of[target]} is not a club {name_of[origin]} federates with, so they "
        "never offer them.",
        "- Never sent at all: private events. Each node holds only its own club's members' "
        "reports:",
        "",
    )
    for name in order:
        federation("--node", node[name], "log", "--kind", "report")
    for name in order:
        for event in query("--node", node[name], "log", "--limit", "100000", "--json"):
            if event["audience"] == "private" and event["club"] != clubs[name]:
                raise FederationError(
                    f"{name_of[name]}'s node holds a private {event['kind']} of club "
                    f"{event['club'][:12]}: a private event left its club"
                )
    if problems := audience_problems(specs, clubs, node):
        raise FederationError(problems[0])
    print()
    say(
        "Checked on every node: it holds no private event of another club, and another "
        "club's federation logs only if that club federates with it."
    )

    section(
        "7. What sync is doing",
        "A node shows what it knows about each peer: when it last heard from it "
        "(contact) and last held everything it had (synced), how many heads they "
        "exchanged (logs), how many events it is still missing (behind), how many it "
        "received, and the last error, if one is newer than the last contact.",
    )
    federation("--node", node[hub], "status")
    print()
    for name in order:
        if name != hub:
            federation("--node", node[name], "peers", "list")

    section(
        "8. Check everything the node holds",
        "`verify` checks every event: its signature, the hash link to the event before "
        "it, and its payload against the hash in the signed header, for every club's "
        "logs the node holds. Anyone who holds the events can do this offline; one "
        "changed byte anywhere fails it.",
    )
    federation("--node", node[featured], "verify")

    for name, event, post in erase_ids:
        section(
            f"9. Erase a payload: {describe(post)}",
            f"{name_of[name]} wipes {describe(post)}: a member may ask to be forgotten, or "
            "a report may say too much about someone. `erase` drops the payload but keeps "
            "the signed header, which commits to the payload only by its hash and size: "
            "nobody can read what was erased, and the chain still verifies.",
        )
        federation("--node", node[name], "erase", event)
        shown = federation("--node", node[name], "show", event)
        if "[erased]" not in shown:
            raise FederationError(f"`show` does not report event {event[:12]} as erased")
        checked = federation("--node", node[name], "verify")
        if "verify ok" not in checked or "(0 erased)" in checked:
            raise FederationError("`verify` after the erase does not report an erased event")

    section(
        "10. Calendar and campaigns",
        "Both are worked out from the logs a node holds (`federation rebuild` redoes "
        "them from nothing), so each club sees its own and what its partners share with "
        f"it: {name_of[target]} sees {name_of[origin]}'s public actions but not its "
        "federation campaign.",
    )
    for name in order:
        federation("--node", node[name], "calendar")
    for name in order:
        federation("--node", node[name], "campaigns")
    show_proposal(root, specs, clubs, roles, nodes, step=11)
    show_feed(feed, name_of[featured], step=12)
    show_seizure(root, specs, clubs, roles, nodes, listens, step=13)
    nodes.check()
    return clubs


def keep_running(
    root: Path, specs: dict[str, DemoSpec], clubs: dict[str, str], nodes: Nodes, feed: str = ""
) -> None:
    """Leave the nodes running for the user to try things, until Ctrl-C."""
    featured = FEATURED if FEATURED in specs else next(iter(specs))
    roles = cast(specs, featured)
    node = {name: quote(shown_path(root / name)) for name in specs}
    # After the seized laptop scene the origin's node lives on its new machine.
    restored = root / RESTORED_DIR.format(name=roles.origin)
    if restored.exists():
        node[roles.origin] = quote(shown_path(restored))
    section(
        "The federation is running: try it",
        "The nodes keep running until you press Ctrl-C here. In another terminal, in "
        "this directory:",
    )
    print("$ . .venv/bin/activate")
    print(f"$ export {PASSPHRASE_ENV}={quote(DEMO_PASSPHRASE)}")
    print(f'$ federation --node {node[roles.target]} post note --audience public --text "Hello"')
    print(f"$ federation --node {node[roles.origin]} log --club {clubs[roles.target][:12]}")
    print(f"$ federation --node {node[roles.hub]} status")
    print(f"$ federation --node {node[roles.target]} sync")
    print(f"$ tail -f {node[roles.hub]}/{RUN_LOG}")
    print(f"$ federation --node {node[roles.target]} proposal list")
    print(f"$ federation --node {node[roles.outsider]} proposal list")
    if feed:
        print(f"$ xdg-open {feed_url(feed)}  # the public feed, served by {node[featured]}")
    print()
    relays = [n for n in specs[roles.target].club.peers if n in specs[roles.origin].club.peers]
    say(
        f"A public note from {specs[roles.target].club.name} reaches "
        f"{specs[roles.origin].club.name} through "
        f"{joined(specs[n].club.name for n in relays)} within a second or two; post it with "
        "--audience federation instead and it stops at the clubs "
        f"{specs[roles.target].club.name} federates with.",
        "",
        "Press Ctrl-C to stop the nodes.",
    )
    sys.stdout.flush()
    while True:
        nodes.check()
        time.sleep(0.5)
