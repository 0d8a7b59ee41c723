"""Sync through the real CLI: `python -m federation` in subprocesses, as a club runs it.

Four club nodes are created with `init` on free ports, with encrypted keys unlocked
from FEDERATION_PASSPHRASE. a, b and c peer in a line (a - b - c) and run
`federation run` in the background; d is a peer of b whose node never runs, so b
always has one unreachable peer. Every wait is bounded, and every process started
here is stopped in a finally.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from federation.node.keyfile import PASSPHRASE_ENV
from tests.harness import free_port

PASSPHRASE = "correct horse battery staple"
COMMAND_TIMEOUT_S = 60.0
WAIT_S = 20.0  # generous: each poll below is a new process (~0.4 s)
NAMES = ("a", "b", "c", "d")
RUNNING = ("a", "b", "c")  # d's node never runs
LINKS = (("a", "b"), ("b", "c"), ("b", "d"))


@dataclass(frozen=True)
class Run:
    """One finished CLI invocation."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FEDERATION_NODE"}
    env[PASSPHRASE_ENV] = PASSPHRASE
    return env


def command(node: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "federation", "--node", str(node), *args]


def spawn(node: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(node, *args),
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> Run:
    try:
        out, err = process.communicate(timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"{process.args!r} took over {COMMAND_TIMEOUT_S}s: {err}")
    return Run(process.returncode, out, err)


def cli(node: Path, *args: str) -> Run:
    return finish(spawn(node, *args))


def ok(run: Run) -> Run:
    assert run.code == 0, f"exit {run.code}: {run.err}"
    return run


def in_parallel(*calls: tuple[Path, tuple[str, ...]]) -> list[Run]:
    """Several commands at once, on different nodes (each node's commands in order)."""
    return [finish(p) for p in [spawn(node, *args) for node, args in calls]]


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Clubs:
    root: Path
    ports: dict[str, int]
    ids: dict[str, str] = field(default_factory=dict)
    invites: dict[str, str] = field(default_factory=dict)
    servers: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)  # each server's stderr
    exits: dict[str, int] = field(default_factory=dict)  # each stopped server's exit code

    def node(self, name: str) -> Path:
        return self.root / name

    def stop(self, name: str) -> None:
        server = self.servers.pop(name, None)
        if server is None:
            return
        server.send_signal(signal.SIGINT)  # as Ctrl-C: a clean shutdown
        try:
            self.exits[name] = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
            self.exits[name] = -1  # it did not stop on Ctrl-C
        assert server.stdout is not None
        server.stdout.close()


def serving(clubs: Clubs, name: str) -> bool:
    text = clubs.logs[name].read_text(encoding="utf-8", errors="replace")
    server = clubs.servers[name]
    assert server.poll() is None, f"federation run of {name} exited: {text}"
    return " serving on " in text


@pytest.fixture(scope="module")
def clubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clubs]:
    root = tmp_path_factory.mktemp("clubs")
    clubs = Clubs(root, {name: free_port() for name in NAMES})
    try:
        inits = in_parallel(
            *(
                (
                    clubs.node(n),
                    ("init", "--name", f"Club {n}", "--listen", f"127.0.0.1:{clubs.ports[n]}"),
                )
                for n in NAMES
            )
        )
        for name, run in zip(NAMES, inits, strict=True):
            clubs.ids[name] = ok(run).out.splitlines()[0]
        for name, run in zip(
            NAMES, in_parallel(*((clubs.node(n), ("invite", "--json")) for n in NAMES)), strict=True
        ):
            clubs.invites[name] = ok(run).json()["invite"]
        # Each club adds the other of each link; one node's commands run one at a time.
        adds: dict[str, list[str]] = {n: [] for n in NAMES}
        for x, y in LINKS:
            adds[x].append(y)
            adds[y].append(x)
        while any(adds.values()):
            batch = [(n, adds[n].pop(0)) for n in NAMES if adds[n]]
            calls = [(clubs.node(n), ("peers", "add", clubs.invites[other])) for n, other in batch]
            for run in in_parallel(*calls):
                ok(run)
        for name in RUNNING:
            clubs.logs[name] = root / f"{name}.stderr"
            with clubs.logs[name].open("w", encoding="utf-8") as stderr:
                clubs.servers[name] = subprocess.Popen(
                    command(clubs.node(name), "run"),
                    env=environment(),
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                )
        for name in RUNNING:
            wait_until(functools.partial(serving, clubs, name), f"`federation run` of {name}")
        yield clubs
    finally:
        for name in list(clubs.servers):
            clubs.stop(name)


def events(clubs: Clubs, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok(
        cli(clubs.node(name), "log", "--json", "--limit", "1000")
    ).json()
    return found


def holds(clubs: Clubs, name: str, event_id: str) -> bool:
    return any(e["id"] == event_id for e in events(clubs, name))


# --- the tests ------------------------------------------------------------------------------


def test_peers_list_shows_each_added_club(clubs: Clubs) -> None:
    listed = ok(cli(clubs.node("b"), "peers", "list", "--json")).json()
    assert {p["name"] for p in listed} == {"Club a", "Club c", "Club d"}
    for peer in listed:
        name = peer["name"].removeprefix("Club ")
        assert peer["club"] == clubs.ids[name]
        assert peer["url"] == f"https://127.0.0.1:{clubs.ports[name]}"
        assert len(bytes.fromhex(peer["fingerprint"])) == 32
        assert peer["state"] == "active"
    people = ok(cli(clubs.node("b"), "peers", "list")).out
    assert "Club a" in people
    assert "Club c" in people


def test_a_post_reaches_the_clubs_it_may_reach(clubs: Clubs) -> None:
    a = clubs.node("a")
    public = ok(cli(a, "post", "note", "--text", "hello from a", "--audience", "public", "--json"))
    shared = ok(
        cli(a, "post", "note", "--text", "for a's partners", "--audience", "federation", "--json")
    )
    public_id, shared_id = public.json()["id"], shared.json()["id"]
    wait_until(lambda: holds(clubs, "b", shared_id), "a's federation note at b")
    wait_until(lambda: holds(clubs, "c", public_id), "a's public note at c, through b")
    at_c = {e["id"]: e for e in events(clubs, "c")}
    assert at_c[public_id]["payload"] == {"text": "hello from a"}
    assert at_c[public_id]["club"] == clubs.ids["a"]
    assert shared_id not in at_c  # c is not in a's roster: b does not pass it on

    # `status --json` shows each peer and how sync with it goes.
    status = ok(cli(clubs.node("b"), "status", "--json")).json()
    peers = {p["name"]: p for p in status["peers"]}
    assert set(peers) == {"Club a", "Club c", "Club d"}
    for name in ("Club a", "Club c"):
        assert peers[name]["state"] == "active"
        assert peers[name]["last_contact_us"] > 0
        assert peers[name]["last_sync_us"] > 0
        assert peers[name]["behind"] == 0
    assert peers["Club a"]["received"] >= 2
    assert peers["Club a"]["logs"] >= 3  # a's roster, federation and public logs
    assert peers["Club d"]["last_contact_us"] == 0
    assert "unreachable" in peers["Club d"]["last_error"]
    people = ok(cli(clubs.node("b"), "status")).out
    assert "Club d" in people
    assert "last error" in people


def test_sync_with_one_peer_once(clubs: Clubs) -> None:
    c = clubs.node("c")
    note = ok(cli(c, "post", "note", "--text", "c to everyone", "--audience", "public", "--json"))
    run = ok(cli(clubs.node("b"), "sync", "Club c", "--json"))
    (result,) = run.json()
    assert result["peer"] == "Club c"
    assert result["behind"] == 0
    assert "error" not in result
    assert holds(clubs, "b", note.json()["id"])  # either this sync or b's own loop took it
    again = ok(cli(clubs.node("b"), "sync", "Club c"))
    assert again.out.startswith("Club c: received ")


def test_sync_with_an_unreachable_peer_names_it_and_exits_1(clubs: Clubs) -> None:
    run = cli(clubs.node("b"), "sync", "Club d")
    assert run.code == 1, run
    assert run.out == ""  # a failure is on stderr, one line (issue 12)
    (line,) = run.err.splitlines()
    assert line.startswith("federation: error: Club d: ")
    assert "unreachable" in line
    assert f"127.0.0.1:{clubs.ports['d']}" in line
    results = cli(clubs.node("b"), "sync", "--json")  # every active peer: one fails
    assert results.code == 1
    by_peer = {r["peer"]: r for r in results.json()}
    assert "error" in by_peer["Club d"]
    assert "error" not in by_peer["Club a"]
    assert "error" not in by_peer["Club c"]


def test_a_damaged_invite_is_refused_with_exit_2(clubs: Clubs) -> None:
    invite = clubs.invites["d"]
    prefix, _, body = invite.partition(":")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    at = raw.index(b'"url":"') + len('"url":"https://127.0.0.')
    raw[at] = ord("9")  # the address changed in transit: the signature must catch it
    altered = f"{prefix}:{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"
    for damaged in (altered, invite[: len(invite) // 2]):
        run = cli(clubs.node("a"), "peers", "add", damaged)
        assert run.code == 2, run
        (line,) = run.err.splitlines()
        assert line.startswith("federation: error: ")
        assert "invite" in line
        assert "ask" in line  # what to do: ask the club for it again
    assert run.out == ""
    run = cli(clubs.node("a"), "peers", "add", invite.removeprefix("fed"))
    assert run.code == 2
    assert run.err == "federation: error: not an invite: it should start with 'fedinvite1:'\n"
    listed = ok(cli(clubs.node("a"), "peers", "list", "--json")).json()
    assert {p["name"] for p in listed} == {"Club b"}  # nothing was added


def test_pause_and_resume_from_the_cli(clubs: Clubs) -> None:
    b = clubs.node("b")
    paused = ok(cli(b, "peers", "pause", "Club d", "--json")).json()
    assert paused["state"] == "paused"
    run = ok(cli(b, "sync", "--json"))  # only active peers: d is left out, so no error
    assert {r["peer"] for r in run.json()} == {"Club a", "Club c"}
    ok(cli(b, "peers", "resume", "Club d"))
    listed = {p["name"]: p["state"] for p in ok(cli(b, "peers", "list", "--json")).json()}
    assert listed["Club d"] == "active"


def test_a_stopped_node_is_reported_unreachable_by_name(clubs: Clubs) -> None:
    clubs.stop("c")
    assert clubs.exits["c"] == 0  # Ctrl-C stops `federation run` promptly and cleanly
    run = cli(clubs.node("b"), "sync", "Club c")
    assert run.code == 1
    assert "Club c" in run.err
    assert "unreachable" in run.err
    status = ok(cli(clubs.node("b"), "status", "--json")).json()
    (c,) = [p for p in status["peers"] if p["name"] == "Club c"]
    assert "unreachable" in c["last_error"]
