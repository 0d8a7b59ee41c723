"""`federation block`, `unblock` and `blocked` (protocol.md §6.3), in-process on real
node directories: a junk club's logs arrive by `import`, are dropped by `block`, are
refused while it holds, and are taken again after `unblock`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli import Run, cli, cli_quiet, ok

pytestmark = pytest.mark.timeout(30)


def init(root: Path, name: str) -> str:
    return ok(
        cli_quiet(root, "init", "--name", name, "--plain-http", "--no-passphrase")
    ).out.split()[0]


@pytest.fixture
def nodes(tmp_path: Path) -> tuple[Path, Path, str, Path]:
    """Node A (ours) holding junk club J's public log (imported), and peer B."""
    a, b, j = tmp_path / "a", tmp_path / "b", tmp_path / "j"
    init(a, "Club A")
    init(b, "Club B")
    junk = init(j, "Junk")
    for i in range(3):
        ok(cli_quiet(j, "post", "note", "--audience", "public", "--text", f"junk {i}"))
    export = tmp_path / "junk.jsonl"
    ok(cli_quiet(j, "export", "--audience", "public", "-o", str(export)))
    ok(cli_quiet(a, "import", str(export)))
    invite = ok(cli_quiet(b, "invite", "--url", "http://127.0.0.1:9")).out.strip()
    ok(cli_quiet(a, "peers", "add", invite))
    return a, b, junk, export


def one_line_error(run: Run, code: int, text: str) -> None:
    assert run.code == code, run
    assert text in run.error_line, run.err


def test_block_drops_the_club_and_refuses_it(
    capsys: pytest.CaptureFixture[str], nodes: tuple[Path, Path, str, Path]
) -> None:
    a, _, junk, export = nodes
    before = ok(cli(capsys, a, "status", "--json")).json()
    assert junk in {log["club"] for log in before["logs"]}  # the positive control
    assert before["blocked"] == []

    blocked = ok(cli(capsys, a, "block", junk[:8], "--json")).json()
    assert (blocked["club"], blocked["logs"], blocked["events"]) == (junk, 1, 3)
    after = ok(cli(capsys, a, "status", "--json")).json()
    assert junk not in {log["club"] for log in after["logs"]}
    assert after["events"] == before["events"] - 3
    assert [b["club"] for b in after["blocked"]] == [junk]
    # For people, a club this node knows no name for is "club" and its id's start.
    assert f"blocked  club {junk[:8]} since " in ok(cli(capsys, a, "status")).out
    assert [b["club"] for b in ok(cli(capsys, a, "blocked", "--json")).json()] == [junk]
    assert f"  club {junk[:8]}  since " in ok(cli(capsys, a, "blocked")).out
    assert "junk 0" not in ok(cli(capsys, a, "log", "--json")).out

    again = ok(cli(capsys, a, "block", junk, "--json")).json()
    assert again["already"] is True
    one_line_error(cli(capsys, a, "import", str(export)), 1, "blocked")
    assert ok(cli(capsys, a, "status", "--json")).json()["events"] == after["events"]

    unblocked = ok(cli(capsys, a, "unblock", junk[:8]))
    assert "unblocked club" in unblocked.out
    assert ok(cli(capsys, a, "blocked", "--json")).json() == []
    ok(cli(capsys, a, "import", str(export)))  # taken again
    assert ok(cli(capsys, a, "status", "--json")).json()["events"] == before["events"]
    one_line_error(cli(capsys, a, "unblock", junk), 2, "no blocked club")


def test_block_refuses_our_club_a_peer_and_unknown_clubs(
    capsys: pytest.CaptureFixture[str], nodes: tuple[Path, Path, str, Path]
) -> None:
    a, b, _, _ = nodes
    ours = ok(cli(capsys, a, "status", "--json")).json()["club"]
    one_line_error(cli(capsys, a, "block", ours), 2, "cannot be blocked")
    one_line_error(cli(capsys, a, "block", "Club B"), 2, "remove it first")
    one_line_error(cli(capsys, a, "block", "beef"), 2, "no club 'beef'")
    one_line_error(cli(capsys, a, "block", "b"), 2, "no club")  # too short a prefix
    assert ok(cli(capsys, a, "blocked", "--json")).json() == []

    # Removed, the club can be blocked; and a blocked club's invite is refused.
    peer = ok(cli(capsys, a, "peers", "list", "--json")).json()[0]["club"]
    ok(cli(capsys, a, "peers", "remove", "Club B"))
    ok(cli(capsys, a, "block", peer))
    invite = ok(cli(capsys, b, "invite", "--url", "http://127.0.0.1:9")).out.strip()
    one_line_error(cli(capsys, a, "peers", "add", invite), 2, "unblock")


def test_a_club_not_yet_seen_can_be_blocked_by_its_full_id(
    capsys: pytest.CaptureFixture[str], nodes: tuple[Path, Path, str, Path]
) -> None:
    a = nodes[0]
    stranger = "ab" * 32
    blocked = ok(cli(capsys, a, "block", stranger, "--json")).json()
    assert (blocked["club"], blocked["events"], blocked["already"]) == (stranger, 0, False)
