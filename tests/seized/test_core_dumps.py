"""A running node that crashes writes no core dump: its memory holds the club's signing
key, the store key and decrypted payloads (node/system.py `keep_memory_off_disk`).

A real `federation run` process, started with the core size limit raised as high as
it goes (as a shell's `ulimit -c unlimited` or a service manager's LimitCORE would),
is sent SIGQUIT, whose default action is to end the process with a core dump. The
positive control: a plain Python process started the same way, in the same kind of
directory, does leave a core file there, so the check can see one. Where this
machine's kernel hands cores to a collector instead of the working directory (its
core_pattern is a pipe or a path elsewhere), the files cannot be seen from here and
that half is skipped; the process's limits are checked either way.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.seized.support import cli_environment, init_quiet, running

pytestmark = pytest.mark.timeout(90)

CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")
EXIT_S = 30.0


@pytest.fixture(autouse=True)
def _environment() -> Iterator[None]:
    with cli_environment():
        yield


def _cores_allowed() -> None:
    """In the child, before it runs: the core size limit as high as this user may
    set it (a shell's `ulimit -c unlimited`), and SIGQUIT's default action back (a
    suite started in the background inherits SIGQUIT ignored, as it does SIGINT)."""
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _cores_land_in_the_working_directory() -> bool:
    pattern = CORE_PATTERN.read_text().strip() if CORE_PATTERN.exists() else "|"
    return not pattern.startswith("|") and "/" not in pattern


def _core_limit(pid: int) -> list[str]:
    """The soft and hard core size limits of process `pid`, as /proc shows them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError(f"no core limit in /proc/{pid}/limits")


def _quit(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGQUIT)
    assert process.wait(timeout=EXIT_S) == -signal.SIGQUIT  # ended by it, not caught


def test_a_crashing_node_leaves_no_core_dump(tmp_path: Path) -> None:
    control_dir, run_dir, node = tmp_path / "control", tmp_path / "run", tmp_path / "club"
    control_dir.mkdir()
    run_dir.mkdir()
    # Positive control: the same start, without the node, leaves a core file.
    control = subprocess.Popen(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
        cwd=control_dir,
        preexec_fn=_cores_allowed,
        stdout=subprocess.PIPE,
    )
    assert control.stdout is not None
    assert control.stdout.readline() == b"ready\n"
    control_limit = _core_limit(control.pid)
    assert control_limit != ["0", "0"]
    _quit(control)
    control.stdout.close()
    control_cores = list(control_dir.glob("core*"))

    init_quiet(node, "Seized club")
    with running(node, tmp_path / "run.log", cwd=run_dir, preexec_fn=_cores_allowed) as process:
        assert _core_limit(process.pid)[0] == "0"  # the soft limit; undumpable besides
        _quit(process)
    left = [*run_dir.glob("core*"), *node.glob("core*")]
    if not _cores_land_in_the_working_directory() or not control_cores:
        pytest.skip(
            f"this kernel keeps cores elsewhere (core_pattern {CORE_PATTERN.read_text()!r}): "
            f"the node's limit was checked, the files cannot be"
        )
    assert control_cores, "the control left no core: the check could not see one"
    assert left == []
