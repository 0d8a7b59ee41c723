"""Delivery you can see (issue 12, node/delivery.py), through the real CLI and real nodes.

Clubs A and B run `federation run` in the background (real processes, plain HTTP on
127.0.0.1); club C is a peer of A whose node never runs. A posts; B's node takes the
event, and its frontier for A then shows A's log at that event: A's `status` and
`show` say "delivered to Club B; not yet to Club C". When B pauses A, B serves A as
a stranger, and A's `status` says so in words; when B resumes A, that goes away.
Every wait is bounded; every process started here is stopped in a finally.
"""

from __future__ import annotations

import functools
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from federation.core.events import Head
from federation.errors import PeerUnavailableError, RemoteProtocolError
from federation.node import delivery
from federation.store.base import PeerRecord
from federation.store.memory import MemoryStore
from federation.store.meta import Held, Refusal, read_held, read_refusal
from federation.sync.messages import LogHead
from tests.cli.test_cli import cli_quiet, ok
from tests.harness import free_port
from tests.sync.test_cli_sync import command, environment, wait_until

pytestmark = pytest.mark.timeout(120)

RUNNING = ("a", "b")  # c's node never runs


@dataclass
class Clubs:
    root: Path
    ids: dict[str, str] = field(default_factory=dict)
    servers: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def node(self, name: str) -> Path:
        return self.root / name

    def status(self, name: str = "a") -> dict[str, Any]:
        data: dict[str, Any] = ok(cli_quiet(self.node(name), "status", "--json")).json()
        return data

    def delivery(self, peer: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = self.status()["delivery"]
        (entry,) = [p for p in found if p["club"] == self.ids[peer]]
        return entry


def _serving(clubs: Clubs, name: str) -> bool:
    server = clubs.servers[name]
    text = clubs.logs[name].read_text(encoding="utf-8", errors="replace")
    assert server.poll() is None, f"federation run of {name} exited: {text}"
    return " serving on " in text


@pytest.fixture(scope="module")
def clubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clubs]:
    clubs = Clubs(tmp_path_factory.mktemp("delivery"))
    try:
        for name in ("a", "b", "c"):
            listen = f"127.0.0.1:{free_port()}"
            run = cli_quiet(
                clubs.node(name),
                *("init", "--name", f"Club {name.upper()}", "--listen", listen),
                *("--plain-http", "--no-passphrase"),
            )
            clubs.ids[name] = ok(run).out.split()[0]
        invites = {n: ok(cli_quiet(clubs.node(n), "invite")).out.strip() for n in ("a", "b", "c")}
        ok(cli_quiet(clubs.node("a"), "peers", "add", invites["b"]))
        ok(cli_quiet(clubs.node("a"), "peers", "add", invites["c"]))
        ok(cli_quiet(clubs.node("b"), "peers", "add", invites["a"]))
        for name in RUNNING:
            clubs.logs[name] = clubs.root / f"{name}.stderr"
            with clubs.logs[name].open("w", encoding="utf-8") as stderr:
                clubs.servers[name] = subprocess.Popen(
                    command(clubs.node(name), "run"),
                    env=environment(),
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    text=True,
                )
        for name in RUNNING:
            wait_until(functools.partial(_serving, clubs, name), f"`federation run` of {name}")
        yield clubs
    finally:
        for server in clubs.servers.values():
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def _log(entry: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = [log for log in entry["logs"] if log["name"] == name]
    return found[0] if found else None


def test_status_and_show_say_which_peers_hold_our_latest_event(clubs: Clubs) -> None:
    a = clubs.node("a")
    note = ["post", "note", "--audience", "federation", "--text", "march on Saturday"]
    posted = ok(cli_quiet(a, *note, "--json")).json()
    secret = ok(cli_quiet(a, "post", "note", "--text", "members only", "--json")).json()

    def b_holds_it() -> bool:
        log = _log(clubs.delivery("b"), "federation")
        return log is not None and log["held_seq"] >= posted["seq"]

    wait_until(b_holds_it, "b's frontier to show a's federation note")
    b, c = clubs.delivery("b"), clubs.delivery("c")
    federation_b, federation_c = _log(b, "federation"), _log(c, "federation")
    assert federation_b is not None
    assert federation_c is not None
    assert federation_b["delivered"] is True
    assert federation_b["head_seq"] == posted["seq"]
    assert (federation_c["delivered"], federation_c["held_seq"]) == (False, 0)
    assert b["accepts_us"] is True
    # Only logs a peer may receive count: the private log is no one's to hold.
    assert _log(b, "private") is None
    assert _log(c, "private") is None

    shown = ok(cli_quiet(a, "show", posted["id"][:8], "--json")).json()["delivery"]
    assert shown == {
        "leaves_node": True,
        "held_by": [clubs.ids["b"]],
        "not_yet": [clubs.ids["c"]],
    }
    private = ok(cli_quiet(a, "show", secret["id"][:8], "--json")).json()["delivery"]
    assert private == {"leaves_node": False, "held_by": [], "not_yet": []}
    people = ok(cli_quiet(a, "show", posted["id"][:8])).out
    assert "held by Club B; not yet shown held by Club C" in people

    lines = " ".join(ok(cli_quiet(a, "status")).out.split())  # lines wrap at 80 columns
    assert "log federation: delivered to Club B; not yet to Club C (last contact" in lines


def test_the_posting_rails_hold_through_the_running_node(clubs: Clubs) -> None:
    """A's node runs, so `post` goes through its control socket: the same refusals."""
    a = clubs.node("a")
    before = clubs.status()["events"]
    own = cli_quiet(a, "post", "note", "--text", "x", "--audience", f"clubs:{clubs.ids['a']}")
    assert own.code == 2
    assert "names only this club" in own.error_line
    report = ["post", "report", "--member", "ana", "--period", "2026-11", "--text", "t"]
    public = cli_quiet(a, *report, "--audience", "public")
    assert public.code == 2
    assert "pass --yes" in public.error_line
    update = ["post", "campaign", "--campaign", "nothing", "--op", "updated"]
    assert "there is no campaign" in cli_quiet(a, *update, "--audience", "public").error_line
    assert clubs.status()["events"] == before


def test_a_log_for_named_clubs_counts_only_them(clubs: Clubs) -> None:
    a = clubs.node("a")
    posted = ok(
        cli_quiet(a, "post", "note", "--audience", "clubs:Club C", "--text", "c only", "--json")
    ).json()
    name = posted["log_name"]
    assert _log(clubs.delivery("c"), name) is not None
    assert _log(clubs.delivery("b"), name) is None  # b may not receive it: never "late"
    shown = ok(cli_quiet(a, "show", posted["id"][:8], "--json")).json()["delivery"]
    assert shown["held_by"] == []
    assert shown["not_yet"] == [clubs.ids["c"]]


def test_status_says_when_a_peer_no_longer_accepts_us(clubs: Clubs) -> None:
    a, b = clubs.node("a"), clubs.node("b")
    ok(cli_quiet(b, "peers", "pause", "club a"))

    def refused() -> bool:
        return clubs.delivery("b")["accepts_us"] is False

    wait_until(refused, "a to see that b no longer accepts its requests")
    entry = clubs.delivery("b")
    assert entry["refused"] == "no longer accepts our requests (paused or removed us)"
    assert entry["refused_since_us"] > 0
    lines = " ".join(ok(cli_quiet(a, "status")).out.split())  # lines wrap at 80 columns
    assert "Club B no longer accepts our requests since " in lines
    assert "(paused or removed us)" in lines
    # What b showed it held before is kept: a stranger's view says nothing of it.
    federation = _log(entry, "federation")
    assert federation is not None
    assert federation["delivered"] is True

    ok(cli_quiet(b, "peers", "resume", clubs.ids["a"][:6]))

    def accepted() -> bool:
        return clubs.delivery("b")["accepts_us"] is True

    wait_until(accepted, "a to see that b accepts its requests again", timeout_s=40)
    assert "no longer accepts" not in ok(cli_quiet(a, "status")).out

    # Removed (a signed roster event at b): the same, in the same words.
    ok(cli_quiet(b, "peers", "remove", "CLUB A"))
    wait_until(refused, "a to see that b removed it")
    assert clubs.delivery("b")["refused"] == delivery.NOT_A_PEER


# --- the records behind it (node/delivery.py), on a store ------------------------------


PEER = PeerRecord(b"p" * 32, "Club P", "http://127.0.0.1:9", b"", "active", 0)
LOG = b"l" * 32


async def test_a_head_that_is_not_our_event_counts_as_nothing_held() -> None:
    store = MemoryStore()
    ours: dict[bytes, Head | None] = {LOG: Head(3, b"h" * 32)}
    shown = [LogHead(LOG, 3, b"h" * 32)]
    await delivery.note_frontier(store, PEER, accepts=True, heads=shown, ours=ours, now_us=5)
    assert await read_held(store, PEER.club, LOG) == Held(3, 5)
    forged = [LogHead(LOG, 3, b"x" * 32)]  # our seq, another id: not our event
    await delivery.note_frontier(store, PEER, accepts=True, heads=forged, ours=ours, now_us=6)
    assert await read_held(store, PEER.club, LOG) == Held(0, 6)
    beyond = [LogHead(LOG, 9, b"x" * 32)]  # past our head: the restore guard's, not ours
    await delivery.note_frontier(store, PEER, accepts=True, heads=beyond, ours=ours, now_us=7)
    assert await read_held(store, PEER.club, LOG) == Held(0, 6)


async def test_a_refusal_by_code_is_recorded_and_an_outage_is_not() -> None:
    store = MemoryStore()
    down = PeerUnavailableError("peer Club P unreachable: cannot connect", peer="Club P")
    await delivery.note_error(store, PEER, down, 10)
    assert await read_refusal(store, PEER.club) is None  # unreachable says nothing of us
    expired = RemoteProtocolError("request token expired", code="expired", http_status=401)
    await delivery.note_error(store, PEER, expired, 11)
    assert await read_refusal(store, PEER.club) == Refusal(11, delivery.REFUSING_CODES["expired"])
    await delivery.note_error(store, PEER, expired, 12)  # the same refusal: since stays
    assert (await read_refusal(store, PEER.club) or Refusal(0, "")).since_us == 11
    # Its frontier lists its roster to us again: it accepts us.
    await delivery.note_frontier(store, PEER, accepts=True, heads=[], ours={}, now_us=13)
    assert await read_refusal(store, PEER.club) is None
