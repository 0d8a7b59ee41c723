"""What a new user found walking through the CLI, each through the real CLI on real node
directories: an abbreviated option run as another, a misspelt command without a
suggestion, an unknown option pointed at the wrong --help, an export warning that
counted one thing and named another, a passphrase file's exit code the README did not
say, and a peer's error naming the club's own keys log by ids."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from federation.cli import runlog
from federation.cli.main import COMMANDS, _parser
from federation.cli.names import known_labels, name_places
from federation.demo import main as demo_main
from federation.errors import ConfigError, InvalidEventError, KeyFileError, UsageError
from federation.node.keyfile import PASSPHRASE_ENV
from federation.node.node import Node
from tests.seized.support import PASSPHRASE, Run, cli, free_port, ok, tree

CLUB = "Polish Tenants"
PEER = "Polish Peer Club"
REVOKED = "replaced by the club's revocation at this seq of its keys log"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    monkeypatch.delenv("FEDERATION_NODE", raising=False)


def new_club(capsys: pytest.CaptureFixture[str], root: Path, name: str = CLUB) -> Path:
    listen = f"127.0.0.1:{free_port()}"
    ok(cli(capsys, root, "init", "--name", name, "--plain-http", "--listen", listen))
    return root


def refused(run: Run, code: int, line: str) -> None:
    """Exactly this one line on stderr, nothing on stdout, and the exit code."""
    assert (run.code, run.out) == (code, ""), (run.code, run.err)
    assert run.error_line == f"federation: error: {line}"


# --- 1. no abbreviated options; an unknown one points at the right --help ---------------


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in dict.fromkeys(action.choices.values()):
                yield from _parsers(nested)


def test_no_parser_takes_an_abbreviated_option() -> None:
    seen = 0
    for name in COMMANDS:  # each command's parser is built in full only when chosen
        for parser in _parsers(_parser([name])):
            assert parser.allow_abbrev is False, parser.prog
            seen += 1
    assert seen > len(COMMANDS)  # the actions' parsers (key rotate, peers list...) too


def test_an_abbreviated_option_is_refused_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: `--nod b` ran as `--node b`."""
    club = new_club(capsys, tmp_path / "club")
    before = tree(club)
    refused(
        cli(capsys, None, "--nod", str(club), "status"),
        2,
        "unrecognized arguments: --nod; did you mean `--node`? (see `federation --help`)",
    )
    refused(
        cli(capsys, None, "status", "--nod", str(club)),
        2,
        f"unrecognized arguments: --nod {club}; did you mean `--node`? "
        "(see `federation status --help`)",
    )
    refused(
        cli(capsys, club, "post", "note", "--tex", "x"),
        2,
        "unrecognized arguments: --tex x; did you mean `--text`? (see `federation post --help`)",
    )
    assert tree(club) == before
    # The control: the whole option, before or after the command.
    assert ok(cli(capsys, None, "--node", str(club), "status", "--json")).json()["name"] == CLUB
    assert ok(cli(capsys, None, "status", "--node", str(club), "--json")).json()["name"] == CLUB


def test_an_unknown_option_points_at_the_help_of_what_it_was_given_to(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: `post note --txt` pointed at `federation --help`."""
    club = new_club(capsys, tmp_path / "club")
    before = tree(club)
    refused(
        cli(capsys, club, "post", "note", "--txt", "x"),
        2,
        "unrecognized arguments: --txt x; did you mean `--text`? (see `federation post --help`)",
    )
    refused(
        cli(capsys, club, "key", "rotate", "--bogus"),
        2,
        "unrecognized arguments: --bogus (see `federation key rotate --help`)",
    )
    refused(
        cli(capsys, club, "peers", "list", "--bogus"),
        2,
        "unrecognized arguments: --bogus (see `federation peers list --help`)",
    )
    refused(
        cli(capsys, club, "status", "extra"),
        2,
        "unrecognized arguments: extra (see `federation status --help`)",
    )
    # A command's option given before the command says where it goes.
    run = cli(capsys, club, "--json", "status")
    assert run.code == 2
    assert json.loads(run.err) == {
        "error": "--json goes after the command, not before it (see `federation status --help`)",
        "code": 2,
    }
    assert tree(club) == before


def test_the_demo_takes_no_abbreviated_option(capsys: pytest.CaptureFixture[str]) -> None:
    """`--node` (this CLI's option) must not run the demo as `--nodes`."""
    with pytest.raises(SystemExit) as exit:
        demo_main(["--node", "somewhere"])
    assert exit.value.code == 2
    assert "unrecognized arguments: --node somewhere" in capsys.readouterr().err


# --- 2. a misspelt command or action --------------------------------------------------


def test_a_misspelt_command_or_action_names_the_close_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    refused(
        cli(capsys, None, "stauts"),
        2,
        "argument COMMAND: invalid choice: 'stauts'; did you mean `status`? "
        "(see `federation --help`)",
    )
    refused(
        cli(capsys, None, "key", "rotat"),
        2,
        "argument ACTION: invalid choice: 'rotat'; did you mean `rotate`? "
        "(see `federation key --help`)",
    )
    # Nothing close: the list, still one line.
    run = cli(capsys, None, "xyzzy")
    assert run.code == 2
    assert "invalid choice: 'xyzzy' (choose from 'init', 'post'," in run.error_line
    assert "did you mean" not in run.error_line
    assert list(tmp_path.iterdir()) == []


# --- 3. export --plain: count and names agree; plurals -----------------------------------


def test_export_plain_counts_the_logs_it_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: "writing 5 non-public log(s) (federation, private, roster)": five logs of
    two clubs, three names. Each log is named under its club now."""
    club = new_club(capsys, tmp_path / "club")
    other = new_club(capsys, tmp_path / "other", PEER)
    for node in (club, other):
        ok(cli(capsys, node, "post", "note", "--audience", "federation", "--text", "hi"))
    ok(cli(capsys, other, "export", "--plain", "-o", str(tmp_path / "other.jsonl")))
    ok(cli(capsys, club, "import", str(tmp_path / "other.jsonl")))
    logs = ok(cli(capsys, club, "status", "--json")).json()["logs"]
    hidden = [log for log in logs if log["audience"] != "public"]
    assert len({log["name"] for log in hidden}) < len(hidden)  # names shared by two clubs

    run = ok(cli(capsys, club, "export", "--plain", "-o", str(tmp_path / "all.jsonl")))
    warning = " ".join(run.err.split())
    found = re.search(r"writing (\d+) non-public logs \((.*)\) UNENCRYPTED", warning)
    assert found, warning
    named = [n for part in found[2].split("; ") for n in part.split(": ", 1)[1].split(", ")]
    assert int(found[1]) == len(named) == len(hidden)
    assert f"{CLUB}: " in found[2]
    assert "log(s)" not in run.err

    # One event in one log: the singular.
    ok(cli(capsys, club, "post", "note", "--log", "solo", "--text", "one"))
    one = ok(cli(capsys, club, "export", "--log", "solo", "--plain", "-o", str(tmp_path / "1")))
    assert "exported 1 event in 1 log to " in one.err
    assert "writing 1 non-public log (" in " ".join(one.err.split())


# --- 4. a passphrase file others can read: the exit code the README says -----------------


def _exit_code_rows() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("Exit codes:") :]
    return dict(re.findall(r"^\| (\d+) \| (.*) \|$", table[: table.index("\n\n", 20)], re.M))


def test_a_passphrase_file_others_can_read_exits_as_the_readme_says(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found: exit 1, while the README's table said "2: a usage or config error". A key
    or passphrase file is an operational failure (exit 1, KeyFileError), as a wrong
    passphrase is; exit 2 is a bad argument or a malformed config.toml."""
    rows = _exit_code_rows()
    assert "passphrase file" in rows["1"]
    assert "wrong passphrase" in rows["1"]
    assert "passphrase" not in rows["2"]
    assert "config.toml" in rows["2"]
    assert (KeyFileError.exit_code, UsageError.exit_code, ConfigError.exit_code) == (1, 2, 2)

    monkeypatch.delenv(PASSPHRASE_ENV)
    secret = tmp_path / "passphrase"
    secret.write_text("the passphrase of this node\n")
    secret.chmod(0o600)
    listen = f"127.0.0.1:{free_port()}"
    club = tmp_path / "club"
    init = ("init", "--name", CLUB, "--plain-http", "--listen", listen)
    ok(cli(capsys, club, *init, "--passphrase-file", str(secret)))
    ok(cli(capsys, club, "status"))  # the control
    os.chmod(secret, 0o644)
    before = tree(club)
    refused(
        cli(capsys, club, "status"),
        1,
        f"passphrase file {secret} is readable by others: chmod 600 {secret}",
    )
    assert tree(club) == before


# --- 5. a peer's error names the club's logs as listings do -----------------------------


async def _keys_log(root: Path) -> tuple[bytes, bytes]:
    """The club and its keys log, as the node holds them."""
    async with await Node.open(root) as node:
        logs = {r.name: r for r in await node.store.logs()}
        return node.club, logs["keys"].id


def test_a_peer_error_names_the_club_and_log_in_status_and_peers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found: after `key revoke`, a restored node's sync logged "club 84e22dbae935f578 log
    61be8c7610779467 seq 1: replaced by the club's revocation..." of its own keys log."""
    club = new_club(capsys, tmp_path / "club")
    peer = new_club(capsys, tmp_path / "peer", PEER)
    ok(cli(capsys, club, "key", "rotate"))  # the keys log, with seq 1
    ok(
        cli(
            capsys, club, "peers", "add", ok(cli(capsys, peer, "invite", "--json")).json()["invite"]
        )
    )
    club_id, keys_log = asyncio.run(_keys_log(club))
    error = InvalidEventError(REVOKED, club=club_id, log=keys_log, seq=1)
    unknown = InvalidEventError("what it says", club=bytes(32), log=bytes(range(32)), seq=3)
    raw = f"{error}; {unknown}"
    assert raw.startswith(f"club {club_id.hex()[:16]} log {keys_log.hex()[:16]} seq 1: ")

    async def fail_last_round() -> None:
        async with await Node.open(club) as node:
            (record,) = await node.store.peers()
            status = msgspec.structs.replace(
                record.status, last_error=raw, last_error_us=node.clock() + 1
            )
            await node.store.set_peer_status(record.club, status)

    asyncio.run(fail_last_round())
    for args in (("status",), ("peers",)):
        shown = " ".join(ok(cli(capsys, club, *args)).out.split())  # unwrapped
        assert "last error (" in shown
        assert f"): {CLUB} keys#1: {REVOKED}; {unknown}" in shown, shown
        assert keys_log.hex()[:16] not in shown
    # JSON keeps the ids.
    (listed,) = ok(cli(capsys, club, "peers", "--json")).json()
    assert listed["last_error"] == raw


def test_name_places_names_what_the_node_knows_and_keeps_the_rest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    club = new_club(capsys, tmp_path / "club")
    ok(cli(capsys, club, "key", "rotate"))
    ok(cli(capsys, club, "post", "note", "--text", "x"))

    async def names() -> None:
        async with await Node.open(club) as node:
            known = await known_labels(node)
            logs = {r.id: r for r in await node.store.logs()}
            keys = next(r for r in logs.values() if r.name == "keys")
            private = next(r for r in logs.values() if r.name == "private")
            cases = {
                InvalidEventError(REVOKED, club=node.club, log=keys.id, seq=1): (
                    f"{CLUB} keys#1: {REVOKED}"
                ),
                InvalidEventError("frozen", log=private.id): f"{CLUB} private: frozen",
                InvalidEventError("bad genesis", club=node.club): f"{CLUB}: bad genesis",
                # A log this node does not hold, of a club it knows: the club named.
                InvalidEventError("gap", club=node.club, log=bytes(32), seq=2): (
                    f"{CLUB} log {bytes(32).hex()[:16]} seq 2: gap"
                ),
            }
            for error, shown in cases.items():
                assert name_places(str(error), known, logs) == shown
            # Neither known: as it was; nor is other text touched.
            for text in (
                str(InvalidEventError("x", club=bytes(range(32)), log=bytes(32), seq=1)),
                "peer Beta: unreachable (club of a log here)",
            ):
                assert name_places(text, known, logs) == text

            # `run` writes its log through the same naming (cli/runlog.py `rewriting`).
            stream = io.StringIO()
            root = logging.getLogger()
            ours = logging.getLogger(runlog.ROOT_LOGGER)
            saved = (list(root.handlers), root.level, ours.level)
            try:
                runlog.configure("info", stream=stream)
                follow = logging.getLogger("federation.node.follow")
                error = InvalidEventError(REVOKED, club=node.club, log=keys.id, seq=1)
                line = f"peer {PEER}: {error}"
                with runlog.rewriting(lambda text: name_places(text, known, logs)):
                    follow.warning("%s", line)
                follow.warning("%s", line)  # the control: outside, the ids
            finally:
                for handler in list(root.handlers):
                    root.removeHandler(handler)
                for handler in saved[0]:
                    root.addHandler(handler)
                root.setLevel(saved[1])
                ours.setLevel(saved[2])
            named, raw = stream.getvalue().splitlines()
            assert named.endswith(f"WARNING peer {PEER}: {CLUB} keys#1: {REVOKED}")
            assert raw.endswith(f"WARNING {line}")
            assert keys.id.hex()[:16] in line

    asyncio.run(names())
