"""Posting rails (issue 12, node/rails.py), through the real CLI on real node directories:
an audience that reaches nobody is refused, a club with no route is warned of, a
report made public needs a yes, and a campaign step that would change nothing is
refused with the view's own reason. Each refusal is one line, exit 2, and changes
nothing in the store.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federation.core.canonical import Header, Kind
from federation.core.events import VerifiedEvent
from federation.core.payloads import Campaign
from federation.node.keyfile import PASSPHRASE_ENV
from federation.views import campaigns
from federation.views.campaigns import CampaignItem
from tests.cli.test_cli import Run, cli, cli_quiet, ok

pytestmark = pytest.mark.timeout(60)


def init(root: Path, name: str) -> str:
    run = cli_quiet(root, "init", "--name", name, "--plain-http", "--no-passphrase")
    return ok(run).out.split()[0]


def events(root: Path) -> int:
    count: int = ok(cli_quiet(root, "status", "--json")).json()["events"]
    return count


def refused(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> str:
    """Run a post that must be refused: exit 2, one line, and the store unchanged."""
    before = events(root)
    run = cli(capsys, root, *args)
    assert run.code == 2, run
    assert events(root) == before
    return run.error_line


@pytest.fixture
def a(tmp_path: Path) -> tuple[Path, str, str]:
    """Club A (ours), its peer B, and club J known here only from an import of J's
    public log (not a peer, in no roster: no route), where J created campaign `rent`."""
    root, b, j = tmp_path / "a", tmp_path / "b", tmp_path / "j"
    init(root, "Club A")
    peer = init(b, "Club B")
    junk = init(j, "Club J")
    args = ["post", "campaign", "--audience", "public", "--campaign", "rent", "--op", "created"]
    ok(cli_quiet(j, *args))
    export = tmp_path / "j.jsonl"
    ok(cli_quiet(j, "export", "--audience", "public", "-o", str(export)))
    ok(cli_quiet(root, "import", str(export)))
    invite = ok(cli_quiet(b, "invite", "--url", "http://127.0.0.1:9")).out.strip()
    ok(cli_quiet(root, "peers", "add", invite))
    return root, peer, junk


# --- audiences --------------------------------------------------------------------------


def test_an_audience_that_reaches_nobody_is_refused(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, str, str]
) -> None:
    root, _, _ = a
    status = ok(cli(capsys, root, "status", "--json")).json()
    ours = status["club"]
    a_log = status["logs"][0]["id"]
    note = ["post", "note", "--text", "x", "--audience"]
    line = refused(capsys, root, *note, f"clubs:{ours}")
    assert "names only this club" in line
    assert "--audience private" in line
    assert "is a log id, not a club" in refused(capsys, root, *note, f"clubs:{a_log}")
    made_up = "ab" * 32
    line = refused(capsys, root, *note, f"clubs:{made_up},{ours}")
    assert "none of the clubs named (abababababab) is known to this node" in line
    assert "federation peers add" in line
    # An event id is no club either.
    posted = ok(cli(capsys, root, "post", "note", "--text", "first", "--json")).json()
    assert "is an event id, not a club" in refused(capsys, root, *note, f"clubs:{posted['id']}")


def test_a_known_club_with_no_route_is_warned_of_and_posted(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, str, str]
) -> None:
    root, peer, junk = a
    before = events(root)
    run = ok(cli(capsys, root, "post", "note", "--text", "x", "--audience", f"clubs:{junk[:8]}"))
    assert "'Club J'" not in run.err  # J's name is nowhere we trust: its id is shown
    assert f"club {junk[:12]} has no route from this node" in run.err
    assert events(root) == before + 1
    # A peer has a route: no warning (the positive control of the warning above).
    quiet = ok(cli(capsys, root, "post", "note", "--text", "y", "--audience", f"clubs:{peer[:8]}"))
    assert "no route" not in quiet.err
    # Named with a known club, an unknown full id is posted to, and warned of.
    mixed = f"clubs:{peer},{'cd' * 32}"
    warned = ok(cli(capsys, root, "post", "note", "--text", "z", "--audience", mixed))
    assert f"club {'cd' * 6} has no route" in warned.err


# --- a report made public -----------------------------------------------------------------

REPORT = ["post", "report", "--member", "ana", "--period", "2026-11", "--text", "leafleted"]


def test_a_public_report_needs_yes_without_a_terminal(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, str, str]
) -> None:
    root = a[0]
    line = refused(capsys, root, *REPORT, "--audience", "public")
    assert "pass --yes" in line
    posted = ok(cli(capsys, root, *REPORT, "--audience", "public", "--yes", "--json")).json()
    assert posted["audience"] == "public"
    ok(cli(capsys, root, *REPORT, "--audience", "federation"))  # not public: no question
    ok(cli(capsys, root, "post", "note", "--text", "x", "--audience", "public"))  # no report


def _on_a_terminal(root: Path, answer: bytes) -> tuple[int, str]:
    """Run a public report in a real process whose terminal is a pty; answer the question."""
    env = {k: v for k, v in os.environ.items() if k != "FEDERATION_NODE"}
    env.pop(PASSPHRASE_ENV, None)
    master, slave = pty.openpty()
    args = [sys.executable, "-m", "federation", "--node", str(root), *REPORT, "--audience"]
    process = subprocess.Popen(
        [*args, "public"], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"[y/N]" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 4096)
        os.write(master, answer)
        code = process.wait(timeout=30)
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, seen.decode(errors="replace")


def test_a_public_report_asks_on_a_terminal(a: tuple[Path, str, str]) -> None:
    root = a[0]
    before = events(root)
    code, shown = _on_a_terminal(root, b"n\n")
    assert "goes to anyone" in shown
    assert code == 2
    assert events(root) == before
    code, shown = _on_a_terminal(root, b"y\n")
    assert code == 0, shown
    assert events(root) == before + 1


# --- campaign steps that would change nothing ----------------------------------------------

CAMPAIGN = ["post", "campaign", "--audience", "federation", "--campaign"]


def test_campaign_steps_that_change_nothing_are_refused(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, str, str]
) -> None:
    root = a[0]
    line = refused(capsys, root, *CAMPAIGN, "strike", "--op", "updated", "--text", "week 2")
    assert "there is no campaign 'strike' in this log: post op created first" in line
    ok(cli(capsys, root, *CAMPAIGN, "strike", "--op", "created", "--title", "Strike"))
    assert "exists already" in refused(capsys, root, *CAMPAIGN, "strike", "--op", "created")
    ok(cli(capsys, root, *CAMPAIGN, "strike", "--op", "updated", "--text", "week 2"))
    ok(cli(capsys, root, *CAMPAIGN, "strike", "--op", "closed", "--text", "won"))
    line = refused(capsys, root, *CAMPAIGN, "strike", "--op", "updated", "--text", "late")
    assert "was closed at seq" in line
    assert "closed" in refused(capsys, root, *CAMPAIGN, "strike", "--op", "closed")
    # The same slug in another log of ours is another campaign: it may be created there.
    public = ["post", "campaign", "--audience", "public", "--campaign", "strike"]
    ok(cli(capsys, root, *public, "--op", "created"))
    (shown,) = [
        c
        for c in ok(cli(capsys, root, "campaigns", "--json")).json()
        if c["campaign"] == "strike" and c["status"] == "closed"
    ]
    assert shown["updates"] == 2  # the refused steps are nowhere


def test_a_step_naming_another_clubs_campaign_is_refused(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, str, str]
) -> None:
    root, _, junk = a
    public = ["post", "campaign", "--audience", "public", "--campaign", "rent"]
    line = refused(capsys, root, *public, "--op", "updated", "--text", "we join")
    assert f"campaign 'rent' is club {junk[:12]}'s, not this club's" in line


# --- one rule: the refusal asks what the projection folds by -------------------------------


def _event(seq: int) -> VerifiedEvent:
    header = Header(
        b"c" * 32, b"l" * 32, seq, b"\0" * 32, 0, Kind.CAMPAIGN, b"\0" * 32, 0, b"k" * 32
    )
    return VerifiedEvent(bytes([seq]) * 32, header, b"", None)


@pytest.mark.parametrize("op", ["created", "updated", "closed"])
@pytest.mark.parametrize("state", [None, "open", "closed"])
def test_unchanged_is_exactly_what_apply_folds_away(op: str, state: str | None) -> None:
    item = None
    if state is not None:
        item = CampaignItem("63" * 32, "6c" * 32, "rent", "Rent", "", state, 1, 1, 0)
    step = Campaign("rent", op)  # type: ignore[arg-type]
    after = campaigns.apply(item, _event(5), step)
    assert (campaigns.unchanged(item, step) is None) == (after != item)


def test_a_refusal_under_json_is_still_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = tmp_path / "n"
    init(root, "Club N")
    run: Run = cli(capsys, root, *REPORT, "--audience", "public", "--json")
    assert run.code == 2
    assert run.out == ""
    assert "pass --yes" in run.err
