"""The CLI's commands about other clubs: invite, peers, sync, run."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from federation.cli import runlog, stop
from federation.cli.names import Labels, known_labels, name_places
from federation.cli.output import Output, format_ago, plural, progress
from federation.cli.table import Column, table, terminal_width, wrap
from federation.core.config import Config
from federation.errors import FederationError, UsageError
from federation.node import control, delivery, lock, peering
from federation.node.follow import status_after, sync_round, with_error
from federation.node.keyfile import needs_passphrase, read_key_file
from federation.node.node import Node, NodePaths, load_config, read_passphrase
from federation.node.runtime import Runtime
from federation.service import open_service
from federation.store.base import LogRecord, PeerRecord
from federation.web.client import PeerClient

_log = logging.getLogger(__name__)


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


def peer_lines(
    peer_list: list[PeerRecord],
    now_us: int,
    known: Labels | None = None,
    logs: Mapping[bytes, LogRecord] | None = None,
) -> list[str]:
    """Each peer's sync status for people (DESIGN principle 12): a table indented under
    "peers:", a peer's last error (its places named: `name_places`) and quota warning
    wrapped beneath its row."""
    if not peer_list:
        return ["  no peers: add one with `federation peers add INVITE`"]
    known = known or Labels({p.club: p.name for p in peer_list})
    total = terminal_width()
    columns = [
        Column("PEER", least=12),
        Column("STATE", least=None),
        Column("CONTACT", least=None),
        Column("SYNCED", least=None),
        Column("LOGS", least=None, right=True),
        Column("BEHIND", least=None, right=True),
        Column("RECEIVED", least=None, right=True),
    ]
    rows = [
        (
            known(p.club),
            p.state,
            format_ago(now_us, p.status.last_contact_us),
            format_ago(now_us, p.status.last_sync_us),
            p.status.logs,
            p.status.behind,
            p.status.received,
        )
        for p in peer_list
    ]
    header, *body = table(columns, rows, total - 2)
    lines = ["  " + header]
    for p, row in zip(peer_list, body, strict=True):
        lines.append("  " + row)
        s = p.status
        if s.last_error and s.last_error_us >= s.last_contact_us:
            ago = format_ago(now_us, s.last_error_us)
            error = name_places(s.last_error, known, logs or {})
            lines += wrap(f"last error ({ago}): {error}", total, "    ")
        if s.quota_warning:
            ago = format_ago(now_us, s.quota_warning_us)
            lines += wrap(f"over a quota ({ago}): {s.quota_warning}", total, "    ")
    return lines


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


async def _change_peer(root: Path, request: dict[str, object]) -> PeerRecord:
    """A change to the peers, done by the running node when there is one."""
    return msgspec.json.decode(await control.write(root, request), type=PeerRecord)


async def cmd_peers(args: argparse.Namespace) -> Output:
    action, root = args.peers_command, Path(args.node)
    if action == "add":
        peer = await _change_peer(root, {"op": "peers-add", "invite": args.invite})
        return Output(
            peer_json(peer), [f"added peer {peer.name} ({peer.club.hex()}) at {peer.url}"]
        )
    if action in ("pause", "resume"):
        state = "paused" if action == "pause" else "active"
        peer = await _change_peer(root, {"op": "peers-state", "peer": args.peer, "state": state})
        return Output(peer_json(peer), [f"{peer.name} is now {peer.state}"])
    if action == "remove":
        peer = await _change_peer(root, {"op": "peers-remove", "peer": args.peer})
        return Output(
            peer_json(peer),
            [f"removed peer {peer.name}; it no longer receives federation logs"],
        )
    async with await Node.open(root) as node:
        peer_list = await node.store.peers()
        known = await known_labels(node)
        logs = {r.id: r for r in await node.store.logs()}
        return Output(
            [peer_json(p) for p in peer_list],
            ["peers:", *peer_lines(peer_list, node.clock(), known, logs)],
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
        known = await known_labels(node)
        await rt.refresh()  # the logs this round brought, to name the places in errors
    lines, errors = [], []
    for r in results:
        if "error" in r:  # on stderr with the others (cli/output.write_error)
            errors.append(f"{r['peer']}: {name_places(r['error'], known, rt.logs)}")
            continue
        line = (
            f"{r['peer']}: received {plural(r['added'], 'event')} "
            f"({plural(r['logs'], 'log')}); behind {r['behind']}"
        )
        if r["forks"]:
            line += f"; {plural(r['forks'], 'FORK', 'FORKS')} kept as evidence, logs frozen"
        if r["warnings"]:
            line += "; " + "; ".join(r["warnings"])
        if not r["complete"]:
            line += "; not complete: run `federation sync` again"
        lines.append(line)
    # A round that did not complete (the peer holds more than we took) is a failure
    # too: a script must be able to tell whether it is caught up.
    failed = any("error" in r or not r["complete"] for r in results)
    return Output(results, lines, exit_code=1 if failed else 0, errors=errors)


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
        await delivery.note_error(rt.store, peer, exc, rt.clock())
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


def add_run_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--log-level",
        type=str.lower,
        choices=runlog.LEVELS,
        default=runlog.DEFAULT_LEVEL,
        help=f"the least level logged on stderr (default: {runlog.DEFAULT_LEVEL})",
    )
    c.add_argument(
        "--log-json", action="store_true", help="log one JSON object a line, for a log collector"
    )


def cmd_run(args: argparse.Namespace) -> Output:
    """Serve peers and follow them until Ctrl-C or SIGTERM (cli/stop.py: how a stop
    works, and why the passphrase is read before the event loop starts)."""
    stopping = stop.catch()
    runlog.configure(args.log_level, as_json=args.log_json)
    if stopping.requested:  # while the modules loaded
        return Output({}, [], exit_code=stop.report_stopped())
    root = Path(args.node)
    try:
        paths = NodePaths(root)
        config = load_config(paths)  # "no node at ..." comes first
        with lock.hold(root):  # refused while another process runs this node
            with stopping.interruptible():  # Ctrl-C at the prompt
                passphrase = _passphrase(config, paths)
            asyncio.run(_serve(root, passphrase, stopping))
    except stop.Stopped:
        pass  # asked to stop before the event loop ran: the node was never opened
    except FederationError as exc:
        # In the log's own form (a log collector reads JSON lines): one line, exit 1 or 2.
        _log.error("%s", exc)
        if not stopping.requested:
            return Output({}, [], exit_code=exc.exit_code)
    if stopping.requested:
        stop.report_stopped()
    return Output({}, [])


def _passphrase(config: Config, paths: NodePaths) -> bytes | None:
    """The passphrase, if the key file needs one: asked for here, before the event loop,
    where Ctrl-C at the prompt interrupts it (inside the loop a stop only sets an event,
    and a prompt blocking the loop would never see it)."""
    key_path = paths.resolve(config.key.file)
    if not needs_passphrase(read_key_file(key_path), str(key_path)):
        return None
    return read_passphrase(config, paths)


async def _serve(root: Path, passphrase: bytes | None, stopping: stop.Stop) -> None:
    # From here a stop signal only sets `stopped`: the node finishes opening (a second
    # or so), then Service.serve returns and everything closes in order.
    async with stopping.deferred() as stopped:
        if stopped.is_set():
            return  # asked to stop while the modules loaded: open nothing
        async with await Node.open(root, passphrase=passphrase) as node:
            if stopped.is_set():
                return  # stopped while opening: bind nothing
            await _serve_node(node, stopped)


async def _serve_node(node: Node, stopped: asyncio.Event) -> None:
    async with open_service(node) as service:
        # A peer's error names the club, log and seq it is about by ids (errors.py): the
        # log names them as listings do, with the names known now and the logs held now.
        known = await known_labels(node)
        with runlog.rewriting(lambda text: name_places(text, known, service.rt.logs)):
            scheme = "http" if node.config.node.plain_http else "https"
            _log.info(
                "%s serving on %s://%s:%d; following %s (Ctrl-C stops)",
                node.config.club.name,
                scheme,
                node.config.node.listen.rpartition(":")[0],
                service.port,
                plural(len(service.rt.active_peers()), "peer"),
            )
            if service.feed is not None and node.config.feed is not None:
                host = node.config.feed.listen.rpartition(":")[0]
                _log.info("public feed on http://%s:%d/", host, service.feed.port)
            await service.serve(stopped)
