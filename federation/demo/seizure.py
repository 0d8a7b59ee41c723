"""The demo's seized laptop (protocol.md §2.2, §3.6), with the nodes running.

The origin club backs its node up. Then its laptop is seized: the demo copies the
node directory (passphrase and all) to a rogue node, which an attacker starts at the
club's address and posts from, signing as the club; the hub takes the rogue's post
and relays it to the target. The club restores its backup on a new machine, three of
its five members bring their recovery shares, and the club revokes the seized key
from the point of the backup: every peer then holds the rogue's post apart (kept as
evidence, never relayed), follows the club's new key, and takes its next post.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federation.demo.console import (
    count,
    federation,
    joined,
    query,
    quote,
    say,
    section,
    shell,
    shown_path,
)
from federation.demo.processes import Nodes, wait_until
from federation.demo.spec import Cast, DemoSpec
from federation.errors import FederationError
from federation.node.system import system_clock

# Where the origin's shares, its backup, the rogue's copy and the new machine's node go,
# in the demo directory.
SHARES_FILE = "{name}-recovery-shares.txt"
WORDS_FILE = "{name}-recovery-words.txt"
MEMBER_FILE = "{name}-member-{i}-share.txt"
BACKUP_FILE = "{name}.backup"
ROGUE_DIR = "rogue-{name}"
RESTORED_DIR = "{name}-new"
# The origin's members split its recovery secret 3 of 5; three bring theirs.
SHARES = (3, 5)
ROGUE_TEXT = "The march is cancelled: stay at home. (Posted by whoever seized our laptop.)"
BACK_TEXT = "Our old key was seized and is revoked: the march is on. Trust only this key."


def recovery_options(root: Path, name: str, origin: str) -> list[str]:
    """`init`'s options for one demo club: the origin splits its recovery secret among
    five members; the others write their words to a file (a real club writes them on
    paper: neither file may stay on the node's machine)."""
    if name == origin:
        k, n = SHARES
        out = root / SHARES_FILE.format(name=name)
        return ["--recovery-shares", f"{k}/{n}", "--recovery-out", str(out)]
    return ["--recovery-out", str(root / WORDS_FILE.format(name=name))]


def _shares(root: Path, name: str) -> list[Path]:
    """The first k members' shares, each in a file of its own (as each member brings
    one), each copied out of the sheet `init` wrote by a printed `sed` that does the
    same: the sheet's line "share I of N (any K recover): WORDS" gives WORDS."""
    sheet = root / SHARES_FILE.format(name=name)
    k, n = SHARES
    found = {
        int(match[1]): match[2]
        for line in sheet.read_text(encoding="utf-8").splitlines()
        if (match := re.fullmatch(rf"share (\d+) of {n}[^:]*: (.*)", line))
    }
    if sorted(found) != list(range(1, n + 1)):
        raise FederationError(
            f"expected shares 1 to {n} in {shown_path(sheet)}, found {sorted(found) or 'none'}"
        )
    files = []
    for i in range(1, k + 1):
        path = root / MEMBER_FILE.format(name=name, i=i)
        # umask 077: a share is a secret, readable by its holder alone (as the sheet is).
        shell(
            f"(umask 077; sed -n 's/^share {i} of {n}[^:]*: //p' {quote(shown_path(sheet))} "
            f"> {quote(shown_path(path))})"
        )
        path.write_text(found[i] + "\n", encoding="utf-8")
        path.chmod(0o600)
        files.append(path)
    return files


def _texts(node: str, club: str) -> set[str]:
    """The note texts a node holds (and serves) of one club."""
    found = set()
    for event in query("--node", node, "log", "--club", club, "--json"):
        payload: Any = event.get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("text"), str):
            found.add(payload["text"])
    return found


def _holds(node: str, club: str, text: str, *, held: bool = True) -> Callable[[], bool]:
    return lambda: (text in _texts(node, club)) == held


def _synced_since(node: str, club: str, since_us: int) -> Callable[[], bool]:
    """Has `node` completed a round with the club's node since `since_us`, with nothing
    left to fetch and no error since (so `status` shows none)?"""

    def check() -> bool:
        peers = query("--node", node, "status", "--json")["peers"]
        return any(
            p["club"] == club
            and p["last_sync_us"] >= since_us
            and not p["last_error"]
            and p["behind"] == 0
            for p in peers
        )

    return check


def _held_apart(node: str) -> int:
    status = query("--node", node, "status", "--json")
    return sum(len(h.get("events", [])) or 1 for h in status.get("held_apart", []))


def show_seizure(
    root: Path,
    specs: dict[str, DemoSpec],
    clubs: dict[str, str],
    roles: Cast,
    nodes: Nodes,
    listens: dict[str, str],
    *,
    step: int,
) -> Path:
    """Run the scene; returns the origin's node directory on its new machine."""
    origin, hub, target = roles.origin, roles.hub, roles.target
    name_of = {n: specs[n].club.name for n in specs}
    node = {n: shown_path(root / n) for n in specs}
    club = clubs[origin]
    backup = root / BACKUP_FILE.format(name=origin)
    rogue = root / ROGUE_DIR.format(name=origin)
    restored = root / RESTORED_DIR.format(name=origin)
    watchers = [hub, target]

    section(
        f"{step}. A seized laptop: revoke the key, carry on under a new one",
        f"{name_of[origin]} backs its node up (`backup` works on a running node; the file "
        "is encrypted with the passphrase, and the store inside stays encrypted too).",
    )
    federation("--node", node[origin], "backup", "-o", shown_path(backup))

    say(
        "",
        "Then its laptop is seized, and the passphrase with it: its node stops. The "
        "attacker copies the node directory, starts it at "
        f"{name_of[origin]}'s address and posts as the club. "
        f"The signature is good: {name_of[hub]} takes the post and relays it to "
        f"{name_of[target]}.",
    )
    nodes.stop_node(origin)
    # `cp -a`: the copy keeps every file's mode (the keys stay 0600); its run.log is
    # replaced when the rogue starts, as `2>` replaces it.
    shell(f"cp -a {quote(node[origin])} {quote(shown_path(rogue))}")
    shutil.copytree(root / origin, rogue, symlinks=True)
    nodes.run(f"rogue {origin}", rogue, listens[origin])
    nodes.wait_listening()
    federation(
        "--node", shown_path(rogue), "post", "note", "--audience", "public", "--text", ROGUE_TEXT
    )
    for name in watchers:
        wait_until(
            f"{name_of[name]} takes the rogue's post",
            _holds(node[name], club, ROGUE_TEXT),
            nodes,
        )
    federation("--node", node[target], "log", "--club", name_of[origin], "--log", "public")
    say("", "(The demo stops the rogue node: on this one machine the new one needs its port.)")
    nodes.stop_node(f"rogue {origin}")

    k, n = SHARES
    say(
        "",
        f"{name_of[origin]} restores its backup on a new machine. A restored node writes "
        "nothing until a peer has shown it its own heads; but it may revoke its key at "
        f"once. {count(k).capitalize()} of its {n} members bring their recovery shares "
        "(the secret was split among them at `init` and never stored on the node), and "
        "the club revokes the seized key from the point of the backup: every event the "
        "seized key signed after it, anywhere, is void.",
    )
    federation("restore", shown_path(backup), shown_path(restored))
    say("", f"Each of the {count(k)} members puts the share they bring in a file of its own:")
    share_args = [a for path in _shares(root, origin) for a in ("--share", shown_path(path))]
    federation("--node", shown_path(restored), "key", "revoke", *share_args)
    say(
        "",
        "Its private log exists on no other node, so no peer can show it that log's head: "
        "the club says so itself (events it wrote there after the backup are lost).",
    )
    federation("--node", shown_path(restored), "declare-no-copies", "private")
    say("", f"{name_of[origin]} starts its node on the new machine, at its old address:")
    restarted_us = system_clock()
    nodes.run(origin, restored, listens[origin])
    nodes.wait_listening()

    for name in watchers:
        wait_until(
            f"{name_of[name]} holds the rogue's post apart",
            _holds(node[name], club, ROGUE_TEXT, held=False),
            nodes,
        )
    wait_until(
        f"{name_of[origin]}'s restored node may write again",
        lambda: (
            not query("--node", shown_path(restored), "status", "--json").get("restored_waiting")
        ),
        nodes,
    )
    federation(
        "--node", shown_path(restored), "post", "note", "--audience", "public", "--text", BACK_TEXT
    )
    for name in watchers:
        wait_until(
            f"{name_of[name]} takes {name_of[origin]}'s post under its new key",
            _holds(node[name], club, BACK_TEXT),
            nodes,
        )
    say(
        "",
        f"{joined(name_of[w] for w in watchers)} follow {name_of[origin]}'s new key. The "
        "rogue's post is held apart as evidence: never shown as the club's, never relayed.",
    )
    federation("--node", node[target], "log", "--club", name_of[origin], "--log", "public")
    # The hub may have taken the post through another peer (the outsider federates with
    # both) while its own follow loop still waits out the backoff after the failures
    # while no node ran at the origin's address (follow.py: doubling, up to a minute).
    # One round by hand reaches the new node now; the status then shows no error.
    say(
        "",
        f"While no node ran at {name_of[origin]}'s address, {name_of[hub]}'s node could "
        "not reach it, and it waits longer after each failed try (up to a minute) before "
        f"it tries again. Rather than wait, {name_of[hub]} runs one `sync` round with "
        f"{name_of[origin]} by hand, and its status shows the new node reached:",
        "",
    )
    federation("--node", node[hub], "sync", name_of[origin])
    wait_until(
        f"{name_of[hub]} syncing with {name_of[origin]}'s new node",
        _synced_since(node[hub], club, restarted_us),
        nodes,
    )
    federation("--node", node[hub], "status")
    for name in watchers:
        if _held_apart(node[name]) < 1:
            raise FederationError(f"{name_of[name]} does not report the rogue's post held apart")
    return restored
