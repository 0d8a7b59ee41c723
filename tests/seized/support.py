"""Helpers for the seized-laptop tests: the real CLI in this process, on real node
directories, with the passphrase from the environment (nothing prompts)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyrage
import pytest

from federation.cli.main import main
from federation.node.keyfile import PASSPHRASE_ENV
from tests.cli.test_cli import Run as Run  # one record of a CLI run
from tests.harness import free_port as free_port

PASSPHRASE = "correct horse battery"
# Markers planted in what a node holds; none may appear in the clear in a backup or an
# encrypted export (tests grep the bytes, with a positive control).
PAYLOAD_MARKER = "MARKER-payload-ana-leafleted-the-estate"
LOG_MARKER = "marker-log-reading-group"
CLUB_MARKER = "Marker Tenants Club"
PEER_MARKER = "Marker Peer Club"


def cli(capsys: pytest.CaptureFixture[str], node: Path | None, *args: str) -> Run:
    """`federation [--node NODE] ARGS...` in this process."""
    capsys.readouterr()
    argv: Sequence[str] = (["--node", str(node)] if node is not None else []) + list(args)
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Run(code, out, err)


def ok(run: Run) -> Run:
    assert run.code == 0, f"exit {run.code}: {run.err}"
    return run


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` (names relative) with its bytes: "nothing was written"."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@contextlib.contextmanager
def cli_environment() -> Iterator[None]:
    """The passphrase in the environment and no FEDERATION_NODE, as every test of
    these modules runs the CLI (module-scoped fixtures, which monkeypatch is not)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PASSPHRASE_ENV, PASSPHRASE)
        mp.delenv("FEDERATION_NODE", raising=False)
        yield


def init_quiet(node: Path, name: str) -> None:
    """`federation init` of a plain-HTTP node on a free loopback port."""
    listen = f"127.0.0.1:{free_port()}"
    ok(cli_quiet(node, "init", "--name", name, "--plain-http", "--listen", listen))


def member_identity(root: Path) -> tuple[pyrage.x25519.Identity, Path]:
    """A member's age identity, and the file holding it as `restore --identity` reads."""
    member = pyrage.x25519.Identity.generate()
    identity = root / "member.key"
    identity.write_text(f"{member}\n")
    return member, identity


def cli_quiet(node: Path | None, *args: str) -> Run:
    """The same for module-scoped fixtures (capsys is per test)."""
    out, err = io.BytesIO(), io.BytesIO()
    out_text = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    err_text = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
    argv = (["--node", str(node)] if node is not None else []) + list(args)
    with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(err_text):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    run = Run(code, out.getvalue().decode(), err.getvalue().decode())
    out_text.detach(), err_text.detach()
    return run


@contextlib.contextmanager
def running(
    node: Path,
    log: Path,
    *,
    cwd: Path | None = None,
    preexec_fn: Callable[[], object] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`federation run` of `node` in a real process, until the block ends (`cwd` and
    `preexec_fn` as subprocess.Popen takes them)."""
    env = dict(os.environ)
    env.pop("FEDERATION_NODE", None)
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "federation", "--node", str(node), "run"],
            env=env,
            cwd=cwd,
            preexec_fn=preexec_fn,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + RUN_START_S
        while b" serving on " not in log.read_bytes():
            assert process.poll() is None, f"run exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"run did not start: {log.read_text()}"
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


RUN_START_S = 30.0
