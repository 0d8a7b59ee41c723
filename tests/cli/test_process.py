"""One node, one process (issue 12), through the real CLI: `python -m federation` in
subprocesses, as a club runs it.

Club A is the node under test: unencrypted key and plain HTTP (so a start costs the
imports, not a scrypt), with three peers: B, a real node running in the background
for the whole module (it long-polls A, and A long-polls it); C, whose address is a
silent TCP server here (a round with it is always in progress: it never answers);
and D, whose node never runs and whose name is hostile terminal text (A logs a
warning about it at once). Every wait is bounded; every process started here is
stopped in a finally. Randomness is seeded and the seed printed.
"""

from __future__ import annotations

import json
import os
import pty
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from federation.cli.stop import EXIT_STOPPED
from federation.demo.processes import Nodes, port_free, running
from federation.errors import StoreError
from federation.node import lock
from tests.harness import free_port
from tests.sync.test_cli_sync import command, environment, wait_until
from tests.test_demo import free_base_port

pytestmark = pytest.mark.timeout(180)

STOP_ROUNDS = 20  # per signal, as issue 12 asks
# A stop must end the process within this (a bound, not a benchmark: an honest stop
# takes well under two seconds; cli/stop.FORCE_AFTER_S is 10).
STOP_BOUND_S = 8.0
START_S = 30.0
HOSTILE_NAME = "Evil\x1b[2J\u202eClub"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) +\S")
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def cli(node: Path | None, *args: str, timeout_s: float = 60.0) -> Run:
    argv = [sys.executable, "-m", "federation", *(["--node", str(node)] if node else []), *args]
    done = subprocess.run(
        argv, env=environment(), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    return Run(done.returncode, done.stdout, done.stderr)


def ok(run: Run) -> Run:
    assert run.code == 0, f"exit {run.code}: {run.err}"
    return run


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers: a peer mid-round forever."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@dataclass
class Clubs:
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    background: list[subprocess.Popen[str]] = field(default_factory=list)

    def node(self, name: str) -> Path:
        return self.root / name


def _init(clubs: Clubs, name: str, club_name: str, port: int) -> None:
    ok(
        cli(
            clubs.node(name),
            "init",
            "--name",
            club_name,
            "--no-passphrase",
            "--plain-http",
            "--listen",
            f"127.0.0.1:{port}",
        )
    )


def _invite(clubs: Clubs, name: str) -> str:
    invite: str = json.loads(ok(cli(clubs.node(name), "invite", "--json")).out)["invite"]
    return invite


@pytest.fixture(scope="module")
def clubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clubs]:
    clubs = Clubs(tmp_path_factory.mktemp("process"))
    silent = SilentServer()
    try:
        clubs.ports = {"a": free_port(), "b": free_port(), "c": silent.port, "d": free_port()}
        names = {"a": "Club A", "b": "Club B", "c": "Club C", "d": HOSTILE_NAME}
        for name, club_name in names.items():
            _init(clubs, name, club_name, clubs.ports[name])
        invites = {name: _invite(clubs, name) for name in names}
        for peer in ("b", "c", "d"):
            ok(cli(clubs.node("a"), "peers", "add", invites[peer]))
        ok(cli(clubs.node("b"), "peers", "add", invites["a"]))
        ok(cli(clubs.node("a"), "post", "note", "--text", "hello", "--audience", "federation"))
        with (clubs.root / "b.stderr").open("w") as log:
            clubs.background.append(
                subprocess.Popen(
                    command(clubs.node("b"), "run"), env=environment(), stderr=log, text=True
                )
            )
        wait_until(
            lambda: " serving on " in (clubs.root / "b.stderr").read_text(), "B serving", START_S
        )
        yield clubs
    finally:
        for process in clubs.background:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        silent.close()


# --- running A ----------------------------------------------------------------------------


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    err_path: Path

    @property
    def err(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def catches_stop(self) -> bool:
        """The process has installed its handler for SIGTERM (cli/stop.py): from here on
        a stop is ours to handle (before it, Python itself is still starting)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return self.process.poll() is not None
        caught = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M)
        return caught is not None and bool(int(caught.group(1), 16) & SIGTERM_BIT)

    def serving(self) -> bool:
        assert self.process.poll() is None, f"run exited early: {self.err}"
        return " serving on " in self.err

    def finish(self) -> int:
        try:
            return self.process.wait(STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"run did not stop within {STOP_BOUND_S} s: {self.err}")


def start(clubs: Clubs, name: str, *args: str, tag: str = "run") -> Running:
    err_path = clubs.root / f"{name}.{tag}.stderr"
    with err_path.open("wb") as err:
        process = subprocess.Popen(
            command(clubs.node(name), "run", *args),
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return Running(process, err_path)


@pytest.fixture
def stopped_runs(clubs: Clubs) -> Iterator[list[Running]]:
    """Runs a test starts; any still alive at its end is killed."""
    runs: list[Running] = []
    try:
        yield runs
    finally:
        for run in runs:
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()


def check_stopped(run: Running, code: int) -> None:
    err = run.err
    assert code == EXIT_STOPPED, f"exit {code}: {err}"
    assert "Traceback" not in err, err
    assert "Exception ignored" not in err, err
    stops = [line for line in err.splitlines() if line.endswith("node stopped")]
    assert len(stops) == 1, err
    assert err.splitlines()[-1] == stops[0], err
    for line in err.splitlines():
        assert line == "federation: node stopped" or LOG_LINE.match(line), line


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = START_S) -> None:
    """Poll finely (a stop is to arrive at chosen moments of a start-up)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.005)


# --- shutdown -----------------------------------------------------------------------------


@pytest.mark.timeout(400)
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=lambda n: n.name)
def test_run_stops_the_same_way_every_time(
    clubs: Clubs, stopped_runs: list[Running], number: signal.Signals
) -> None:
    """20 starts, each stopped at another moment: while the modules load, while the
    node opens, while it serves (B's long-poll held on A, a round with silent C in
    progress, B's events being fetched), and twice in a row. Each ends with exit 0,
    one "node stopped" line and no traceback, within a few seconds."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    for i in range(STOP_ROUNDS):
        run = start(clubs, "a", tag=f"{number.name}.{i}")
        stopped_runs.append(run)
        wait_for(run.catches_stop, "run to catch its stop signals")
        moment = i % 4
        if moment == 1:  # while it loads and opens the node
            time.sleep(rng.uniform(0.0, 0.8))
        elif moment >= 2:  # while it serves
            wait_for(run.serving, "A serving")
            time.sleep(rng.uniform(0.0, 1.0))
        run.process.send_signal(number)
        if moment == 3:  # and once more, while it stops
            time.sleep(rng.uniform(0.0, 0.3))
            run.process.send_signal(number)
        check_stopped(run, run.finish())
        assert lock.holder(clubs.node("a")) is None


# --- the run lock -------------------------------------------------------------------------


def test_a_second_run_is_refused_naming_the_first(
    clubs: Clubs, stopped_runs: list[Running]
) -> None:
    node = clubs.node("a")
    first = start(clubs, "a")
    stopped_runs.append(first)
    wait_for(first.serving, "A serving")
    assert lock.holder(node) == first.process.pid
    held = lock.lock_path(node)
    assert held.stat().st_mode & 0o777 == 0o600
    assert held.read_text() == f"{first.process.pid} run\n"

    second = cli(node, "run", timeout_s=START_S)
    assert second.code == 1, second.err
    (line,) = second.err.splitlines()
    assert f"already running (pid {first.process.pid})" in line, line
    # Refused by the lock, not by the port: nothing else was tried.
    assert "cannot listen" not in line
    assert first.process.poll() is None, "the first run goes on"
    socket.create_connection(("127.0.0.1", clubs.ports["a"]), timeout=5).close()

    first.process.send_signal(signal.SIGTERM)
    check_stopped(first, first.finish())
    assert lock.holder(node) is None
    assert held.read_text() == "", "a clean stop leaves no pid behind"


def test_a_lock_file_left_by_a_dead_process_does_not_block(
    clubs: Clubs, stopped_runs: list[Running]
) -> None:
    node = clubs.node("a")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lock.lock_path(node).write_text(gone.stdout)  # as a crash (kill -9) would leave it
    assert lock.holder(node) is None
    run = start(clubs, "a")
    stopped_runs.append(run)
    wait_for(run.serving, "A serving over a stale lock file")
    assert lock.holder(node) == run.process.pid
    run.process.send_signal(signal.SIGINT)
    check_stopped(run, run.finish())


# --- logging ------------------------------------------------------------------------------


def _run_until(clubs: Clubs, runs: list[Running], text: str, *args: str) -> Running:
    run = start(clubs, "a", *args, tag="log")
    runs.append(run)
    wait_for(lambda: text in run.err, repr(text))
    run.process.send_signal(signal.SIGTERM)
    assert run.finish() == EXIT_STOPPED, run.err
    return run


def test_run_logs_with_time_and_level_and_escapes_other_clubs_text(
    clubs: Clubs, stopped_runs: list[Running]
) -> None:
    run = _run_until(clubs, stopped_runs, "unreachable")  # D's node never runs
    check_stopped(run, EXIT_STOPPED)
    lines = run.err.splitlines()
    assert any(" INFO " in line and " serving on http://127.0.0.1:" in line for line in lines)
    warning = next(line for line in lines if " WARNING " in line and "unreachable" in line)
    # The hostile name is there, every control character shown as an escape...
    assert "Evil\\x1b[2J\\u202eClub" in warning
    # ...and none of them reached the terminal (the bytes written).
    raw = run.err_path.read_bytes()
    assert b"\x1b" not in raw
    assert "\u202e".encode() not in raw


def test_log_level_chooses_what_is_shown(clubs: Clubs, stopped_runs: list[Running]) -> None:
    quiet = _run_until(clubs, stopped_runs, "unreachable", "--log-level", "warning")
    lines = quiet.err.splitlines()
    assert lines, quiet.err
    assert all(LOG_LINE.match(line) and " WARNING " in line for line in lines), lines
    assert "Traceback" not in quiet.err

    refused = cli(clubs.node("a"), "run", "--log-level", "loud")
    assert refused.code == 2
    assert "--log-level" in refused.err
    assert len(refused.err.splitlines()) == 1


def test_log_json_writes_one_object_a_line(clubs: Clubs, stopped_runs: list[Running]) -> None:
    run = _run_until(clubs, stopped_runs, "unreachable", "--log-json")
    entries = [json.loads(line) for line in run.err.splitlines()]  # every line is JSON
    for entry in entries:
        assert set(entry) == {"time", "level", "logger", "message"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert any("serving on" in e["message"] and e["level"] == "info" for e in entries)
    warning = next(e for e in entries if "unreachable" in e["message"])
    assert warning["level"] == "warning"
    assert HOSTILE_NAME in warning["message"]  # exact, for a script...
    raw = run.err_path.read_bytes()
    assert b"\x1b" not in raw  # ...and escaped by the encoder on the way out
    assert entries[-1]["message"] == "node stopped"


# --- errors, pipes, --version, --node -----------------------------------------------------


def _club_id(clubs: Clubs, name: str) -> str:
    club: str = json.loads(ok(cli(clubs.node(name), "status", "--json")).out)["club"]
    return club


def test_sync_failures_go_to_stderr(clubs: Clubs) -> None:
    d = _club_id(clubs, "d")[:16]
    people = cli(clubs.node("a"), "sync", d)
    assert people.code == 1
    assert people.out == ""
    (line,) = people.err.splitlines()
    assert line.startswith("federation: error: "), line
    assert "unreachable" in line, line
    assert "\x1b" not in people.err  # D's name, escaped

    scripts = cli(clubs.node("a"), "sync", d, "--json")
    assert scripts.code == 1
    (result,) = json.loads(scripts.out)
    assert "unreachable" in result["error"]
    (line,) = scripts.err.splitlines()
    error = json.loads(line)
    assert error["code"] == 1
    assert "unreachable" in error["error"]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("status",), 2, "no node at"),
        (("log", "--limit", "many"), 2, "--limit"),
        (("frobnicate",), 2, "frobnicate"),
    ],
    ids=["no-node", "bad-argument", "no-such-command"],
)
def test_every_error_is_one_line_on_stderr_and_json_under_json(
    tmp_path: Path, args: tuple[str, ...], code: int, words: str
) -> None:
    missing = tmp_path / "nowhere"
    people = cli(missing, *args)
    assert (people.code, people.out) == (code, "")
    (line,) = people.err.splitlines()
    assert line.startswith("federation: error: "), line
    assert words in line, line

    scripts = cli(missing, *args, "--json")
    assert (scripts.code, scripts.out) == (code, "")
    (line,) = scripts.err.splitlines()
    error = json.loads(line)
    assert error["code"] == code, error
    assert words in error["error"], error


@pytest.mark.parametrize(
    "args",
    [("log",), ("log", "--json"), ("export", "--audience", "public"), ("peers", "list")],
    ids=" ".join,
)
def test_a_closed_pipe_ends_quietly(clubs: Clubs, args: tuple[str, ...]) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before a byte is written: `| head` that ended
    try:
        done = subprocess.run(
            [sys.executable, "-m", "federation", "--node", str(clubs.node("a")), *args],
            env=environment(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert done.stderr == "", done.stderr
    assert done.returncode == 1


def test_a_pipe_closed_midway_ends_quietly(clubs: Clubs) -> None:
    """`federation log | head -n 1` with more output than a pipe holds."""
    node = clubs.node("a")
    for letter in "uvwxyz":  # 90 kB of notes: more than a pipe's 64 KiB
        ok(cli(node, "post", "note", "--text", letter * 15_000, "--audience", "private"))
    shell = subprocess.run(
        [
            "sh",
            "-c",
            '"$0" -m federation --node "$1" log --json 2>"$2" | head -c 100 >/dev/null',
            sys.executable,
            str(node),
            str(clubs.root / "pipe.stderr"),
        ],
        env=environment(),
        timeout=60,
        check=False,
    )
    assert shell.returncode == 0
    assert (clubs.root / "pipe.stderr").read_text() == ""


def test_version() -> None:
    run = ok(cli(None, "--version"))
    assert re.fullmatch(r"federation \d+\.\d+\.\d+\S*\n", run.out), run.out
    assert run.err == ""


def test_node_is_taken_before_or_after_the_command(clubs: Clubs, tmp_path: Path) -> None:
    a = str(clubs.node("a"))
    club = _club_id(clubs, "a")
    for argv in (
        ["--node", a, "status", "--json"],
        ["status", "--node", a, "--json"],
        ["status", "--json", f"--node={a}"],
        ["--node", str(tmp_path / "nowhere"), "status", "--node", a, "--json"],  # last wins
    ):
        run = cli(None, *argv)
        assert run.code == 0, (argv, run.err)
        assert json.loads(run.out)["club"] == club
    listed = ok(cli(None, "peers", "list", "--node", a, "--json"))
    assert {p["name"] for p in json.loads(listed.out)} == {"Club B", "Club C", HOSTILE_NAME}


# --- the demo leaves no process behind ----------------------------------------------------


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has ended


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_demo_nodes_stop_when_the_demo_fails(clubs: Clubs) -> None:
    """`running` stops every node it started when the block ends in an exception."""
    nodes = Nodes()
    started = []

    def walk() -> None:
        with running(nodes):
            started.append(nodes.start("d", clubs.node("d"), f"127.0.0.1:{clubs.ports['d']}"))
            nodes.wait_listening()
            raise RuntimeError("a step failed")

    with pytest.raises(RuntimeError, match="a step failed"):
        walk()
    (node,) = started
    assert node.process.poll() is not None
    assert "node stopped" in node.last_line()
    assert port_free("127.0.0.1", clubs.ports["d"])


DRIVER = """
import sys
from pathlib import Path
from federation.demo.processes import Nodes
nodes = Nodes()
node = nodes.start("d", Path(sys.argv[1]), sys.argv[2])
nodes.wait_listening()
print(node.process.pid, flush=True)
sys.stdin.read()
"""


def test_demo_nodes_end_with_the_demo_process_even_when_killed(clubs: Clubs) -> None:
    """SIGKILL (or a closed terminal's SIGHUP) ends the demo with no chance to clean
    up: the kernel stops its nodes (PR_SET_PDEATHSIG)."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(clubs.node("d")), f"127.0.0.1:{clubs.ports['d']}"],
        env=environment(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    node = 0
    try:
        assert driver.stdout is not None
        assert driver.stdin is not None
        node = int(driver.stdout.readline())
        assert alive(node)
        driver.kill()
        driver.wait(STOP_BOUND_S)
        wait_for(lambda: not alive(node), "the node to end with the demo", STOP_BOUND_S)
        wait_for(lambda: port_free("127.0.0.1", clubs.ports["d"]), "D's port", STOP_BOUND_S)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for stream in (driver.stdin, driver.stdout):
            if stream is not None:
                stream.close()
        if node and alive(node):
            os.kill(node, signal.SIGKILL)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=lambda n: n.name)
def test_the_demo_stopped_while_its_nodes_start_leaves_none_behind(
    tmp_path: Path, number: signal.Signals
) -> None:
    """The real demo, stopped (SIGTERM as `kill` or a service manager sends it; SIGINT as
    Ctrl-C reaches a process group) as soon as its first node is up."""
    base = free_base_port()
    demo = subprocess.Popen(
        [
            *(sys.executable, "-m", "federation.demo", "--dir", str(tmp_path / "demo")),
            *("--base-port", str(base), "--no-wait"),
        ],
        env={k: v for k, v in environment().items() if k != "FEDERATION_PASSPHRASE"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[int] = set()
    try:

        def a_node_listens() -> bool:
            assert demo.poll() is None, demo.stderr.read() if demo.stderr else ""
            seen.update(children(demo.pid))
            return any(not port_free("127.0.0.1", base + i) for i in range(4))

        wait_for(a_node_listens, "the demo's first node", 240)
        seen.update(children(demo.pid))
        demo.send_signal(number)
        _, err = demo.communicate(timeout=30)
        code = demo.returncode
        assert code in (0, 130), err
        assert "Traceback" not in err
        assert seen, "the demo had started node processes"
        for pid in seen:
            assert not alive(pid), f"process {pid} of the demo is still running"
        for i in range(5):
            assert port_free("127.0.0.1", base + i)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# --- the run lock, in this process --------------------------------------------------------


def test_the_run_lock_nests_in_one_process_and_is_given_back(tmp_path: Path) -> None:
    assert lock.holder(tmp_path) is None  # no lock file: nothing runs here
    with lock.hold(tmp_path):
        assert lock.holder(tmp_path) == os.getpid()
        with lock.hold(tmp_path):  # the service inside `run` takes it again
            pass
        assert lock.holder(tmp_path) == os.getpid()
        assert lock.lock_path(tmp_path).read_text() == f"{os.getpid()} run\n"
        assert lock.lock_path(tmp_path).stat().st_mode & 0o777 == 0o600
    assert lock.holder(tmp_path) is None
    assert lock.lock_path(tmp_path).read_text() == ""


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    node = tmp_path / "node"
    node.mkdir()
    lock.lock_path(node).symlink_to(target)
    with pytest.raises(StoreError, match="symbolic link"), lock.hold(node):
        pass
    assert target.read_text() == "keep me"


def test_ctrl_c_at_the_passphrase_prompt_stops_run(tmp_path: Path) -> None:
    """The one blocking step before the event loop: Ctrl-C there stops `run` as well."""
    node = tmp_path / "locked"
    ok(cli(node, "init", "--name", "Locked", "--plain-http", "--listen", "127.0.0.1:0"))
    env = {k: v for k, v in environment().items() if k != "FEDERATION_PASSPHRASE"}
    pid, terminal = pty.fork()
    if pid == 0:  # the child: `federation run` at a terminal, which asks for the passphrase
        os.execve(sys.executable, command(node, "run"), env)
    shown = b""
    try:
        deadline = time.monotonic() + START_S
        while b"passphrase" not in shown and time.monotonic() < deadline:
            if select.select([terminal], [], [], 0.2)[0]:
                shown += os.read(terminal, 1024)
        assert b"passphrase" in shown, shown
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_BOUND_S
        while time.monotonic() < deadline:
            if select.select([terminal], [], [], 0.2)[0]:
                try:
                    more = os.read(terminal, 1024)
                except OSError:  # the child closed the terminal: it ended
                    break
                if not more:
                    break
                shown += more
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(terminal)
    text = shown.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == EXIT_STOPPED, text
    assert "Traceback" not in text
    assert text.rstrip().endswith("node stopped"), text
