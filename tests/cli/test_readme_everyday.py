"""README "Everyday use" stays true: its transcript is run, command by command, on real
nodes, and what each command prints is compared with what the README shows.

The session: Riverside Tenants' Union runs its node with two partner clubs, Northside
(online) and Harbour (offline since 14:00). At 17:00 a member posts an action to the
running node; Northside's node fetches it at once, Harbour's cannot. At 17:02 the
member reads `status` and `calendar`. Every node, the served ones (tests/cli/everyday.py
serves them from a thread, as `federation run` would) and those the CLI opens, reads
one fixed clock; TZ is Europe/Berlin. Only what must vary is normalised: ids (hex,
random with the keys) and ports.

To rewrite the README's transcript after a deliberate change of output, run with
FEDERATION_WRITE_README=1 and review the diff.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from federation.node import delivery
from federation.node.node import init_node
from tests.cli.everyday import Served, SetClock, check_widths, fixed_time, run_cli

README = Path(__file__).parents[2] / "README.md"
SECTION = "## Everyday use"
PASSPHRASE = "correct horse battery staple"
CLUBS = {
    "riverside": "Riverside Tenants' Union",
    "northside": "Northside Workers' Club",
    "harbour": "Harbour Reading Group",
}
pytestmark = pytest.mark.timeout(120)


def transcript() -> tuple[int, int, list[tuple[str, str]]]:
    """The README's transcript: where its block starts and ends (line numbers), and
    each `$ federation ...` command with the output shown under it."""
    lines = README.read_text().splitlines()
    start = lines.index(SECTION)
    first = lines.index("```", start) + 1
    last = lines.index("```", first)
    steps: list[tuple[str, list[str]]] = []
    for line in lines[first:last]:
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"README {SECTION}: output before any command: {line!r}"
            steps[-1][1].append(line)
    return first, last, [(cmd, "".join(f"{o}\n" for o in out)) for cmd, out in steps]


def normalised(text: str) -> str:
    """Ids (runs of 6 or more hex digits) and ports, as what they are."""
    text = re.sub(r"127\.0\.0\.1('?[:,] ?)\d+", r"127.0.0.1\1PORT", text)
    return re.sub(r"\b[0-9a-f]{6,64}\b", lambda m: "#" * len(m.group()), text)


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_everyday_transcript_is_what_the_cli_prints(tmp_path: Path) -> None:
    first, last, steps = transcript()
    assert [shlex.split(cmd)[1] for cmd, _ in steps] == ["post", "status", "calendar"]
    # The nodes start a little before the session: a node refuses requests made at or
    # before its start as possibly replayed (protocol.md §5.2), and this clock stands
    # still between the test's steps.
    clock = SetClock("2026-12-01T13:55+01:00")
    node = {club: tmp_path / club for club in CLUBS}
    with fixed_time(clock, "Europe/Berlin"), pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEDERATION_PASSPHRASE", PASSPHRASE)
        served = Served(clock)
        try:
            for club, name in CLUBS.items():
                served.call(
                    init_node(
                        node[club],
                        name=name,
                        listen="127.0.0.1:0",
                        passphrase=PASSPHRASE.encode(),
                        plain_http=True,
                        clock=clock,
                    )
                )
                served.start(node[club])
            for partner in ("northside", "harbour"):
                served.federate(node["riverside"], node[partner])
            ours = served.services[node["riverside"]].rt

            def held_by(*partners: str) -> Callable[[], bool]:
                """Each partner showed it holds our logs, and a round with it ended."""

                def check() -> bool:
                    found = served.call(delivery.deliveries(ours.store, ours.club))
                    done = {p.name for p in found if p.logs and p.delivered}
                    synced = {
                        p.name for p in served.call(ours.store.peers()) if p.status.last_sync_us
                    }
                    return {CLUBS[p] for p in partners} <= done & synced

                return check

            # 14:00: the three nodes run and exchange what they hold; then Harbour's
            # node goes offline.
            clock.set("2026-12-01T14:00+01:00")
            for root in node.values():
                served.follow(root)
            wait_until(held_by("northside", "harbour"), "both partners holding our roster")
            for root in node.values():
                served.stop_following(root)
            served.stop(node["harbour"])

            # 17:00: a member posts to the running node; Northside fetches it, Harbour
            # cannot be reached.
            clock.set("2026-12-01T17:00+01:00")
            served.refresh()  # as a node starting its loops again reads its peers' status
            served.follow(node["riverside"])
            served.follow(node["northside"])
            outputs = []
            cmd, _ = steps[0]
            outputs.append(run_cli(node["riverside"], *shlex.split(cmd)[1:]).out)

            def harbour_failed() -> bool:
                peers = served.call(ours.store.peers())
                return any(
                    p.name == CLUBS["harbour"] and p.status.last_error_us == clock() for p in peers
                )

            wait_until(held_by("northside"), "Northside holding the new action")
            wait_until(harbour_failed, "a failed attempt to reach Harbour")
            served.stop_following(node["riverside"])
            served.stop_following(node["northside"])

            # 17:02: the member reads status and the calendar.
            clock.set("2026-12-01T17:02+01:00")
            for cmd, _ in steps[1:]:
                outputs.append(run_cli(node["riverside"], *shlex.split(cmd)[1:]).out)
        finally:
            served.close()

    if os.environ.get("FEDERATION_WRITE_README"):
        lines = README.read_text().splitlines()
        block = [
            line
            for (cmd, _), out in zip(steps, outputs, strict=True)
            for line in [f"$ {cmd}", *out.splitlines()]
        ]
        README.write_text("\n".join([*lines[:first], *block, *lines[last:]]) + "\n")
        return
    for (cmd, shown), out in zip(steps, outputs, strict=True):
        if not cmd.startswith("federation post"):  # post prints the event's whole id
            check_widths(out.splitlines())
        assert normalised(out) == normalised(shown), (
            f"README `{cmd}` shows:\n{shown}\nprints:\n{out}"
        )
