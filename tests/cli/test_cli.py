"""The CLI end to end: `federation.cli.main([...])` in-process, and a few real processes.

Nodes are real directories in tmp_path with real SQLite stores and encrypted keys.
Unlocking a key costs one scrypt (~0.1 s), so one node is filled per module and
copied (a directory copy costs milliseconds) for every test that changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from federation.cli.main import NODE_ENV, main
from federation.core import canonical, crypto
from federation.node.keyfile import PASSPHRASE_ENV
from federation.node.node import Node
from tests.store_access import readable_bytes

PASSPHRASE = "correct horse battery"


def _partner_genesis(i: int) -> bytes:
    key = crypto.SigningKey(canonical.sha256(b"partner key %d" % i))
    recovery = canonical.sha256(b"partner recovery %d" % i)
    return canonical.encode_genesis(canonical.Genesis(key.public, recovery, 1_780_000_000_000_000))


# Two partner clubs for the named audience, sorted as the audience's text form is. A
# post must name clubs the node knows (node/rails.py): the filled node holds their
# genesis, as a sync from them would bring it.
PARTNER_GENESIS = {canonical.club_id(g).hex(): g for g in map(_partner_genesis, range(2))}
PARTNERS = sorted(PARTNER_GENESIS)
AUDIENCES = ("private", "federation", "public", "clubs:" + ",".join(PARTNERS))
KINDS = ("note", "action", "report", "campaign")


# --- running the CLI --------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One CLI invocation: exit code and what it printed."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def error_line(self) -> str:
        """stderr, which for a failure must be exactly one line."""
        lines = self.err.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {self.err!r}"
        return lines[0]


def _main(argv: Sequence[str]) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:  # argparse exits from inside parse_args on a usage error
        return exc.code if isinstance(exc.code, int) else 1


def node_args(node: Path | None, args: Sequence[str]) -> list[str]:
    return (["--node", str(node)] if node is not None else []) + list(args)


def cli(capsys: pytest.CaptureFixture[str], node: Path | None, *args: str) -> Run:
    """Run `federation [--node NODE] ARGS...` in this process, capturing with capsys."""
    capsys.readouterr()  # drop anything printed before
    code = _main(node_args(node, args))
    out, err = capsys.readouterr()
    return Run(code, out, err)


def cli_quiet(node: Path | None, *args: str) -> Run:
    """The same without capsys, for module-scoped fixtures (capsys is per test)."""
    out, err = io.BytesIO(), io.BytesIO()
    # The wrappers must outlive the reads: closing one closes its BytesIO.
    out_text = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    err_text = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(err_text):
        code = _main(node_args(node, args))
    run = Run(code, out.getvalue().decode(), err.getvalue().decode())
    out_text.detach(), err_text.detach()
    return run


def ok(run: Run) -> Run:
    assert run.code == 0, f"exit {run.code}: {run.err}"
    return run


def copy_node(node: Path, to: Path) -> Path:
    shutil.copytree(node, to)
    return to


@pytest.fixture(scope="module", autouse=True)
def passphrase_env() -> Iterator[None]:
    """The passphrase comes from the environment, so nothing prompts."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PASSPHRASE_ENV, PASSPHRASE)
        mp.delenv(NODE_ENV, raising=False)
        yield


# --- a filled node, shared by the module ------------------------------------------------


@dataclass
class Filled:
    root: Path
    club: str
    posted: dict[tuple[str, str], dict[str, Any]]  # (kind, audience) -> the post's JSON
    steps: list[dict[str, Any]] = field(default_factory=list)  # later campaign steps


def post_args(kind: str, audience: str, i: int) -> list[str]:
    where = {
        "note": ["--text", f"note {i} for {audience[:10]}"],
        "action": [
            "--what",
            f"Picket {i}",
            "--starts",
            f"2026-12-{i + 1:02d}T18:00+00:00",
            "--ends",
            f"2026-12-{i + 1:02d}T20:00+01:00",
            "--where",
            "the depot",
            "--participants",
            str(5 + i),
            "--text",
            "bring flasks",
        ],
        # --yes: a report into a public log needs it (node/rails.py), harmless elsewhere
        "report": ["--member", "ana", "--period", "2026-11", "--text", f"leafleted {i}", "--yes"],
        "campaign": [
            "--campaign",
            f"rent-{i}",
            "--op",
            "created",
            "--title",
            f"Rent strike {i}",
            "--text",
            "no rises",
        ],
    }
    return ["post", kind, "--audience", audience, "--json", *where[kind]]


async def _know_partners(root: Path) -> None:
    async with await Node.open(root) as node:
        for club, genesis in PARTNER_GENESIS.items():
            await node.store.put_club(bytes.fromhex(club), genesis)


def make_filled(root: Path) -> Filled:
    club = ok(cli_quiet(root, "init", "--name", "Club A", "--plain-http")).out.split()[0]
    asyncio.run(_know_partners(root))
    posted: dict[tuple[str, str], dict[str, Any]] = {}
    for i, audience in enumerate(AUDIENCES):
        for kind in KINDS:
            posted[kind, audience] = ok(cli_quiet(root, *post_args(kind, audience, i))).json()
    filled = Filled(root, club, posted)
    # Campaign steps after creation: updated then closed in federation, updated in public.
    for audience, i, op, extra in [
        ("federation", 1, "updated", ["--title", "Rent strike, week 2"]),
        ("federation", 1, "closed", ["--text", "won"]),
        ("public", 2, "updated", ["--text", "march on Saturday"]),
    ]:
        args = ["post", "campaign", "--audience", audience, "--json", "--campaign", f"rent-{i}"]
        filled.steps.append(ok(cli_quiet(root, *args, "--op", op, *extra)).json())
    return filled


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    return make_filled(tmp_path_factory.mktemp("filled") / "node")


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second club's node with nothing posted: the target of imports."""
    root = tmp_path_factory.mktemp("empty") / "node"
    ok(cli_quiet(root, "init", "--name", "Club B"))
    return root


def all_actions(capsys: pytest.CaptureFixture[str], node: Path) -> list[dict[str, Any]]:
    """The calendar, past and upcoming (the fixture's actions are dated, now moves on)."""
    past = ok(cli(capsys, node, "calendar", "--past", "--json")).json()
    return [*past, *ok(cli(capsys, node, "calendar", "--json")).json()]


def all_events(capsys: pytest.CaptureFixture[str], node: Path, *args: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = ok(
        cli(capsys, node, "log", "--json", "--limit", "1000", *args)
    ).json()
    return events


# --- init -------------------------------------------------------------------------------


def test_init_prints_the_club_id_and_refuses_to_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = tmp_path / "node"
    run = ok(cli(capsys, node, "init", "--name", "Tenants' Club"))
    club = run.out.splitlines()[0]
    assert len(club) == 64
    assert bytes.fromhex(club)
    # The recovery words are shown once, on stderr, and kept nowhere (protocol.md §2.1).
    assert "recovery words: " in run.err
    assert "NOT stored on this machine" in run.err
    assert not (node / "recovery.key").exists()
    status = ok(cli(capsys, node, "status", "--json")).json()
    assert status["club"] == club
    assert status["name"] == "Tenants' Club"
    assert status["key_encrypted"] is True
    assert status["events"] == 0
    assert sorted(log["name"] for log in status["logs"]) == ["federation", "private", "public"]

    before = {p.name: p.read_bytes() for p in node.iterdir()}
    again = cli(capsys, node, "init", "--name", "Another Club")
    assert again.code == 2
    assert "already holds a node" in again.error_line
    assert "choose another directory" in again.error_line
    assert {p.name: p.read_bytes() for p in node.iterdir()} == before


def test_init_json_and_the_unencrypted_opt_out_is_warned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = tmp_path / "server"
    run = ok(cli(capsys, node, "init", "--name", "Server Club", "--no-passphrase", "--json"))
    data = run.json()
    assert data["name"] == "Server Club"
    assert data["node"] == str(node)
    assert "UNENCRYPTED" in run.err
    assert ok(cli(capsys, node, "status", "--json")).json()["key_encrypted"] is False
    posted = ok(cli(capsys, node, "post", "note", "--text", "no passphrase", "--json")).json()
    assert posted["payload"] == {"text": "no passphrase"}


# --- post -------------------------------------------------------------------------------


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("kind", KINDS)
def test_post_every_kind_into_every_audience(
    capsys: pytest.CaptureFixture[str], filled: Filled, kind: str, audience: str
) -> None:
    posted = filled.posted[kind, audience]
    assert posted["kind"] == kind
    assert posted["audience"] == audience
    assert posted["club"] == filled.club
    assert posted["erased"] is False
    # One log per audience; its events are numbered from 1 in the order posted.
    assert posted["seq"] == KINDS.index(kind) + 1
    if ":" not in audience:
        assert posted["log_name"] == audience
    shown = ok(cli(capsys, filled.root, "show", posted["id"], "--json")).json()
    assert {k: shown[k] for k in posted} == posted  # `show` adds delivery and names
    i = AUDIENCES.index(audience)
    expected = {
        "note": {"text": f"note {i} for {audience[:10]}"},
        "report": {"member": "ana", "period": "2026-11", "text": f"leafleted {i}"},
    }
    if kind in expected:
        assert shown["payload"] == expected[kind]
    elif kind == "action":
        assert shown["payload"]["what"] == f"Picket {i}"
        assert shown["payload"]["participants"] == 5 + i
    else:
        assert shown["payload"]["campaign"] == f"rent-{i}"
        assert shown["payload"]["op"] == "created"


def test_a_named_audience_gets_its_own_log(
    capsys: pytest.CaptureFixture[str], filled: Filled
) -> None:
    named = filled.posted["note", AUDIENCES[3]]
    assert named["log_name"].startswith("clubs-")
    status = ok(cli(capsys, filled.root, "status", "--json")).json()
    (log,) = [lg for lg in status["logs"] if lg["id"] == named["log"]]
    assert log["audience"] == AUDIENCES[3]
    assert log["own"] is True


def test_post_prints_the_event_for_people(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, filled: Filled
) -> None:
    node = copy_node(filled.root, tmp_path / "node")
    run = ok(cli(capsys, node, "post", "note", "--text", "hello", "--log", "minutes"))
    event_id, where = run.out.split(maxsplit=1)
    assert len(event_id) == 64
    assert where.strip() == "minutes #1  (private)"


# --- log and show -----------------------------------------------------------------------


def test_log_lists_everything_and_filters(
    capsys: pytest.CaptureFixture[str], filled: Filled
) -> None:
    events = all_events(capsys, filled.root)
    ids = {e["id"] for e in events}
    assert ids == {p["id"] for p in filled.posted.values()} | {s["id"] for s in filled.steps}
    assert all(e["signed"] is None for e in events)  # the list leaves out the raw bytes

    public = all_events(capsys, filled.root, "--log", "public")
    assert {e["audience"] for e in public} == {"public"}
    assert len(public) == len(KINDS) + 1
    by_prefix = all_events(capsys, filled.root, "--log", public[0]["log"][:10])
    assert by_prefix == public

    actions = all_events(capsys, filled.root, "--kind", "action")
    assert {e["id"] for e in actions} == {filled.posted["action", a]["id"] for a in AUDIENCES}
    campaigns = all_events(capsys, filled.root, "--kind", "campaign", "--log", "federation")
    assert [e["payload"]["op"] for e in campaigns] == ["created", "updated", "closed"]
    assert all_events(capsys, filled.root, "--club", filled.club[:8]) == events
    assert all_events(capsys, filled.root, "--club", "club a") == events  # by name too
    unknown = cli(capsys, filled.root, "log", "--club", "ffffffffff")
    assert unknown.code == 2  # a club nobody knows is named, not listed as empty
    assert "no club 'ffffffffff' here" in unknown.error_line

    latest = ok(cli(capsys, filled.root, "log", "--json", "--limit", "3")).json()
    assert latest == events[-3:]


def test_log_for_people(capsys: pytest.CaptureFixture[str], filled: Filled) -> None:
    run = ok(cli(capsys, filled.root, "log", "--kind", "report", "--log", "private"))
    header, line = run.out.splitlines()  # a table: its header, then the one report
    assert header.startswith("ID        TIME (")
    report = filled.posted["report", "private"]
    assert line.startswith(report["id"][:8])
    assert "Club A" in line
    assert "private#3" in line
    assert "report: ana 2026-11: leafleted 0" in line
    # A known club with no events here (an unknown one is an error: test_log_lists_…).
    empty = ok(cli(capsys, filled.root, "log", "--kind", "report", "--club", PARTNERS[0][:8]))
    assert empty.out.splitlines() == ["no events"]


def test_show_by_prefix_for_people(capsys: pytest.CaptureFixture[str], filled: Filled) -> None:
    action = filled.posted["action", "public"]
    run = ok(cli(capsys, filled.root, "show", action["id"][:10].upper()))
    lines = run.out.splitlines()
    assert f"id            {action['id']}" in lines
    assert "kind          action" in lines
    assert "  what: Picket 2" in lines
    assert "  where: the depot" in lines
    shown = ok(cli(capsys, filled.root, "show", action["id"][:10], "--json")).json()
    assert shown["signed"] is not None
    assert len(bytes.fromhex(shown["signed"])) == 263


# --- status and verify ------------------------------------------------------------------


def test_status_json(capsys: pytest.CaptureFixture[str], filled: Filled) -> None:
    status = ok(cli(capsys, filled.root, "status", "--json")).json()
    assert status["club"] == filled.club
    assert status["name"] == "Club A"
    assert status["key_encrypted"] is True
    assert status["events"] == len(filled.posted) + len(filled.steps)
    assert status["forks"] == []
    heads = {log["name"]: log["head_seq"] for log in status["logs"]}
    assert heads["private"] == 4
    assert heads["federation"] == 6
    assert heads["public"] == 5
    assert all(log["own"] and not log["frozen"] for log in status["logs"])
    people = ok(cli(capsys, filled.root, "status")).out
    assert f"club     Club A\nid       {filled.club}\n" in people
    assert "key      club key and store key sealed with the passphrase" in people


def test_verify_ok(capsys: pytest.CaptureFixture[str], filled: Filled) -> None:
    total = len(filled.posted) + len(filled.steps)
    run = ok(cli(capsys, filled.root, "verify"))
    # 3 clubs: ours and the two partners whose genesis the filled node holds (no logs).
    assert run.out.splitlines() == [f"verify ok: {total} events (0 erased) in 4 logs of 3 clubs"]
    data = ok(cli(capsys, filled.root, "verify", "--json")).json()
    assert data == {
        "ok": True,
        "clubs": 3,
        "logs": 4,
        "events": total,
        "erased": 0,
        "problems": [],
        "forks": [],
    }


# --- erase ------------------------------------------------------------------------------


def test_erase_shows_erased_everywhere_and_still_verifies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, filled: Filled
) -> None:
    node = copy_node(filled.root, tmp_path / "node")
    action = filled.posted["action", "federation"]
    report = filled.posted["report", "private"]
    calendar_before = all_actions(capsys, node)
    for event in (action, report):
        run = ok(cli(capsys, node, "erase", event["id"][:12], "--json"))
        # Our own event: erased everywhere, by an erasure event in its log (§3.5).
        assert run.json() == {
            "id": event["id"],
            "log": event["log"],
            "seq": event["seq"],
            "erased": True,
            "everywhere": True,
            "erasure": run.json()["erasure"],
            "received_by": [],
        }

    shown = ok(cli(capsys, node, "show", action["id"], "--json")).json()
    assert shown["erased"] is True
    assert shown["payload"] is None
    # The signed header stays: the same bytes, the same hash and size it commits to.
    assert {k: v for k, v in shown.items() if k in action and k not in ("erased", "payload")} == {
        k: v for k, v in action.items() if k not in ("erased", "payload")
    }
    assert "payload       [erased]" in ok(cli(capsys, node, "show", report["id"])).out

    logged = {e["id"]: e for e in all_events(capsys, node)}
    assert logged[action["id"]]["erased"]
    assert logged[report["id"]]["erased"]
    assert sum(e["erased"] for e in logged.values()) == 2
    people = ok(cli(capsys, node, "log", "--kind", "action")).out.splitlines()
    (line,) = [ln for ln in people if ln.startswith(action["id"][:8])]
    assert line.endswith("[erased]")

    # An erased action has no time to be listed at: the calendar leaves it out.
    calendar = all_actions(capsys, node)
    assert len(calendar) == len(calendar_before) - 1 == len(AUDIENCES) - 1
    assert action["id"] not in {i["event"] for i in calendar}
    shown = ok(cli(capsys, node, "calendar", "--past")).out + ok(cli(capsys, node, "calendar")).out
    assert "[erased]" not in shown

    run = ok(cli(capsys, node, "verify"))
    total = len(filled.posted) + len(filled.steps) + 2  # and the two erasure events
    assert run.out.splitlines()[-1] == f"verify ok: {total} events (2 erased) in 4 logs of 3 clubs"
    # Erasing again changes nothing and is not an error.
    ok(cli(capsys, node, "erase", action["id"]))
    assert ok(cli(capsys, node, "verify", "--json")).json()["erased"] == 2


def test_erasing_a_campaign_step(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, filled: Filled
) -> None:
    node = copy_node(filled.root, tmp_path / "node")
    before = {c["campaign"]: c for c in ok(cli(capsys, node, "campaigns", "--json")).json()}
    assert before["rent-1"]["status"] == "closed"
    closed = filled.steps[1]
    ok(cli(capsys, node, "erase", closed["id"]))
    after = {c["campaign"]: c for c in ok(cli(capsys, node, "campaigns", "--json")).json()}
    assert after["rent-1"]["status"] == "open"
    assert after["rent-1"]["title"] == "Rent strike, week 2"
    assert after["rent-1"]["updates"] == 1
    assert {k: v for k, v in after.items() if k != "rent-1"} == {
        k: v for k, v in before.items() if k != "rent-1"
    }
    # What erase re-derived is what a rebuild from nothing gives.
    ok(cli(capsys, node, "rebuild"))
    rebuilt = {c["campaign"]: c for c in ok(cli(capsys, node, "campaigns", "--json")).json()}
    assert rebuilt == after
    ok(cli(capsys, node, "verify"))


# --- campaigns, calendar, rebuild -------------------------------------------------------


def test_campaigns_and_calendar(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, filled: Filled
) -> None:
    node = copy_node(filled.root, tmp_path / "node")
    campaigns = {c["campaign"]: c for c in ok(cli(capsys, node, "campaigns", "--json")).json()}
    assert sorted(campaigns) == [f"rent-{i}" for i in range(len(AUDIENCES))]
    federation_log = filled.posted["campaign", "federation"]["log"]
    assert campaigns["rent-1"] == {
        "club": filled.club,
        "log": federation_log,
        "campaign": "rent-1",
        "title": "Rent strike, week 2",
        "text": "won",
        "status": "closed",
        "created_seq": 4,
        "updated_seq": 6,
        "updates": 2,
        "club_name": "Club A",  # added for people reading the JSON; the id stays
    }
    assert campaigns["rent-2"]["text"] == "march on Saturday"
    assert campaigns["rent-0"]["status"] == "open"
    calendar = all_actions(capsys, node)
    assert [c["what"] for c in calendar] == [f"Picket {i}" for i in range(len(AUDIENCES))]
    assert calendar[0]["starts"] == "2026-12-01T18:00:00Z"
    assert calendar[0]["ends"] == "2026-12-01T20:00:00+01:00"  # as posted, with its zone
    people = ok(cli(capsys, node, "calendar", "--past")).out.splitlines()
    assert people[1].startswith("2026-12-01 ")  # in the reader's zone, with its label
    assert "Club A  Picket 0 (5 took part)  the depot" in people[1]


def test_rebuild_gives_identical_campaigns_and_calendar(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, filled: Filled
) -> None:
    node = copy_node(filled.root, tmp_path / "node")
    campaigns = ok(cli(capsys, node, "campaigns", "--json")).out
    calendar = ok(cli(capsys, node, "calendar", "--past", "--json")).out
    rebuilt = ok(cli(capsys, node, "rebuild", "--json")).json()
    actions = len(all_actions(capsys, node))
    assert rebuilt == {"items": len(json.loads(campaigns)) + actions}
    assert ok(cli(capsys, node, "campaigns", "--json")).out == campaigns
    assert ok(cli(capsys, node, "calendar", "--past", "--json")).out == calendar
    # A node that never folded anything rebuilds the same too.
    fresh = copy_node(filled.root, tmp_path / "fresh")
    ok(cli(capsys, fresh, "rebuild"))
    assert ok(cli(capsys, fresh, "campaigns", "--json")).out == campaigns
    assert ok(cli(capsys, fresh, "calendar", "--past", "--json")).out == calendar


# --- export and import ------------------------------------------------------------------


def test_export_then_import_into_a_second_node(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, filled: Filled, empty: Path
) -> None:
    source_events = all_events(capsys, filled.root)
    export = tmp_path / "club-a.jsonl"
    # --plain: JSON lines, for the test to read (sealed exports: tests/seized/).
    run = ok(cli(capsys, filled.root, "export", "--plain", "-o", str(export), "--json"))
    assert run.json() == {"events": len(source_events), "logs": 4, "encrypted": False}
    assert f"exported {len(source_events)} events in 4 logs to {export}" in run.err
    types = [json.loads(line)["type"] for line in export.read_bytes().splitlines()]
    assert types.count("club") == 1
    assert types.count("log") == 4
    assert types.count("event") == len(source_events)

    node = copy_node(empty, tmp_path / "b")
    first = ok(cli(capsys, node, "import", str(export), "--json")).json()
    assert first == {"added": len(source_events), "already": 0, "forks": 0, "lines": len(types)}
    second = ok(cli(capsys, node, "import", str(export), "--json")).json()
    assert second == {"added": 0, "already": len(source_events), "forks": 0, "lines": len(types)}
    assert ok(cli(capsys, node, "import", str(export))).out.splitlines() == [
        f"imported 0 new events ({len(source_events)} already held)"
    ]

    status = ok(cli(capsys, node, "status", "--json")).json()
    assert status["events"] == len(source_events)
    theirs = [lg for lg in status["logs"] if not lg["own"]]
    assert {lg["club"] for lg in theirs} == {filled.club}
    assert len(theirs) == 4
    imported = all_events(capsys, node, "--club", filled.club)
    key = ("id", "seq", "log", "payload", "payload_hash", "kind", "audience", "log_name")
    assert [{k: e[k] for k in key} for e in imported] == [
        {k: e[k] for k in key} for e in source_events
    ]
    verified = ok(cli(capsys, node, "verify", "--json")).json()
    assert verified["ok"]
    assert verified["clubs"] == 2
    assert verified["events"] == len(source_events)
    # The same signed events give the same campaigns and calendar on every node (the
    # club's name aside: a node names only the clubs it knows).
    for what in (["campaigns"], ["calendar"], ["calendar", "--past"]):
        here, there = (
            [i | {"club_name": None} for i in ok(cli(capsys, n, *what, "--json")).json()]
            for n in (node, filled.root)
        )
        assert here == there


def test_export_to_standard_output_by_log_and_audience(
    capsys: pytest.CaptureFixture[str], filled: Filled
) -> None:
    run = ok(cli(capsys, filled.root, "export", "--audience", "public"))
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert [line["type"] for line in lines] == ["club", "log"] + ["event"] * 5
    assert lines[1]["audience"] == "public"
    assert [line["seq"] for line in lines[2:]] == [1, 2, 3, 4, 5]
    by_name = ok(cli(capsys, filled.root, "export", "--log", "public"))
    assert by_name.out == run.out
    named = ok(
        cli(capsys, filled.root, "export", "--plain", "--audience", AUDIENCES[3])
    ).out.splitlines()
    assert json.loads(named[1])["audience"] == AUDIENCES[3]
    assert len(named) == 2 + len(KINDS)


def test_import_an_erased_event_keeps_it_erased(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, filled: Filled, empty: Path
) -> None:
    source = copy_node(filled.root, tmp_path / "a")
    note = filled.posted["note", "public"]
    ok(cli(capsys, source, "erase", note["id"]))
    export = tmp_path / "public.jsonl"
    ok(cli(capsys, source, "export", "--log", "public", "-o", str(export)))
    node = copy_node(empty, tmp_path / "b")
    # The note and the erasure event that erased it (§3.5): imported, it stays erased.
    assert ok(cli(capsys, node, "import", str(export), "--json")).json()["added"] == 6
    shown = ok(cli(capsys, node, "show", note["id"], "--json")).json()
    assert shown["erased"] is True
    assert ok(cli(capsys, node, "verify", "--json")).json()["erased"] == 1


# --- real processes ---------------------------------------------------------------------


def run_process(node: Path | None, *args: str, passphrase: str = PASSPHRASE) -> Run:
    env = {k: v for k, v in os.environ.items() if k != NODE_ENV}
    env[PASSPHRASE_ENV] = passphrase
    done = subprocess.run(
        [sys.executable, "-m", "federation", *node_args(node, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def test_exit_codes_of_a_real_process(tmp_path: Path, filled: Filled) -> None:
    node = copy_node(filled.root, tmp_path / "node")
    status = run_process(node, "status", "--json")
    assert status.code == 0
    assert status.err == ""
    assert status.json()["club"] == filled.club

    verify = run_process(node, "verify")
    assert verify.code == 0
    assert verify.out.startswith("verify ok:")

    posted = run_process(node, "post", "note", "--text", "from a process", "--json")
    assert posted.code == 0, posted.err
    assert posted.json()["seq"] == 5

    unknown = run_process(node, "post", "leaflet", "--text", "x")
    assert unknown.code == 2
    assert unknown.error_line.startswith("federation: error: unknown kind 'leaflet'")

    wrong = run_process(node, "post", "note", "--text", "x", passphrase="not the passphrase")
    assert wrong.code == 1
    assert "wrong passphrase" in wrong.error_line

    usage = run_process(None)
    assert usage.code == 2
    assert usage.error_line.startswith("federation: error: ")

    missing = run_process(tmp_path / "nowhere", "status")
    assert missing.code == 2
    assert "no node at" in missing.error_line
    assert "Traceback" not in missing.err


def test_init_with_a_passphrase_file_runs_unattended(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unattended server: the passphrase comes from a file, at init and afterwards."""
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    secret = tmp_path / "passphrase"
    secret.write_text("a passphrase kept in a file\n")
    secret.chmod(0o600)  # readable by others, it is refused (tests/store/test_encrypted.py)
    node = tmp_path / "node"
    ok(cli(capsys, node, "init", "--name", "Unattended", "--passphrase-file", str(secret)))
    assert 'passphrase = "file"' in (node / "config.toml").read_text()
    posted = ok(cli(capsys, node, "post", "note", "--text", "no prompt", "--json")).json()
    assert posted["payload"] == {"text": "no prompt"}
    secret.write_text("the wrong passphrase\n")
    refused = cli(capsys, node, "post", "note", "--text", "refused")
    assert refused.code == 1
    assert "wrong passphrase" in refused.err


def test_an_erased_payload_is_gone_from_the_store_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, filled: Filled
) -> None:
    """Erase overwrites the payload and checkpoints: its text is in no store file."""
    node = copy_node(filled.root, tmp_path / "node")
    secret = "a member's address, 14 Weir Court"
    posted = ok(cli(capsys, node, "post", "note", "--text", secret, "--json")).json()
    ok(cli(capsys, node, "erase", posted["id"]))
    # The store is encrypted, so look at what it holds for whoever has its key too (the
    # overwrite of freed pages, secure_delete, is shown on a plain store in
    # tests/store/test_encrypted.py).
    on_disk = readable_bytes(node)
    assert secret.encode() not in on_disk
    assert bytes.fromhex(posted["signed"]) in on_disk  # the signed header stays
