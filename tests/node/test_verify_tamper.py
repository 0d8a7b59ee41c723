"""Any flipped byte in a stored event is found by `federation verify`, and named.

The store file is changed with SQLCipher directly, as a person with the disk and the
key file (or a failing disk) could: a byte of an event's `signed` header or of its `payload`. The
audit must exit 1 and name the club, log and seq of the altered event.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.core import canonical
from federation.store.schema import MAX_SEQ, SEQ_BITS
from tests.cli.test_cli import cli, cli_quiet, ok
from tests.cli.test_cli import passphrase_env as passphrase_env  # the same autouse fixture
from tests.store_access import connect_node_store


@dataclass(frozen=True)
class Stored:
    """One stored event row: where it is and what it holds."""

    k: int
    club: str
    log: str
    seq: int
    signed: bytes
    payload: bytes | None


@dataclass(frozen=True)
class Base:
    root: Path
    events: list[Stored]


def stored_events(db: Path) -> list[Stored]:
    with contextlib.closing(connect_node_store(db.parent)) as conn:
        logs = {n: bytes(d) for n, d in conn.execute("SELECT n, descriptor FROM log")}
        rows = conn.execute("SELECT k, signed, payload FROM event ORDER BY k").fetchall()
    out = []
    for k, signed, payload in rows:
        descriptor = logs[k >> SEQ_BITS]
        club = canonical.decode_log(descriptor).club.hex()
        log = canonical.log_id(descriptor).hex()
        out.append(Stored(k, club, log, k & MAX_SEQ, bytes(signed), payload))
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """A node with events in three logs, one of them erased."""
    root = tmp_path_factory.mktemp("base") / "node"
    # No passphrase: each of the many `verify` runs below would otherwise pay scrypt
    # to open the store (the store is encrypted either way; its key is in club.key).
    ok(cli_quiet(root, "init", "--name", "Club A", "--no-passphrase"))
    for i in range(4):
        ok(cli_quiet(root, "post", "note", "--audience", "federation", "--text", f"note {i}"))
    for i in range(3):
        args = ["--what", f"Picket {i}", "--starts", f"2026-12-0{i + 1}T18:00+00:00"]
        ok(cli_quiet(root, "post", "action", "--audience", "public", *args))
    args = ["--member", "ana", "--period", "2026-11", "--text", "leafleted"]
    erased = ok(cli_quiet(root, "post", "report", *args, "--json")).json()["id"]
    ok(cli_quiet(root, "post", "report", *args))
    ok(cli_quiet(root, "erase", erased))  # and its erasure event (protocol.md §3.5)
    assert ok(cli_quiet(root, "verify")).out.startswith("verify ok: 10 events (1 erased)")
    return Base(root, stored_events(root / "store.sqlite"))


def tamper(db: Path, row: Stored, column: str, at: int, mask: int) -> None:
    value = bytearray(row.signed if column == "signed" else row.payload or b"")
    value[at % len(value)] ^= mask
    with contextlib.closing(connect_node_store(db.parent)) as conn, conn:
        conn.execute(f"UPDATE event SET {column} = ? WHERE k = ?", (bytes(value), row.k))


@settings(max_examples=40, deadline=None)
@given(
    index=st.integers(0, 8),
    column=st.sampled_from(["signed", "payload"]),
    at=st.integers(0, 2**16),
    mask=st.integers(1, 255),
)
def test_any_flipped_byte_is_found_and_named(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    base: Base,
    index: int,
    column: str,
    at: int,
    mask: int,
) -> None:
    rows = base.events if column == "signed" else [r for r in base.events if r.payload]
    row = rows[index % len(rows)]
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        node = Path(d) / "node"
        shutil.copytree(base.root, node)
        tamper(node / "store.sqlite", row, column, at, mask)

        run = cli(capsys, node, "verify")
        assert run.code == 1, run.out
        where = f"club {row.club[:12]} log {row.log[:12]} seq {row.seq}: "
        problems = [line for line in run.out.splitlines() if line.startswith("club ")]
        assert len(problems) == 1, run.out
        assert problems[0].startswith(where), run.out
        assert run.out.splitlines()[-1].startswith("verify FAILED: 1 problem: ")

        report = cli(capsys, node, "verify", "--json")
        assert report.code == 1
        data = report.json()
        assert data["ok"] is False
        ((problem),) = data["problems"]
        assert (problem["club"], problem["log"], problem["seq"]) == (row.club, row.log, row.seq)
        assert problem["reason"]


def test_an_untouched_copy_verifies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, base: Base
) -> None:
    node = tmp_path / "node"
    shutil.copytree(base.root, node)
    assert ok(cli(capsys, node, "verify", "--json")).json()["ok"] is True
