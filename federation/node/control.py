"""The control socket: the commands that write, done by the node running here.

While `federation run` is up it holds the unlocked key and is the one writer of its
store. The CLI's writing commands (`post`, `erase`, `peers add|pause|resume|remove`,
`block`, `unblock`, and the `proposal` actions that sign) then send a request
through `control.sock` in the node directory instead of opening the store: no
passphrase prompt, no second writer, and a new event is pushed to waiting peers at
once (the runtime is refreshed before the reply, which wakes every long-poll,
protocol.md §6.5). With no node running, the same request is performed by the
command itself on a store it opens (`write`).

One dispatch for both paths: `perform(node, request)` calls the node's functions,
where the rules live; neither the socket handler nor the CLI holds a rule. The
client half, which imports the standard library only, is `control_client`; the
wire is described there.

Who may ask: the socket is created 0600 in the 0700 node directory, atomically
(bound under a private name, then renamed over a stale one), and every connection's
uid is checked (SO_PEERCRED) before a byte is read. What a client can make the node
hold is bounded: MAX_CONTROL_CLIENTS connections, MAX_REQUEST_BYTES each, read within
REQUEST_TIMEOUT_S, decoded into the strict request union below.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from federation.core.canonical import Kind
from federation.core.events import VerifiedEvent
from federation.core.payloads import UNERASABLE_KINDS, kind_from_name
from federation.core.when import zoned_time
from federation.errors import FederationError, UsageError
from federation.node import blocking, naming, peering, projector, proposals, rails
from federation.node.blocking import BlockedClub
from federation.node.control_client import (
    DONE,
    LENGTH,
    MAX_REQUEST_BYTES,
    SOCKET_NAME,
    ShortPath,
    call,
    peer_uid,
    refusal,
)
from federation.node.node import Node
from federation.node.runtime import Runtime
from federation.store.base import LogRecord, PeerRecord
from federation.store.meta import delivered

log = logging.getLogger("federation.control")

# Connections held at once: commands are run one at a time by people and scripts;
# a runaway script gets refused connections, not a node that stops serving peers.
MAX_CONTROL_CLIENTS = 16
# A client must send its whole request within this: a connection that sends nothing
# does not keep a slot.
REQUEST_TIMEOUT_S = 10.0
# Bounds on the request's fields, checked while decoding (the payload's own limit,
# 64 KiB, is checked where the payload is made).
MAX_TEXT_CHARS = 128 * 1024
MAX_NAME_CHARS = 1024
MAX_FIELDS = 16

Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]


# Each request: frozen, unknown fields refused, tagged by "op".
class Post(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="post"):
    """`federation post`: fields as given on the command line (times in ISO 8601).
    `confirmed`: the operator said yes to what needs it (node/rails.py)."""

    kind: Name
    fields: Annotated[dict[Name, Text | int], msgspec.Meta(max_length=MAX_FIELDS)]
    audience: Text = "private"
    log: Name | None = None
    confirmed: bool = False


class Erase(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="erase"):
    event: Name


class PeerAdd(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="peers-add"
):
    invite: Text


class PeerState(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="peers-state"
):
    peer: Name
    state: Literal["active", "paused"]


class PeerRemove(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="peers-remove"
):
    peer: Name


class Block(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="block"):
    club: Name


class Unblock(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="unblock"
):
    club: Name


class ProposalStep(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op", tag="proposal"
):
    """`federation proposal ACTION`, the actions that sign: options as given (times in
    ISO 8601, clubs by name or id prefix, `ask` as CLUB=TEXT, `actions` as
    WHAT@WHERE@STARTS; protocol.md §3.7)."""

    action: Literal["new", "amend", "accept", "decline", "retract", "withdraw", "feed", "update"]
    proposal: Name = ""
    title: Text | None = None
    to: Annotated[list[Name], msgspec.Meta(max_length=MAX_FIELDS * 4)] = []
    deadline: Name | None = None
    at_least: int | None = None
    aims: Text | None = None
    ask: Annotated[list[Text], msgspec.Meta(max_length=MAX_FIELDS * 4)] = []
    actions: Annotated[list[Text], msgspec.Meta(max_length=MAX_FIELDS * 4)] = []
    text: Text = ""
    shown: bool = False  # feed: show (True) or hide
    public: bool = False  # update: on this club's public feed


Request = Post | Erase | PeerAdd | PeerState | PeerRemove | Block | Unblock | ProposalStep


class Posted(msgspec.Struct, frozen=True):
    record: LogRecord
    event: VerifiedEvent
    warnings: list[str] = []  # for the operator, on stderr (e.g. a club with no route)


class Erased(msgspec.Struct, frozen=True):
    """What `erase` did to `event` of log `record` (protocol.md §3.5)."""

    record: LogRecord
    event: VerifiedEvent
    everywhere: bool  # ours: by a signed erasure; another club's: this copy only
    already: bool  # an erasure of it was held already: nothing done
    erasure: VerifiedEvent | None = None
    received_by: list[PeerRecord] = []  # peers that held the payload (our own events)


class Signed(msgspec.Struct, frozen=True):
    """A proposal step signed: the event's id (for `new`, the proposal's id)."""

    event: bytes


Result = Posted | Erased | PeerRecord | BlockedClub | Signed | proposals.FeedChoice
_decoder = msgspec.json.Decoder(Request)
_encoder = msgspec.json.Encoder()


def decode_request(body: bytes) -> Request:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError included; msgspec names the path
        raise UsageError(f"invalid control request: {exc}") from None


# --- the one dispatch ---------------------------------------------------------------


async def perform(node: Node, request: Request) -> Result:
    """Do `request` on `node`: the same calls whichever process holds the node."""
    match request:
        case Post(kind=kind_name, fields=fields, audience=text, log=name, confirmed=yes):
            kind = kind_from_name(kind_name, postable=True)
            audience = await naming.parse_audience(node, text)
            warnings = await rails.route_warnings(node, audience)
            record, event = await node.post(kind, dict(fields), audience, name, confirmed=yes)
            return Posted(record, event, warnings)
        case Erase(event=ref):
            return await _erase(node, ref)
        case PeerAdd(invite=text):
            return await peering.add(node, text)
        case PeerState(peer=ref, state=state):
            return await peering.set_state(node, ref, state)
        case PeerRemove(peer=ref):
            return await peering.remove(node, ref)
        case Block(club=ref):
            return await blocking.block(node, ref)
        case Unblock(club=ref):
            return await blocking.unblock(node, ref)
        case ProposalStep():
            return await _proposal(node, request)
    raise AssertionError(f"unhandled control request {request!r}")  # the union is closed


async def _erase(node: Node, ref: str) -> Erased:
    """protocol.md §3.5: our own event is erased everywhere, by a signed erasure event
    that travels with its log; another club's is wiped here only."""
    event = await node.find_event(ref)
    h = event.header
    if h.kind in UNERASABLE_KINDS:
        raise UsageError(
            f"{Kind(h.kind).name.lower()} events cannot be erased: a roster decides who "
            "receives the club's logs, and an erasure must travel with its log"
        )
    record = await node.store.log(h.log)
    assert record is not None
    if h.club != node.club:
        await projector.erase(node.store, event)
        return Erased(record, event, everywhere=False, already=False)
    if (await node.store.erasures(h.log)).get(h.seq):
        return Erased(record, event, everywhere=True, already=True)
    fields: dict[str, object] = {"seq": h.seq, "event": event.id.hex()}
    _, erasure = await node.post(Kind.ERASURE, fields, record.audience, record.name)
    await projector.catch_up(node.store)  # the log's views fold again, without it
    reached = [
        p for p in await node.store.peers() if await delivered(node.store, p.club, h.log) >= h.seq
    ]
    return Erased(
        record, event, everywhere=True, already=False, erasure=erasure, received_by=reached
    )


def _time(text: str) -> dt.datetime:
    return zoned_time(text, "time")


async def _changes(node: Node, step: ProposalStep) -> dict[str, object]:
    """What a new version says, from the options of `new` or `amend`."""
    asks: dict[str, str] = {}
    for item in step.ask:
        who, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"--ask {item!r}: use CLUB=TEXT or *=TEXT")
        key = "*" if who == "*" else (await proposals.resolve_club(node, who)).hex()
        asks[key] = text
    actions: list[dict[str, object]] = []
    for item in step.actions:
        parts = item.split("@")
        if len(parts) != 3:
            raise UsageError(f"--action {item!r}: use WHAT@WHERE@STARTS")
        actions.append({"what": parts[0], "where": parts[1], "starts": _time(parts[2])})
    return {
        "aims": step.aims,
        "asks": asks or None,
        "actions": actions or None,
        "title": step.title,
        "deadline": _time(step.deadline) if step.deadline else None,
    }


async def _proposal(node: Node, step: ProposalStep) -> Signed | proposals.FeedChoice:
    """The proposal actions that sign (node/proposals.py holds their rules)."""
    a = step.action
    if a == "new":
        if not step.title or not step.to or not step.deadline:
            raise UsageError("proposal new needs --title, --to and --deadline")
        invited = [await proposals.resolve_club(node, ref) for ref in step.to]
        changes = await _changes(node, step)
        return Signed(
            await proposals.propose(
                node,
                title=step.title,
                invited=invited,
                deadline=_time(step.deadline),
                rule="all" if step.at_least is None else f"at_least:{step.at_least}",
                aims=str(changes["aims"] or ""),
                asks=changes["asks"],  # type: ignore[arg-type]
                actions=changes["actions"],  # type: ignore[arg-type]
            )
        )
    if a == "amend":
        return Signed(await proposals.amend(node, step.proposal, await _changes(node, step)))
    if a in ("accept", "decline", "retract"):
        op = {"accept": "accepted", "decline": "declined", "retract": "retracted"}[a]
        return Signed(await proposals.answer(node, step.proposal, op, step.text))
    if a == "withdraw":
        return Signed(await proposals.withdraw(node, step.proposal))
    if a == "feed":
        return await proposals.choose_feed(node, step.proposal, shown=step.shown)
    return Signed(await proposals.post_update(node, step.proposal, step.text, public=step.public))


# --- either path ----------------------------------------------------------------------


async def perform_here(
    root: Path, request: dict[str, Any], confirm: Callable[[str], bool] | None = None
) -> bytes:
    """`request` done by this process on the store it opens (no node runs here).
    `confirm`: asked when a post needs the operator's yes (node/rails.py); if it says
    yes the post is made, with the node still open (one passphrase prompt)."""
    decoded = decode_request(json.dumps(request).encode())
    async with await Node.open(root) as node:
        try:
            return _encoder.encode(await perform(node, decoded))
        except rails.ConfirmationNeeded as exc:
            if confirm is None or not isinstance(decoded, Post) or not confirm(str(exc)):
                raise
            yes = msgspec.structs.replace(decoded, confirmed=True)
            return _encoder.encode(await perform(node, yes))


async def write(root: Path, request: dict[str, Any]) -> bytes:
    """`request` done by the node running in `root`, or else by this process; the
    result as JSON bytes either way (decode with `msgspec.json.decode(.., type=...)`)."""
    # In a thread: the node answering may be served by this very event loop (tests
    # run nodes in-process), and the call blocks until it has answered.
    done = await asyncio.to_thread(call, root, request)
    return done if done is not None else await perform_here(root, request)


# --- the server --------------------------------------------------------------------------


class ControlServer:
    """Answers the control socket for a running node (see the module's docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.request_timeout_s = REQUEST_TIMEOUT_S  # tests may shorten it
        self.clients = 0
        self.refused_uid = 0  # connections refused for their uid (tests, status)
        # One write at a time: a post reads its log's head and appends after it.
        self._writing = asyncio.Lock()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.clients >= MAX_CONTROL_CLIENTS:
                return
            sock = writer.get_extra_info("socket")
            if peer_uid(sock) != os.getuid():
                self.refused_uid += 1
                log.warning("control socket: refused a connection from another user")
                return
            self.clients += 1
            try:
                # Bounded: the time to send the request (checked against the limit
                # before a byte of it is read), and the time to take the reply. Not
                # the work between: a write waits its turn and is never cut short.
                async with asyncio.timeout(self.request_timeout_s):
                    (size,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
                    body = await reader.readexactly(size) if 0 < size <= MAX_REQUEST_BYTES else b""
                if body:
                    reply = await self.answer(body)
                else:
                    reply = refusal(
                        UsageError(
                            f"a control request of {size} bytes; it must be 1 to "
                            f"{MAX_REQUEST_BYTES} bytes: send one request, smaller"
                        )
                    )
                writer.write(LENGTH.pack(len(reply)) + reply)
                async with asyncio.timeout(self.request_timeout_s):
                    await writer.drain()
            finally:
                self.clients -= 1
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away or said nothing in time: nothing was done
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def answer(self, body: bytes) -> bytes:
        try:
            request = decode_request(body)
        except FederationError as exc:
            return refusal(exc)
        async with self._writing:
            try:
                result = await perform(self.rt.node, request)
            except FederationError as exc:
                return refusal(exc)
            except Exception:  # a bug: the node serves on, the command fails with one line
                log.exception("control socket: a request failed")
                return refusal(
                    FederationError("the running node failed on this request (a bug); see its log")
                )
            # Before the reply: every long-poll wakes now, not at a store poll
            # (protocol.md §6.5); a post only appends, so rosters fold on. Done is
            # done: a failure here is logged, not reported as the command's.
            try:
                await self.rt.refresh(appended_only=isinstance(request, Post))
            except Exception:
                log.exception("control socket: the runtime did not refresh after a command")
        return DONE + _encoder.encode(result)


@contextlib.asynccontextmanager
async def open_control(rt: Runtime) -> AsyncIterator[ControlServer]:
    """Serve the control socket of `rt`'s node until the block ends."""
    root = rt.node.paths.root
    control = ControlServer(rt)
    temporary = f"{SOCKET_NAME}.{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(root / temporary)  # left by a crashed start with our pid
        old = os.umask(0o177)  # created 0600: never reachable by others, not even briefly
        try:
            with ShortPath(root, temporary) as path:
                sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(root / temporary, 0o600)
        sock.listen(MAX_CONTROL_CLIENTS)
        # Atomically over a socket a dead node left: commands never find no socket
        # while this node runs, nor one that leads nowhere.
        os.rename(root / temporary, root / SOCKET_NAME)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot create the control socket {root / SOCKET_NAME}: {exc.strerror or exc}"
        ) from None
    ours = os.stat(root / SOCKET_NAME).st_ino
    server = await asyncio.start_unix_server(control.handle, sock=sock)
    try:
        yield control
    finally:
        server.close()
        # Removed only if it is still ours (a node started since owns the name now).
        with contextlib.suppress(FileNotFoundError):
            if os.stat(root / SOCKET_NAME).st_ino == ours:
                os.unlink(root / SOCKET_NAME)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await server.wait_closed()
