"""The CLI's commands about other clubs: invite, peers, sync, run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from federation.cli.output import Output, format_ago, progress, say
from federation.errors import FederationError, UsageError
from federation.node import peering
from federation.node.follow import status_after, sync_round, with_error
from federation.node.node import Node
from federation.node.runtime import Runtime
from federation.service import open_service
from federation.store.base import PeerRecord
from federation.web.client import PeerClient


def peer_json(peer: PeerRecord) -> dict[str, Any]:
    s = peer.status
    return {
        "club": peer.club.hex(),
        "name": peer.name,
        "url": peer.url,
        "fingerprint": peer.fingerprint.hex(),
        "state": peer.state,
        "last_contact_us": s.last_contact_us,
        "last_sync_us": s.last_sync_us,
        "logs": s.logs,
        "behind": s.behind,
        "received": s.received,
        "last_error": s.last_error,
        "last_error_us": s.last_error_us,
        "quota_warning": s.quota_warning,
        "quota_warning_us": s.quota_warning_us,
    }


def peer_lines(peer_list: list[PeerRecord], now_us: int) -> list[str]:
    lines = []
    for p in peer_list:
        s = p.status
        contact = format_ago(now_us, s.last_contact_us)
        lines.append(
            f"  {p.name:24} {p.club.hex()[:12]}  {p.state:6}  contact {contact}"
            f", synced {format_ago(now_us, s.last_sync_us)}, {s.logs} logs, behind {s.behind}, "
            f"received {s.received}"
        )
        if s.last_error and s.last_error_us >= s.last_contact_us:
            lines.append(f"    last error ({format_ago(now_us, s.last_error_us)}): {s.last_error}")
        if s.quota_warning:
            ago = format_ago(now_us, s.quota_warning_us)
            lines.append(f"    over a quota ({ago}): {s.quota_warning}")
    return lines or ["  no peers: add one with `federation peers add INVITE`"]


def add_invite_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--url", help="the address other clubs reach this node at")


async def cmd_invite(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        text = await peering.invite(node, args.url)
    return Output({"invite": text}, [text])


def add_peers_arguments(c: argparse.ArgumentParser) -> None:
    # The actions parse errors as the top-level parser does: the same parser class.
    actions = c.add_subparsers(dest="peers_command", metavar="ACTION", parser_class=type(c))

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help)
        # `peers list --json` as well as `peers --json list`; SUPPRESS keeps the latter's.
        a.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
        return a

    action("list", "each peer with its sync status")
    a = action("add", "federate with the club of an invite")
    a.add_argument("invite", metavar="INVITE")
    for name, text in (
        ("pause", "stop syncing with a peer for now"),
        ("resume", "sync with a paused peer again"),
        ("remove", "stop federating with a peer (signed into the roster)"),
    ):
        a = action(name, text)
        a.add_argument("peer", metavar="PEER", help="the peer's name or club id prefix")


async def cmd_peers(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        action = args.peers_command
        if action == "add":
            peer = await peering.add(node, args.invite)
            return Output(
                peer_json(peer), [f"added peer {peer.name} ({peer.club.hex()}) at {peer.url}"]
            )
        if action in ("pause", "resume"):
            peer = await peering.set_state(
                node, args.peer, "paused" if action == "pause" else "active"
            )
            return Output(peer_json(peer), [f"{peer.name} is now {peer.state}"])
        if action == "remove":
            peer = await peering.remove(node, args.peer)
            return Output(
                peer_json(peer),
                [f"removed peer {peer.name}; it no longer receives federation logs"],
            )
        peer_list = await node.store.peers()
        return Output(
            [peer_json(p) for p in peer_list], ["peers:", *peer_lines(peer_list, node.clock())]
        )


def add_sync_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("peer", metavar="PEER", nargs="?", help="the peer's name or club id prefix")


async def cmd_sync(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node:
        key = node.unlock()
        if args.peer:
            chosen = [await peering.find(node, args.peer)]
        else:
            chosen = [p for p in await node.store.peers() if p.state == "active"]
        if not chosen:
            raise UsageError("no active peers to sync with; add one with `federation peers add`")
        rt = Runtime(node, key, node.clock)
        await rt.refresh()
        results: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http:
            for peer in chosen:
                results.append(await _sync_one(rt, http, peer))
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['peer']}: error: {r['error']}")
            continue
        line = f"{r['peer']}: received {r['added']} events ({r['logs']} logs); behind {r['behind']}"
        if r["forks"]:
            line += f"; {r['forks']} FORK(S) kept as evidence, logs frozen"
        if r["warnings"]:
            line += "; " + "; ".join(r["warnings"])
        if not r["complete"]:
            line += "; not complete: run `federation sync` again"
        lines.append(line)
    # A round that did not complete (the peer holds more than we took) is a failure
    # too: a script must be able to tell whether it is caught up.
    failed = any("error" in r or not r["complete"] for r in results)
    return Output(results, lines, exit_code=1 if failed else 0)


async def _sync_one(rt: Runtime, http: aiohttp.ClientSession, peer: PeerRecord) -> dict[str, Any]:
    client = PeerClient(http, peer, me=rt.club, key=rt.key, clock=rt.clock)
    status = peer.status
    try:
        with progress(None, f"sync {peer.name}") as advance:
            result = await sync_round(
                rt, client, known=None, wait_s=0.0, advance=advance, on_behind=advance.expect
            )
    except FederationError as exc:
        await rt.store.set_peer_status(peer.club, with_error(status, exc, rt.clock()))
        return {"peer": peer.name, "error": str(exc)}
    await rt.store.set_peer_status(peer.club, status_after(status, result, rt.clock()))
    return {
        "peer": peer.name,
        "added": result.added,
        "behind": result.behind,
        "logs": result.logs,
        "forks": result.forks,
        "complete": result.complete,
        "warnings": result.warnings,
    }


async def cmd_run(args: argparse.Namespace) -> Output:
    async with await Node.open(Path(args.node)) as node, open_service(node) as service:
        scheme = "http" if node.config.node.plain_http else "https"
        say(
            f"federation: {node.config.club.name} serving on {scheme}://"
            f"{node.config.node.listen.rpartition(':')[0]}:{service.port}; "
            f"following {len(service.rt.active_peers())} peers (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )
        if service.feed is not None and node.config.feed is not None:
            host = node.config.feed.listen.rpartition(":")[0]
            say(f"federation: public feed on http://{host}:{service.feed.port}/", file=sys.stderr)
        # A service manager stops the node with SIGTERM: stop as cleanly as on Ctrl-C.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await service.follow_peers()
    say("federation: stopped", file=sys.stderr, flush=True)
    return Output({}, [])
