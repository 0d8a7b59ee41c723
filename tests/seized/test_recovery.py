"""The recovery secret kept off the node (protocol.md §2.1, node/recovery.py): words and
shares round trip, every mistake people make typing them is one clear error, `init`
stores nothing that can revoke the club's key, and `recovery move-off` takes an older
node's recovery.key off it."""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
from pathlib import Path

import pytest

from federation.core import canonical, crypto
from federation.core.canonical import Genesis
from federation.errors import UsageError
from federation.node import recovery
from federation.node.keyfile import PASSPHRASE_ENV, seal_key, write_private
from federation.node.node import Node, init_node
from tests.seized.support import CLUB_MARKER, PASSPHRASE, cli, ok

SEED = canonical.sha256(b"federation test: recovery seed")


@pytest.fixture(autouse=True)
def passphrase_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)


def genesis_for(seed: bytes) -> Genesis:
    recovery_key = crypto.SigningKey(seed)
    return Genesis(bytes(32), canonical.sha256(recovery_key.public), 0)


# --- words -------------------------------------------------------------------------------


def test_words_round_trip_and_name_the_genesis_recovery_key() -> None:
    text = recovery.words(SEED)
    assert len(text.split()) == 24
    key = recovery.signing_key_from_words(text)
    assert key.secret_bytes() == SEED
    recovery.check_recovery(key, genesis_for(SEED))
    # Case and extra spaces do not matter: people copy words from paper.
    messy = "  " + "   ".join(w.upper() for w in text.split()) + "\n"
    assert recovery.signing_key_from_words(messy).secret_bytes() == SEED


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda w: w[:-1], "the recovery words are 24 words; 23 were given"),
        (lambda w: [*w[:5], "zebraish", *w[6:]], "word 6 ('zebraish') is not a recovery word"),
        (lambda w: [w[1], w[0], *w[2:]], "fail their checksum"),
    ],
)
def test_a_mistyped_word_is_one_clear_error(mangle: object, expected: str) -> None:
    typed = recovery.words(SEED).split()
    changed = mangle(typed)  # type: ignore[operator]
    assert changed != typed
    with pytest.raises(UsageError) as error:
        recovery.signing_key_from_words(" ".join(changed))
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_words_of_another_club_are_refused() -> None:
    other = canonical.sha256(b"another club's recovery seed")
    key = recovery.signing_key_from_words(recovery.words(other))
    with pytest.raises(UsageError, match="these words are not this club's recovery secret"):
        recovery.check_recovery(key, genesis_for(SEED))
    with pytest.raises(UsageError, match="created without a recovery key"):
        recovery.check_recovery(key, Genesis(bytes(32), bytes(32), 0))


# --- shares ------------------------------------------------------------------------------


def test_any_k_of_n_shares_recover_the_seed() -> None:
    shares = recovery.split(SEED, 3, 5)
    assert len(shares) == 5
    assert len(set(shares)) == 5
    for chosen in itertools.combinations(shares, 3):
        assert recovery.signing_key_from_shares(list(chosen)).secret_bytes() == SEED
    # More than k is fine too (the first k are used), in any order.
    assert recovery.signing_key_from_shares(shares[::-1]).secret_bytes() == SEED
    # A new split of the same seed gives other shares: splits are random.
    assert set(recovery.split(SEED, 3, 5)).isdisjoint(shares)


def test_share_errors_each_say_what_to_do() -> None:
    shares = recovery.split(SEED, 3, 5)
    other_set = recovery.split(SEED, 3, 5)
    cases = [
        (shares[:2], "2 of the 3 shares needed: ask 1 more member to type theirs"),
        ([shares[0], shares[1], shares[0]], "share 3 is the same member's share as share 1"),
        ([shares[0], other_set[1], shares[2]], "these shares come from different sets"),
        ([], "no recovery shares given"),
    ]
    words = shares[1].split()
    words[7] = "zebraish"
    cases.append(([shares[0], " ".join(words), shares[2]], "share 2 is not a valid recovery share"))
    words = shares[1].split()
    words[7], words[8] = words[8], words[7]
    if words != shares[1].split():
        cases.append(([shares[0], " ".join(words)], "share 2 is not a valid recovery share"))
    for typed, expected in cases:
        with pytest.raises(UsageError) as error:
            recovery.signing_key_from_shares(typed)
        assert expected in str(error.value), (typed, str(error.value))


@pytest.mark.parametrize("text", ["1/3", "4/3", "3/17", "3", "a/b", "0/0"])
def test_a_threshold_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="K/N"):
        recovery.parse_threshold(text)


# --- init and move-off, through the CLI ---------------------------------------------------


def sheet_words(text: str, prefix: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith(prefix)]


async def club_genesis(root: Path) -> Genesis:
    async with await Node.open(root) as node:
        return node.genesis[node.club]


def test_init_shows_the_words_once_and_stores_nothing_that_revokes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = tmp_path / "node"
    run = ok(cli(capsys, node, "init", "--name", CLUB_MARKER, "--plain-http"))
    assert "write this down now: it is not stored on this machine" in run.err.lower()
    [text] = sheet_words(run.err, "recovery words: ")
    assert not (node / "recovery.key").exists()
    key = recovery.signing_key_from_words(text)
    recovery.check_recovery(key, asyncio.run(club_genesis(node)))
    # The seed is in no file of the node, in any form a seized disk could give away.
    seed = key.secret_bytes()
    for path in node.iterdir():
        data = path.read_bytes()
        assert seed not in data
        assert seed.hex().encode() not in data
        assert text.split()[0].encode() + b" " + text.split()[1].encode() not in data


def test_init_splits_shares_into_a_private_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node, out = tmp_path / "node", tmp_path / "recovery.txt"
    run = ok(
        cli(
            capsys,
            node,
            "init",
            "--name",
            "Club R",
            "--recovery-shares",
            "2/3",
            "--recovery-out",
            str(out),
        )
    )
    assert "move it off this machine" in run.out
    assert "recovery words" not in run.err
    assert "share 1" not in run.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    shares = sheet_words(out.read_text(), "share ")
    assert len(shares) == 3
    key = recovery.signing_key_from_shares(shares[1:])
    recovery.check_recovery(key, asyncio.run(club_genesis(node)))


def test_init_refuses_a_recovery_file_that_exists_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "recovery.txt"
    out.write_text("keep me")
    run = cli(capsys, tmp_path / "node", "init", "--name", "X", "--recovery-out", str(out))
    assert run.code == 2
    assert "already exists; choose another --recovery-out" in run.error_line
    assert not (tmp_path / "node").exists()
    assert out.read_text() == "keep me"


async def old_style_node(root: Path, seed: bytes) -> None:
    """A node made before recovery words: recovery.key beside club.key."""
    await init_node(
        root,
        name="Old Club",
        listen="127.0.0.1:0",
        passphrase=PASSPHRASE.encode(),
        plain_http=True,
        recovery_seed=seed,
    )
    async with await Node.open(root) as node:
        club = node.club
    write_private(
        root / "recovery.key", seal_key(crypto.SigningKey(seed), club, PASSPHRASE.encode())
    )


def test_move_off_shows_the_secret_then_deletes_recovery_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node, out = tmp_path / "node", tmp_path / "sheet.txt"
    asyncio.run(old_style_node(node, SEED))
    status = ok(cli(capsys, node, "status", "--json")).json()
    assert status["recovery_key_on_node"] is True
    assert "recovery move-off" in ok(cli(capsys, node, "status")).out

    # No terminal and no --yes: refused before anything is shown or deleted.
    refused = cli(capsys, node, "recovery", "move-off")
    assert refused.code == 2
    assert "give --yes" in refused.error_line
    assert (node / "recovery.key").exists()

    run = ok(
        cli(
            capsys,
            node,
            "recovery",
            "move-off",
            "--recovery-shares",
            "3/5",
            "--recovery-out",
            str(out),
        )
    )
    assert "deleted" in run.out
    assert not (node / "recovery.key").exists()
    shares = sheet_words(out.read_text(), "share ")
    assert recovery.signing_key_from_shares(shares[2:]).secret_bytes() == SEED
    assert ok(cli(capsys, node, "status", "--json")).json()["recovery_key_on_node"] is False

    again = cli(capsys, node, "recovery", "move-off", "--yes")
    assert again.code == 2
    assert "not on this node" in again.error_line


def test_move_off_refuses_a_recovery_key_that_is_not_the_clubs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    node = tmp_path / "node"
    asyncio.run(old_style_node(node, SEED))

    async def swap() -> None:
        async with await Node.open(node) as opened:
            club = opened.club
        os.unlink(node / "recovery.key")
        other = crypto.SigningKey(canonical.sha256(b"not the recovery key"))
        write_private(node / "recovery.key", seal_key(other, club, PASSPHRASE.encode()))

    asyncio.run(swap())
    before = (node / "recovery.key").read_bytes()
    run = cli(capsys, node, "recovery", "move-off", "--yes")
    assert run.code == 2
    assert "these words are not this club's recovery secret" in run.error_line
    assert (node / "recovery.key").read_bytes() == before
