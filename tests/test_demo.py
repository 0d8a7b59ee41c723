"""The demo: every spec in nodes/ decodes strictly, and `make demo` runs start to end.

The run is real: four `federation run` processes on free ports, peered as nodes/
says. What it shows is checked again here from the nodes' stores, independently of
its output: what was relayed, what was not, that nothing private left a node, and
that the joint campaign proposal is agreed on its three clubs and absent from the
fourth.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from federation import demo
from federation.demo import seizure
from federation.demo.walkthrough import DEMO_PASSPHRASE
from federation.errors import ConfigError, UsageError
from federation.node.keyfile import PASSPHRASE_ENV
from federation.views.agreement import check_record

SPECS = sorted(demo.NODES_DIR.glob("*.toml"))

MINIMAL = """
[club]
name = "Test Club"
listen = "127.0.0.1:8499"

[[post]]
kind = "note"
audience = "private"
text = "hello"
"""


def test_there_are_example_clubs() -> None:
    assert len(SPECS) >= 4
    specs = demo.load_specs()
    assert any(post.erase for spec in specs.values() for post in spec.posts)
    audiences = {post.audience for spec in specs.values() for post in spec.posts}
    assert audiences == {"private", "federation", "public"}
    # The sync scenes: Riverside relays between Northside and Harbour, which do not
    # federate with each other; Northside posts while the nodes run. The proposal
    # scene: Riverside proposes to Northside and Harbour; Millbrook, which federates
    # with all three, is not invited.
    assert demo.cast(specs, demo.FEATURED) == demo.Cast(
        hub="riverside", origin="northside", target="harbour", outsider="millbrook"
    )
    assert set(specs["riverside"].club.peers) == {"northside", "harbour", "millbrook"}
    assert "harbour" not in specs["northside"].club.peers
    assert set(specs["millbrook"].club.peers) == {"riverside", "northside", "harbour"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_spec_in_nodes_decodes(path: Path) -> None:
    spec = demo.load_spec(path)
    assert spec.club.name
    assert spec.posts
    assert path.read_text(encoding="utf-8").startswith("#"), "each spec opens with a comment"
    for post in spec.posts:
        assert demo.post_arguments(post)[:2] == ["post", type(post).__struct_config__.tag]


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ('[club]\ncolour = "red"\n', "$.club"),
        ("[[post]]\nkind = 'note'\naudience = 'private'\ntext = 'x'\nmember = 'Al'\n", "$.post"),
        ("[[post]]\nkind = 'note'\naudience = 'everyone'\ntext = 'x'\n", "$.post[1].audience"),
        ("[[post]]\nkind = 'poem'\naudience = 'private'\n", "$.post[1].kind"),
        (
            "[[post]]\nkind = 'action'\naudience = 'public'\nwhat = 'x'\n"
            "starts = 2026-12-01T18:00:00\n",
            "$.post[1].starts",
        ),
    ],
    ids=["unknown club field", "field of another kind", "audience", "kind", "time without zone"],
)
def test_a_spec_with_a_wrong_field_is_refused(tmp_path: Path, extra: str, where: str) -> None:
    path = tmp_path / "club.toml"
    text = MINIMAL.replace("[club]\n", extra, 1) if extra.startswith("[club]") else MINIMAL + extra
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"club\.toml: .*`" + re.escape(where)):
        demo.load_spec(path)


def with_peers(port: int, *peers: str) -> str:
    return MINIMAL.replace(
        'listen = "127.0.0.1:8499"', f'listen = "127.0.0.1:{port}"\npeers = {list(peers)!r}'
    )


def test_peers_name_other_specs(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(with_peers(8499, "b"), encoding="utf-8")
    with pytest.raises(ConfigError, match="peers names 'b'"):
        demo.load_specs(tmp_path)


def test_peering_is_mutual(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(with_peers(8498, "b"), encoding="utf-8")
    (tmp_path / "b.toml").write_text(with_peers(8499), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"b\.toml does not name 'a'"):
        demo.load_specs(tmp_path)
    (tmp_path / "b.toml").write_text(with_peers(8499, "a"), encoding="utf-8")
    assert set(demo.load_specs(tmp_path)) == {"a", "b"}


def test_a_post_is_not_both_live_and_erased(tmp_path: Path) -> None:
    path = tmp_path / "club.toml"
    path.write_text(MINIMAL + "live = true\nerase = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="both `live` and `erase`"):
        demo.load_spec(path)


def test_base_port_moves_every_club_alike() -> None:
    specs = demo.load_specs()
    assert demo.listen_addresses(specs, None) == {
        name: spec.club.listen for name, spec in specs.items()
    }
    moved = demo.listen_addresses(specs, 30000)
    assert moved == {
        "riverside": "127.0.0.1:30000",
        "northside": "127.0.0.1:30001",
        "harbour": "127.0.0.1:30002",
        "millbrook": "127.0.0.1:30003",
    }
    with pytest.raises(UsageError, match="--base-port 65535"):
        demo.listen_addresses(specs, 65535)


# --- one real run of the demo, shared by the tests below ---------------------------


def free_base_port(count: int = 5) -> int:
    """The first of `count` free consecutive ports, below the usual ephemeral range
    (where the nodes' own outgoing connections take ports). Not seeded: test runs in
    parallel must not all try the same ports."""
    pick = random.SystemRandom()
    for _ in range(100):
        base = pick.randrange(20000, 32000 - count)
        if all(demo.port_free("127.0.0.1", base + i) for i in range(count)):
            return base
    raise AssertionError("no free ports for the demo's nodes (and the feed)")


@dataclass
class DemoRun:
    root: Path
    base_port: int
    code: int
    out: str
    err: str
    clubs: dict[str, str]  # spec name -> club id

    def log(self, name: str, *args: str) -> list[dict[str, Any]]:
        """`federation log --json` on one node: what its store holds."""
        events: list[dict[str, Any]] = demo.query(
            "--node", str(self.root / name), "log", "--limit", "100000", *args, "--json"
        )
        return events

    def texts(self, name: str, club: str) -> set[str]:
        """Every text field of the payloads one node holds from one club."""
        return {
            value
            for e in self.log(name, "--club", self.clubs[club])
            for value in (e["payload"] or {}).values()
            if isinstance(value, str)
        }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    root = tmp_path_factory.mktemp("demo") / "demo-federation"
    base = free_base_port()
    out, err = io.StringIO(), io.StringIO()
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        mp.delenv(PASSPHRASE_ENV, raising=False)
        code = demo.main(["--dir", str(root), "--no-wait", "--base-port", str(base)])
        assert PASSPHRASE_ENV not in os.environ, "the demo restores the environment"
    # The stores are encrypted: reading one needs the demo clubs' passphrase.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PASSPHRASE_ENV, DEMO_PASSPHRASE)
        clubs = {}
        if code == 0:
            for name in demo.load_specs():
                clubs[name] = demo.query("--node", str(root / name), "status", "--json")["club"]
        yield DemoRun(root, base, code, out.getvalue(), err.getvalue(), clubs)


def test_the_demo_runs_every_step(run: DemoRun) -> None:
    assert run.code == 0, run.err
    out, node = run.out, demo.shown_path(run.root)
    for step in (
        f"$ federation --node {node}/riverside init",
        f'$ federation --node {node}/riverside peers add "$(federation --node {node}/northside '
        "invite)",
        f"$ federation --node {node}/riverside run 2> {node}/riverside/run.log &",
        f"$ federation --node {node}/northside post note --audience federation",
        f"$ federation --node {node}/harbour log --club {run.clubs['northside'][:12]} --kind note",
        f"$ federation --node {node}/riverside status",
        f"$ federation --node {node}/harbour peers list",
        f"$ federation --node {node}/riverside verify",
        f"$ federation --node {node}/harbour campaigns",
    ):
        assert step in out
    assert "fedinvite1:" in out
    assert "characters)" in out  # invites are shortened on screen
    assert "payload       [erased]" in out
    assert re.search(r"verify ok: \d+ events \(1 erased\) in \d+ logs of 4 clubs", out)
    assert "Done in" in out
    assert "Press Ctrl-C" not in out  # --no-wait


def test_the_demo_serves_the_public_feed(run: DemoRun) -> None:
    """Riverside's node serves the feed on the port after the clubs' and the demo reads
    it: public events of every club it holds, relayed ones included, nothing else."""
    assert run.code == 0, run.err
    feed = f"http://127.0.0.1:{run.base_port + 4}/"
    assert f"$ curl {feed}feed.json" in run.out
    shown = run.out.split("12. The public feed", 1)[1]
    specs = demo.load_specs()
    for spec in specs.values():
        for post in spec.posts:
            text = " ".join(str(getattr(post, "what", "") or getattr(post, "text", "")).split())
            line = f"{spec.club.name}: {text}"[:60]
            if post.audience == "public" and not post.erase:
                assert line in shown, line
            elif post.audience != "public" and text:
                assert text[:40] not in shown, text


def test_the_nodes_ran_and_are_stopped(run: DemoRun) -> None:
    assert run.code == 0, run.err
    for i, name in enumerate(("riverside", "northside", "harbour", "millbrook")):
        log = (run.root / name / demo.RUN_LOG).read_text(encoding="utf-8")
        assert f"serving on https://127.0.0.1:{run.base_port + i}" in log
        assert demo.port_free("127.0.0.1", run.base_port + i), "the demo stopped the node"
        assert "Traceback" not in log


def test_the_hub_receives_the_live_posts(run: DemoRun) -> None:
    live = [p for p in demo.load_specs()["northside"].posts if p.live]
    assert {p.audience for p in live} == {"public", "federation"}
    held = run.texts("riverside", "northside")
    for post in live:
        assert post.text in held


def test_a_relay_passes_on_public_events_only_where_the_roster_allows(run: DemoRun) -> None:
    specs = demo.load_specs()
    live = [p for p in specs["northside"].posts if p.live]
    public = [p for p in live if p.audience == "public"]
    federation = [p for p in live if p.audience == "federation"]
    assert public
    assert federation
    # Harbour federates with Riverside only: it gets Northside's public events through
    # Riverside, and none of Northside's federation logs (its roster names Riverside).
    # (Its proposal log, addressed to Harbour by name, is the proposal test's concern.)
    at_harbour = [
        e
        for e in run.log("harbour", "--club", run.clubs["northside"])
        if not e["audience"].startswith("clubs:")
    ]
    assert {e["audience"] for e in at_harbour} == {"public"}
    assert {e["payload"]["what"] for e in at_harbour if e["kind"] == "action"} >= {
        p.what for p in public if isinstance(p, demo.ActionPost)
    }
    # (The one public note is Northside's, after the seized laptop scene.)
    notes = [e["payload"]["text"] for e in at_harbour if e["kind"] == "note"]
    assert notes == [seizure.BACK_TEXT]
    # The other way round too: Northside gets Harbour's public events, not its roster.
    at_northside = [
        e
        for e in run.log("northside", "--club", run.clubs["harbour"])
        if not e["audience"].startswith("clubs:")
    ]
    assert at_northside
    assert {e["audience"] for e in at_northside} == {"public"}
    # And Riverside, a peer of both, gets the federation logs of each.
    for origin in ("northside", "harbour"):
        logs = {e["log_name"] for e in run.log("riverside", "--club", run.clubs[origin])}
        assert "roster" in logs


def test_no_private_event_left_its_club(run: DemoRun) -> None:
    for name, club in run.clubs.items():
        events = run.log(name)
        assert all(e["club"] == club for e in events if e["audience"] == "private")
        assert all(e["club"] == club for e in events if e["kind"] == "report")
        for other in run.clubs:
            if other != name:
                assert not [e for e in run.log(other, "--club", club) if e["audience"] == "private"]


def test_the_marked_report_is_erased(run: DemoRun) -> None:
    events = run.log("riverside", "--club", run.clubs["riverside"])
    erased = [(e["log_name"], e["kind"]) for e in events if e["erased"]]
    assert erased == [("private", "report")]
    audiences = {e["audience"] for e in events}
    assert {a for a in audiences if not a.startswith("clubs:")} == {
        "private",
        "federation",
        "public",
    }


def test_the_proposal_is_agreed_on_its_three_clubs(run: DemoRun) -> None:
    """Riverside proposes, Northside amends, both invited clubs accept the amended
    version and Riverside too: every one of the three nodes computes the same outcome,
    and the exported agreement record verifies offline."""
    assert run.code == 0, run.err
    story, node = demo.STORY, demo.shown_path(run.root)
    for step in (
        f"$ federation --node {node}/riverside proposal new --title",
        f"$ federation --node {node}/northside proposal amend",
        f"$ federation --node {node}/harbour proposal accept",
        f"$ federation --node {node}/riverside proposal show",
        f"$ federation --node {node}/riverside proposal export",
        f"$ federation proposal verify {node}/{demo.AGREEMENT_FILE}",
        f"agreement verified: {story.amended_title}",
        f"$ federation --node {node}/millbrook proposal list\n    no proposals",
    ):
        assert step in run.out, step
    committed = {
        run.clubs["northside"]: story.origin_commits,
        run.clubs["harbour"]: story.target_commits,
        run.clubs["riverside"]: story.hub_commits,
    }
    seen = []
    for name in ("riverside", "northside", "harbour"):
        (outcome,) = demo.query("--node", str(run.root / name), "proposal", "list", "--json")
        assert outcome["state"] == "agreed", name
        assert outcome["proposer"] == run.clubs["riverside"]
        assert sorted(outcome["invited"]) == sorted(run.clubs[n] for n in ("northside", "harbour"))
        assert outcome["rule"] == "all"
        version = outcome["version"]
        assert len(outcome["versions"]) == 2
        assert version["id"] == outcome["versions"][1] != outcome["proposal"]
        assert (version["title"], version["author"]) == (
            story.amended_title,
            run.clubs["northside"],
        )
        assert version["actions"][0]["where"] == story.place
        assert {c: a["text"] for c, a in outcome["accepted"].items()} == committed
        seen.append((outcome["proposal"], version["id"], outcome["agreed_us"]))
    assert len(set(seen)) == 1, "the three nodes compute the same outcome"
    record = check_record((run.root / demo.AGREEMENT_FILE).read_bytes())
    assert (record.proposal, record.version.id) == seen[0][:2]
    assert {c: a.text for c, a in record.accepted.items()} == committed


def test_the_fourth_club_never_sees_the_proposal(run: DemoRun) -> None:
    """Millbrook federates with all three but is not invited: no proposal, no `clubs`
    log, and not one byte of the proposal's text or ids anywhere in its node
    directory (store, run log, the demo's export of it), while its partners'
    federation events reach it."""
    assert run.code == 0, run.err
    outsider = run.root / "millbrook"
    assert demo.query("--node", str(outsider), "proposal", "list", "--json") == []
    status = demo.query("--node", str(outsider), "status", "--json")
    assert not [r for r in status["logs"] if r["audience"].startswith("clubs:")]
    (outcome,) = demo.query("--node", str(run.root / "riverside"), "proposal", "list", "--json")
    secrets = [*demo.STORY.texts(), outcome["proposal"], *outcome["versions"]]
    files = [p for p in outsider.rglob("*") if p.is_file()]
    files.append(run.root / demo.OUTSIDER_EXPORT.format(name="millbrook"))
    assert any(p.name.startswith("store.sqlite") for p in files)
    for path in files:
        held = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in held, (path.name, secret)
    # The positive control: what its partners share with the federation reaches it.
    assert "Winter rent freeze" in {
        e["payload"].get("title") for e in run.log("millbrook", "--club", run.clubs["riverside"])
    }
    live = [p for p in demo.load_specs()["northside"].posts if p.live]
    assert {p.text for p in live} <= run.texts("millbrook", "northside")


def test_a_busy_port_stops_the_demo_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = free_base_port()
    root = tmp_path / "demo-federation"
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", base + 1))
        busy.listen()
        assert demo.main(["--dir", str(root), "--no-wait", "--base-port", str(base)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"port {base + 1} " in line
    assert "already in use" in line
    assert "--base-port" in line
    assert not root.exists(), "nothing is made when a port is taken"


def test_a_rerun_replaces_the_demo_but_keep_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "demo-federation"
    demo.prepare(root, keep=False)
    (root / "riverside").mkdir()
    demo.prepare(root, keep=False)
    assert sorted(p.name for p in root.iterdir()) == [demo.MARKER]
    with pytest.raises(UsageError, match="without --keep"):
        demo.prepare(root, keep=True)
    assert demo.main(["--dir", str(root), "--keep", "--base-port", str(free_base_port())]) == 1
    assert "make clean" in capsys.readouterr().err


def test_the_demo_deletes_only_what_a_demo_made(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(UsageError, match="not made by the demo"):
        demo.prepare(mine, keep=False)
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_a_seized_key_is_revoked_and_every_peer_follows_the_new_one(run: DemoRun) -> None:
    """Northside's node directory is copied (passphrase and all) to a rogue node that
    posts as the club; Riverside takes the post and relays it to Harbour. Northside
    restores its backup, revokes the seized key with three of its five members' shares,
    and carries on: every peer holds the rogue's post apart, never as the club's, and
    takes the club's next post under its new key."""
    assert run.code == 0, run.err
    node = demo.shown_path(run.root)
    restored, rogue = f"{node}/northside-new", f"{node}/rogue-northside"
    shown = run.out.split("13. A seized laptop", 1)[1]
    sheet = f"{node}/northside-recovery-shares.txt"
    # Every step, in order, each a command a user can paste (README: "prints every
    # command it runs"): stopping a node, the copy and the node runs included.
    at = 0
    for step in (
        f"$ federation --node {node}/northside backup -o {node}/northside.backup",
        f"$ kill $(cut -d ' ' -f 1 {node}/northside/run.lock)",
        f"$ cp -a {node}/northside {rogue}",
        f"$ federation --node {rogue} run 2> {rogue}/run.log &",
        f"$ federation --node {rogue} post note --audience public",
        f"$ kill $(cut -d ' ' -f 1 {rogue}/run.lock)",
        f"$ federation restore {node}/northside.backup {restored}",
        f"$ (umask 077; sed -n 's/^share 1 of 5[^:]*: //p' {sheet} > "
        f"{node}/northside-member-1-share.txt)",
        f"$ federation --node {restored} key revoke --share {node}/northside-member-1-share.txt "
        f"--share {node}/northside-member-2-share.txt --share {node}/northside-member-3-share.txt",
        f"$ federation --node {restored} declare-no-copies private",
        f"$ federation --node {restored} run 2> {restored}/run.log &",
        f"$ federation --node {restored} post note --audience public",
        f'$ federation --node {node}/riverside sync "Northside Workers\' Club"',
        f"$ federation --node {node}/riverside status",
    ):
        found = shown.find(step, at)
        assert found >= 0, (step, shown[at:])
        at = found + len(step)
    # The last status shows Riverside in step with Northside's new node: no error left
    # over from while no node ran at its address (the positive control: its row).
    last = shown[at:].split("=== Done", 1)[0]
    assert re.search(r"Northside Workers' Club +active", last), last
    assert "last error" not in last
    assert "unreachable" not in last
    # The rogue's post reached the peers before the revocation (positive control).
    before = run.out.split("A seized laptop", 1)[1].split("restores its backup", 1)[0]
    assert seizure.ROGUE_TEXT[:40] in before
    for name in ("riverside", "harbour", "millbrook"):
        held = run.texts(name, "northside")
        assert seizure.ROGUE_TEXT not in held, name
        assert seizure.BACK_TEXT in held, name
        events = run.log(name, "--club", run.clubs["northside"], "--log", "public")
        back = [e for e in events if (e["payload"] or {}).get("text") == seizure.BACK_TEXT]
        assert len(back) == 1, name
        # The events up to the cut keep the seized key's signatures; the new post has the
        # club's new key.
        assert {e["key"] for e in events if e["seq"] < back[0]["seq"]} != {back[0]["key"]}
        apart = demo.query("--node", str(run.root / name), "status", "--json")["held_apart"]
        assert apart, name
    status = demo.query("--node", str(run.root / "northside-new"), "status", "--json")
    assert status["club"] == run.clubs["northside"]
    # No recovery secret was left on any node: the shares are the demo's, beside the nodes.
    for name in ("riverside", "northside", "harbour", "millbrook", "northside-new"):
        assert not (run.root / name / "recovery.key").exists()


def test_the_demo_prints_every_command_it_runs(run: DemoRun) -> None:
    """README: the demo "prints every command it runs, so you can repeat them". Every
    file and node directory the demo made is named by a printed command, every node it
    ran was started by a printed `run`, and the shell commands it printed do what the
    demo did: run in a shell, they make the same files."""
    assert run.code == 0, run.err
    node = demo.shown_path(run.root)
    typed = [line for line in run.out.splitlines() if line.startswith("$ ")]
    made = sorted(p.name for p in run.root.iterdir() if p.name != demo.MARKER)
    assert {"northside-new", "rogue-northside", "northside-member-1-share.txt"} <= set(made)
    for name in made:
        assert any(re.search(rf"{re.escape(f'{node}/{name}')}(\s|/|\)|$)", t) for t in typed), name
    ran = sorted(p.parent.name for p in run.root.glob(f"*/{demo.RUN_LOG}"))
    clubs = ["harbour", "millbrook", "northside", "riverside"]
    assert ran == sorted([*clubs, "northside-new", "rogue-northside"])
    for name in ran:
        assert f"$ federation --node {node}/{name} run 2> {node}/{name}/{demo.RUN_LOG} &" in typed
    # The members' share files: the printed `sed` lines, in a real shell, make them again.
    sed = [t[2:] for t in typed if t.startswith("$ (umask 077; sed ")]
    assert len(sed) == 3
    for i, line in enumerate(sed, start=1):
        path = run.root / f"northside-member-{i}-share.txt"
        before = path.read_bytes()
        assert len(before.split()) >= 20, "a share is words (positive control)"
        path.unlink()
        subprocess.run(["sh", "-c", line], check=True, timeout=10)
        assert path.read_bytes() == before
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
