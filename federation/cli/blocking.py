"""The CLI's commands about blocked clubs: block, unblock, blocked (protocol.md §6.3)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgspec

from federation.cli.names import SHORT_HEX, Labels, known_labels
from federation.cli.output import Output, format_time, format_when, plural
from federation.node import blocking, control
from federation.node.blocking import BlockedClub
from federation.node.node import Node


def blocked_json(b: BlockedClub) -> dict[str, Any]:
    return {
        "club": b.club.hex(),
        "blocked_us": b.blocked_us,
        "logs": b.logs,
        "events": b.events,
        "already": b.already,
    }


def blocked_lines(found: list[BlockedClub], known: Labels | None = None) -> list[str]:
    """Each blocked club by name where known, always with the start of its id (a club
    is blocked by id: the id is what `unblock` takes), since when, in the reader's zone."""
    known = known or Labels({})
    return [
        f"  {known(b.club)}"
        + ("" if known(b.club).startswith("club ") else f" ({b.club.hex()[:SHORT_HEX]})")
        + f"  since {format_when(b.blocked_us)}"
        for b in found
    ] or ["  none"]


def add_club_argument(c: argparse.ArgumentParser) -> None:
    c.add_argument("club", metavar="CLUB", help="the club's id, an id prefix, or a peer's name")


async def _blocking(root: Path, op: str, club: str) -> BlockedClub:
    """Block or unblock, done by the running node when there is one."""
    done = await control.write(root, {"op": op, "club": club})
    return msgspec.json.decode(done, type=BlockedClub)


async def cmd_block(args: argparse.Namespace) -> Output:
    b = await _blocking(Path(args.node), "block", args.club)
    if b.already:
        line = f"club {b.club.hex()} was blocked already (since {format_time(b.blocked_us)})"
    else:
        line = (
            f"blocked club {b.club.hex()}: dropped {plural(b.events, 'event')} in "
            f"{plural(b.logs, 'log')}; "
            "its logs are refused and not relayed from now on"
        )
    return Output(blocked_json(b), [line])


async def cmd_unblock(args: argparse.Namespace) -> Output:
    b = await _blocking(Path(args.node), "unblock", args.club)
    return Output(
        blocked_json(b),
        [f"unblocked club {b.club.hex()}: peers may send its logs again"],
    )


async def cmd_blocked(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        found = await blocking.blocked(node)
        known = await known_labels(node)
    lines = ["blocked clubs:", *blocked_lines(found, known)]
    return Output([blocked_json(b) for b in found], lines)
