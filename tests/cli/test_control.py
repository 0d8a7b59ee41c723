"""The control socket (node/control.py): the commands that write go to the running node.

Real `federation` processes on real node directories: `run` in the background holding
the unlocked key, and `post`, `erase`, `peers`, `block` as separate processes with no
passphrase and no terminal, so a prompt would fail them. The wire is also spoken by
hand (a hostile or buggy local client), and the push to peers is checked in-process
with the store poll switched off, so only the in-process notification can deliver.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.core.canonical import Kind
from federation.errors import ControlError
from federation.node import control_client, runtime
from federation.node.control import MAX_CONTROL_CLIENTS
from federation.node.control_client import LENGTH, MAX_REQUEST_BYTES, SOCKET_NAME, call
from tests.harness import Federation

PASSPHRASE = "correct horse battery"
START_S = 30.0  # a node's start (scrypt, store open) on a busy machine, at most

# Each test starts several `federation` processes (a scrypt each): slow on a busy machine.
pytestmark = pytest.mark.timeout(300)


def federation(
    node: Path, *args: str, passphrase: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`federation --node NODE ARGS` as a process, with no terminal, and the passphrase
    in its environment only if `passphrase`."""
    env = {k: v for k, v in os.environ.items() if k != "FEDERATION_PASSPHRASE"}
    if passphrase:
        env["FEDERATION_PASSPHRASE"] = PASSPHRASE
    done = subprocess.run(
        [sys.executable, "-m", "federation", "--node", str(node), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if check:
        assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    return done


def init(root: Path, name: str) -> str:
    out = federation(
        root, "init", "--name", name, "--listen", "127.0.0.1:0", "--plain-http", passphrase=True
    )
    return out.stdout.splitlines()[0]


def answers(root: Path) -> bool:
    """Whether a node answers on the control socket (a request of no known kind: refused)."""
    try:
        call(root, {"op": "nothing"})
    except ControlError:
        return True
    return False


class Running:
    """`federation run` in the background, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, root: Path) -> None:
        env = {**os.environ, "FEDERATION_PASSPHRASE": PASSPHRASE}
        self.root = root
        # Its log to a file beside the node: a pipe nobody reads could fill and stall it.
        self.log = (root.parent / f"{root.name}-run.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "federation", "--node", str(root), "run"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            env=env,
        )
        deadline = time.monotonic() + START_S
        while not answers(root):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                said = (root.parent / f"{root.name}-run.log").read_text(errors="replace")
                raise AssertionError(f"`run` did not start: {said[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def node(tmp_path: Path) -> Path:
    root = tmp_path / "a"
    init(root, "Club A")
    return root


@pytest.fixture
def running(node: Path) -> Iterator[Running]:
    run = Running(node)
    try:
        yield run
    finally:
        run.stop()


def posted_seq(out: str) -> int:
    """The seq in `post`'s line: "<id>  <log> #<seq>  (<audience>)"."""
    return int(out.split("#")[1].split()[0])


def raw(root: Path, frame: bytes, *, read: bool = True) -> bytes:
    """Send `frame` as it is on the control socket; what comes back, until closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        with control_client.ShortPath(root, SOCKET_NAME) as path:
            sock.connect(path)
        sock.sendall(frame)
        if not read:
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def refusal(reply: bytes) -> dict[str, object]:
    (size,) = LENGTH.unpack(reply[: LENGTH.size])
    body = reply[LENGTH.size :]
    assert len(body) == size
    assert body[:1] == control_client.REFUSED, reply[:200]
    refused: dict[str, object] = json.loads(body[1:])
    return refused


# --- posting ------------------------------------------------------------------------------


def test_a_post_while_run_holds_the_store_needs_no_passphrase(running: Running) -> None:
    root = running.root
    # No passphrase in the environment and no terminal: opening the key here would
    # fail ("no terminal to ask for its passphrase"), so the running node signed.
    first = federation(root, "post", "note", "--text", "through the node")
    second = federation(root, "post", "note", "--text", "and again")
    assert posted_seq(second.stdout) == posted_seq(first.stdout) + 1
    assert "passphrase" not in first.stderr + second.stderr
    # --json prints the whole event as `show --json` does.
    event = json.loads(federation(root, "post", "note", "--text", "json", "--json").stdout)
    assert event["payload"] == {"text": "json"}
    assert event["log_name"] == "private"
    # A refusal comes back as the same one line and exit code as without the node.
    bad = federation(root, "post", "note", "--what", "x", check=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith("federation: error: --what does")
    # The node's rails hold on this path too: a report made public needs a yes, and
    # with no terminal to ask, --yes (node/rails.py).
    report = ("post", "report", "--member", "Sam", "--period", "2026-11", "--text", "t")
    unasked = federation(root, *report, "--audience", "public", check=False)
    assert unasked.returncode == 2
    assert "pass --yes" in unasked.stderr
    said_yes = federation(root, *report, "--audience", "public", "--yes")
    assert "(public)" in said_yes.stdout
    unknown = federation(root, "post", "bogus", "--text", "x", check=False)
    assert unknown.returncode == 2
    assert "unknown kind 'bogus'" in unknown.stderr
    running.stop()
    # Everything the node stored is there once it has stopped.
    log = json.loads(federation(root, "log", "--json", passphrase=True).stdout)
    assert [e["payload"]["text"] for e in log] == ["through the node", "and again", "json", "t"]


def test_a_post_without_run_opens_the_store_itself(node: Path) -> None:
    assert not (node / SOCKET_NAME).exists()
    # The positive control: with no node running, the key must be unlocked here.
    refused = federation(node, "post", "note", "--text", "x", check=False)
    assert refused.returncode != 0
    assert "passphrase" in refused.stderr
    done = federation(node, "post", "note", "--text", "alone", passphrase=True)
    assert posted_seq(done.stdout) == 1


def test_a_stale_socket_does_not_break_commands(node: Path) -> None:
    # A node that crashed leaves its socket file behind, leading nowhere.
    with control_client.ShortPath(node, SOCKET_NAME) as path:
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()
    assert stat.S_ISSOCK(os.stat(node / SOCKET_NAME).st_mode)
    assert call(node, {"op": "post"}) is None  # nobody answers: do it here
    done = federation(node, "post", "note", "--text", "after a crash", passphrase=True)
    assert posted_seq(done.stdout) == 1
    # A new `run` takes the name over, and answers on it.
    run = Running(node)
    try:
        done = federation(node, "post", "note", "--text", "to the new node")
        assert posted_seq(done.stdout) == 2
    finally:
        run.stop()
    assert not (node / SOCKET_NAME).exists()  # removed on the way out


# --- who may ask, and what they may send ---------------------------------------------------


def test_the_socket_is_private_to_the_nodes_user(running: Running) -> None:
    path = running.root / SOCKET_NAME
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(running.root).st_mode) == 0o700
    # The uid check itself: SO_PEERCRED names our uid at both ends (positive control).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        with control_client.ShortPath(running.root, SOCKET_NAME) as short:
            sock.connect(short)
        assert control_client.peer_uid(sock) == os.getuid()


# The other user runs the system's Python: the test's own may sit in root's home.
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(
    os.getuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root (to connect as another user) and a system Python",
)
def test_another_user_is_refused_even_past_the_permissions() -> None:
    # Under a directory any user may pass through (pytest's own is root's alone).
    outer = Path(tempfile.mkdtemp(prefix="federation-control-", dir="/tmp"))
    try:
        os.chmod(outer, 0o755)
        root = outer / "a"
        init(root, "Club A")
        running = Running(root)
        try:
            # Open the way on purpose (as a careless chmod would): only the uid check
            # is left between another user and the node.
            os.chmod(root, 0o755)
            os.chmod(root / SOCKET_NAME, 0o777)
            nobody = subprocess.run(
                [SYSTEM_PYTHON, "-I", "-c", INTRUDER, str(root / SOCKET_NAME)],
                user=65534,
                group=65534,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert nobody.returncode == 0, nobody.stderr  # it connected
            assert nobody.stdout.strip() == "b''"  # and the node closed without a word
            os.chmod(root, 0o700)
            # The positive control: the same request from our own uid is carried out.
            done = subprocess.run(
                [sys.executable, "-I", "-c", INTRUDER, str(root / SOCKET_NAME)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.stdout.startswith("b'"), done.stderr
            assert done.stdout.strip() != "b''"
        finally:
            running.stop()
        log = json.loads(federation(root, "log", "--json", passphrase=True).stdout)
        assert [e["payload"]["text"] for e in log] == ["intruder"]  # ours alone
    finally:
        shutil.rmtree(outer)


# A local client speaking the wire by hand: one post, then print the reply's start
# (b'' when the node hung up on it).
INTRUDER = (
    "import socket,struct,sys,json\n"
    "s=socket.socket(socket.AF_UNIX);s.settimeout(10);s.connect(sys.argv[1])\n"
    "b=json.dumps({'op':'post','kind':'note','fields':{'text':'intruder'}}).encode()\n"
    "try:\n"
    "    s.sendall(struct.pack('>I',len(b))+b);r=s.recv(100)\n"
    "except (ConnectionResetError, BrokenPipeError):\n"
    "    r=b''\n"
    "print(repr(r))\n"
)


def test_bad_requests_are_bounded_and_refused_and_the_node_serves_on(running: Running) -> None:
    root = running.root
    # Over the limit: refused from the length alone, before reading a byte of it.
    over = refusal(raw(root, struct.pack(">I", MAX_REQUEST_BYTES + 1)))
    assert over["exit_code"] == 2
    assert "must be 1 to" in str(over["message"])
    # Not JSON; JSON of no known request; a known one with an unknown field.
    for body in (
        b"\xff\x00not json",
        json.dumps({"op": "shutdown"}).encode(),
        json.dumps({"op": "erase", "event": "ab" * 4, "also": 1}).encode(),
        json.dumps({"op": "post", "kind": "note", "fields": {"text": "x" * 200_000}}).encode(),
    ):
        refused = refusal(raw(root, LENGTH.pack(len(body)) + body))
        assert refused["exit_code"] == 2, refused
        assert str(refused["message"]).startswith("invalid control request"), refused
    # A client that says less than it announced, then hangs up: nothing is done.
    raw(root, LENGTH.pack(100) + b"{", read=False)
    # The node still answers, and stored only what was asked of it properly.
    done = federation(root, "post", "note", "--text", "still here")
    assert posted_seq(done.stdout) == 1


# --- the other writing commands ------------------------------------------------------------


def test_erase_peers_proposals_and_block_go_through_the_running_node(
    running: Running, tmp_path: Path
) -> None:
    root = running.root
    posted = federation(root, "post", "note", "--text", "a mistake", "--json")
    event = json.loads(posted.stdout)["id"]
    erased = federation(root, "erase", event[:12], "--json")
    assert json.loads(erased.stdout)["erasure"]
    again = federation(root, "erase", event[:12])
    assert "erased already" in again.stdout
    # A partner's invite, taken by the running node.
    other = tmp_path / "b"
    init(other, "Club B")
    invite = federation(other, "invite", "--url", "http://127.0.0.1:9", passphrase=True)
    added = federation(root, "peers", "add", invite.stdout.strip(), "--json")
    assert json.loads(added.stdout)["name"] == "Club B"
    # A joint proposal to it, signed by the running node, then withdrawn.
    proposed = federation(
        root, "proposal", "new", "--title", "Bloc", "--to", "Club B", "--deadline",
        "2030-01-01T12:00Z", "--ask", "Club B=banners",
    )  # fmt: skip
    proposal = proposed.stdout.split("proposed: ")[1].strip()
    withdrawn = federation(root, "proposal", "withdraw", proposal[:12])
    assert withdrawn.stdout.startswith("withdraw: signed ")
    again = federation(root, "proposal", "withdraw", proposal[:12], check=False)
    assert again.returncode == 2
    assert "withdrawn already" in again.stderr
    paused = federation(root, "peers", "pause", "Club B", "--json")
    assert json.loads(paused.stdout)["state"] == "paused"
    refused = federation(root, "block", "Club B", check=False)
    assert refused.returncode == 2
    assert "remove it first" in refused.stderr
    federation(root, "peers", "remove", "Club B")
    blocked = federation(root, "block", "Club B", "--json")
    assert json.loads(blocked.stdout)["already"] is False
    federation(root, "unblock", "Club B")
    running.stop()
    peers = json.loads(federation(root, "peers", "list", "--json", passphrase=True).stdout)
    assert peers == []
    log = json.loads(federation(root, "log", "--json", passphrase=True).stdout)
    assert [e["kind"] for e in log if e["log_name"] == "private"] == ["note", "erasure"]


# --- push, not poll ----------------------------------------------------------------------


async def test_a_post_through_the_socket_reaches_a_peer_with_no_store_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store poll would come in an hour: only the control path's own notification
    # can wake the peer's long-poll (protocol.md §6.5).
    monkeypatch.setattr(runtime, "STORE_POLL_S", 3600.0)
    # A directory too deep for an AF_UNIX path (107 bytes): reached through its fd.
    deep = tmp_path / ("a-directory-whose-name-is-long-" * 3)
    assert len(str(deep / "a" / SOCKET_NAME)) > control_client.MAX_UNIX_PATH_BYTES
    async with Federation.open(deep, ["a", "b"], tls=False) as fed:
        await fed.federate("a", "b")
        a, b = fed["a"], fed["b"]
        first = await a.post(Kind.NOTE, {"text": "the log exists"}, "federation")
        log = first.header.log
        await fed.wait_for(lambda: b.service.rt.logs.get(log) is not None, what="a's log at b")
        version = a.service.rt.version
        request = {"op": "post", "kind": "note", "fields": {"text": "pushed"}}
        done = await asyncio.to_thread(call, a.root, request | {"audience": "federation"})
        assert done is not None
        posted = json.loads(done)
        seq = posted["event"]["header"]["seq"]
        assert base64.b64decode(posted["record"]["id"]) == log
        assert seq == 2
        # The reply came only once the running node had taken the event in and woken
        # its waiters: the long-poll b holds on a's frontier is answered already.
        assert a.service.rt.version > version
        held = a.service.rt.logs[log].head
        assert held is not None
        assert held.seq == seq

        def at_b() -> bool:
            record = b.service.rt.logs.get(log)
            return record is not None and record.head is not None and record.head.seq == seq

        await fed.wait_for(at_b, what="the pushed post at b")


async def test_idle_clients_are_bounded_in_number_and_time(tmp_path: Path) -> None:
    async with Federation.open(tmp_path, ["a"], tls=False, follow=False) as fed:
        a = fed["a"]
        control = a.service.control
        assert control is not None
        control.request_timeout_s = 0.5
        loop = asyncio.get_running_loop()
        shortened = control_client.ShortPath(a.root, SOCKET_NAME)
        path = shortened.__enter__()  # an AF_UNIX path of at most 107 bytes
        idle = []
        for _ in range(MAX_CONTROL_CLIENTS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, path)
            idle.append(sock)
        await fed.wait_for(lambda: control.clients == MAX_CONTROL_CLIENTS, what="idle clients")
        # One more is closed at once, without a word: the slots are full.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
            extra.setblocking(False)
            await loop.sock_connect(extra, path)
            assert await asyncio.wait_for(loop.sock_recv(extra, 100), 10) == b""
        # The idle ones are closed once their time is up, and the slots are free.
        for sock in idle:
            assert await asyncio.wait_for(loop.sock_recv(sock, 100), 10) == b""
            sock.close()
        shortened.__exit__()
        await fed.wait_for(lambda: control.clients == 0, what="slots freed")
        request = {"op": "post", "kind": "note", "fields": {"text": "served on"}}
        assert await asyncio.to_thread(call, a.root, request) is not None
