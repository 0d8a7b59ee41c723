"""The CLI's commands about blocked clubs: block, unblock, blocked (protocol.md §6.3)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from federation.cli.output import Output, format_time
from federation.node import blocking
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


def blocked_lines(found: list[BlockedClub]) -> list[str]:
    return [f"  {b.club.hex()}  since {format_time(b.blocked_us)}" for b in found] or ["  none"]


def add_club_argument(c: argparse.ArgumentParser) -> None:
    c.add_argument("club", metavar="CLUB", help="the club's id, an id prefix, or a peer's name")


async def cmd_block(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        b = await blocking.block(node, args.club)
    if b.already:
        line = f"club {b.club.hex()} was blocked already (since {format_time(b.blocked_us)})"
    else:
        line = (
            f"blocked club {b.club.hex()}: dropped {b.events} events in {b.logs} logs; "
            "its logs are refused and not relayed from now on"
        )
    return Output(blocked_json(b), [line])


async def cmd_unblock(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        b = await blocking.unblock(node, args.club)
    return Output(
        blocked_json(b),
        [f"unblocked club {b.club.hex()}: peers may send its logs again"],
    )


async def cmd_blocked(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        found = await blocking.blocked(node)
    return Output([blocked_json(b) for b in found], ["blocked clubs:", *blocked_lines(found)])
