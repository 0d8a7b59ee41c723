"""The demo: every spec in nodes/ decodes strictly, and `make demo` runs start to end."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from federation import cli, demo
from federation.errors import ConfigError, UsageError
from federation.keyfile import PASSPHRASE_ENV

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
    assert len(SPECS) >= 3
    specs = demo.load_specs()
    assert any(post.erase for spec in specs.values() for post in spec.posts)
    audiences = {post.audience for spec in specs.values() for post in spec.posts}
    assert audiences == {"private", "federation", "public"}


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


def test_peers_name_other_specs(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        MINIMAL.replace('listen = "127.0.0.1:8499"', 'listen = "127.0.0.1:8499"\npeers = ["b"]'),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="peers names 'b'"):
        demo.load_specs(tmp_path)


def test_the_demo_runs_and_erases_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    root = tmp_path / "demo-federation"
    assert demo.main(["--dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert PASSPHRASE_ENV not in os.environ, "the demo restores the environment"
    assert f"$ federation --node {demo.shown_path(root)}/riverside verify" in out
    assert "payload       [erased]" in out
    assert re.search(r"verify ok: \d+ events \(1 erased\)", out)

    # Independently of the demo's output: exactly the marked report is erased.
    assert cli.main(["--node", str(root / "riverside"), "log", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    erased = [(e["log_name"], e["kind"]) for e in events if e["erased"]]
    assert erased == [("private", "report")]
    assert {e["audience"] for e in events} == {"private", "federation", "public"}


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
    assert demo.main(["--dir", str(root), "--keep"]) == 1
    assert "make clean" in capsys.readouterr().err


def test_the_demo_deletes_only_what_a_demo_made(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(UsageError, match="not made by the demo"):
        demo.prepare(mine, keep=False)
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep me"
