"""The demo's nodes: background `federation run` processes, and the ports they need.

Each node runs in a session of its own and logs to run.log in its node directory;
`running` stops every node started within it, however the block ends (end, error,
Ctrl-C, SIGTERM). Three things make "however" true:

- a node is registered before a signal can interrupt its start: SIGINT and SIGTERM
  are blocked while it is spawned and recorded (the node unblocks them in itself);
- while the nodes are being stopped, a second Ctrl-C or a SIGTERM is ignored, so it
  cannot cut the stopping short and leave the rest running;
- on Linux each node is told by the kernel (PR_SET_PDEATHSIG) to stop with SIGTERM
  when the demo process ends, even when the demo ends in a way no Python code sees
  (SIGKILL, SIGHUP from a closed terminal, a crash).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from federation.core.config import parse_listen
from federation.demo.console import quote, shell, shown_path
from federation.errors import FederationError
from federation.node.lock import LOCK_FILE, holder

# Each running node's stderr, in its node directory.
RUN_LOG = "run.log"
# Bounded waits, in seconds. A node starts listening in about half a second; a post
# reaches a peer within about a second (the store is polled every 0.2 s, peers
# long-poll), and a relay within two; a node stops within a fraction of a second.
START_S = 15.0
SYNC_S = 10.0
# The first sync waits out the retry of a node that started before its peer could
# answer (about 1 s, then 2 s: follow.BACKOFF_FIRST_S, doubling).
FIRST_SYNC_S = 15.0
STOP_S = 5.0
POLL_S = 0.1
# The signals that stop the demo (demo/__init__.py turns SIGTERM into Ctrl-C's).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def port_free(host: str, port: int) -> bool:
    """Could a node listen on host:port? (Binds as the node will, with SO_REUSEADDR.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(listens: dict[str, str]) -> None:
    for name, listen in listens.items():
        host, port = parse_listen(listen)
        if not port_free(host, port):
            raise FederationError(
                f"port {port} ({listen}, for the {name} node) is already in use: stop what "
                "listens there (an earlier demo still running? `ss -ltnp` shows it), or "
                "run the demo on other ports with --base-port"
            )


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _sigint_handled() -> Iterator[None]:
    try:
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: signals are not ours to change
        ignored = False
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (blocked, not lost) until the block ends: a node being
    started is recorded before a Ctrl-C can end the demo without it."""
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    except (AttributeError, ValueError):  # no such call here, or not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _child_setup() -> Callable[[], None]:
    """Run in the node's process before `federation run` starts: unblock the signals
    `_signals_held` blocked (a mask survives exec), and on Linux ask the kernel to send
    the node SIGTERM when the demo ends, whichever way (see the module docstring)."""
    parent = os.getpid()
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the demo ended before prctl took effect
                os._exit(1)

    return setup


class RunningNode:
    def __init__(self, name: str, node: Path, listen: str, log: IO[bytes]) -> None:
        self.name = name
        self.node = node
        self.log_path = Path(log.name)
        self.host, self.port = parse_listen(listen)
        self.listen = listen
        # A session of its own: a Ctrl-C at the terminal reaches the demo alone, which
        # then stops each node in turn and waits for it. The demo stops a node with
        # SIGINT, so the node must not inherit it ignored (as a background job's is):
        # an exec resets a handled signal to the default, not an ignored one.
        with _sigint_handled():
            self.process = subprocess.Popen(
                [sys.executable, "-m", "federation", "--node", str(node.resolve()), "run"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                # Async-signal-safe enough: two system calls, no locks, no imports.
                preexec_fn=_child_setup(),
            )

    def last_line(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            last = self.last_line()
            raise FederationError(
                f"the {self.name} node stopped (exit status {code})"
                + (f"; its log {shown_path(self.log_path)} ends: {last}" if last else "")
            )


class Nodes:
    """The demo's `federation run` processes: started together, all stopped on exit."""

    def __init__(self) -> None:
        self.running: list[RunningNode] = []
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, node: Path, listen: str) -> RunningNode:
        with _signals_held():
            log = (node / RUN_LOG).open("wb")
            self._logs.append(log)
            running = RunningNode(name, node, listen, log)
            self.running.append(running)
        return running

    def check(self) -> None:
        for running in self.running:
            running.check()

    def run(self, name: str, node: Path, listen: str) -> RunningNode:
        """`start`, printed first as a user starts a node in a shell: in the background,
        what it says kept in run.log."""
        log = quote(shown_path(node / RUN_LOG))
        shell(f"federation --node {quote(shown_path(node))} run 2> {log} &")
        return self.start(name, node, listen)

    def stop_node(self, name: str) -> None:
        """Stop one node as a user stops a background one, printed first: `kill` (SIGTERM:
        a SIGINT ignored by a background job stays ignored, README "Running and stopping
        a node") with the pid `run` writes in run.lock; then wait for it (the seized
        laptop scene: demo/seizure.py)."""
        for running in [r for r in self.running if r.name == name]:
            lock = quote(shown_path(running.node / LOCK_FILE))
            shell(f"kill $(cut -d ' ' -f 1 {lock})")
            if running.process.poll() is None:
                # The printed command reads the pid from run.lock: it must be this node's.
                if holder(running.node) != running.process.pid:
                    raise FederationError(
                        f"{shown_path(running.node / LOCK_FILE)} does not name the {name} "
                        f"node's process (pid {running.process.pid})"
                    )
                running.process.terminate()
                try:
                    running.process.wait(STOP_S)
                except subprocess.TimeoutExpired:
                    running.process.kill()
                    running.process.wait()
            self.running.remove(running)

    def wait_listening(self, timeout_s: float = START_S) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = list(self.running)
        while waiting:
            for running in list(waiting):
                running.check()
                if listening(running.host, running.port):
                    waiting.remove(running)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{r.name} ({r.listen})" for r in waiting)
                raise FederationError(
                    f"not listening after {timeout_s:.0f} s: {names}; see "
                    + ", ".join(shown_path(r.log_path) for r in waiting)
                )
            if waiting:
                time.sleep(POLL_S)

    def stop(self) -> list[str]:
        """Ctrl-C each node (SIGINT), as a person would; insist if one does not stop."""
        # A second Ctrl-C, or a SIGTERM (which the demo turns into one), must not cut
        # this short and leave nodes running: both are ignored until they are stopped.
        restore: dict[int, Any] = {}
        with contextlib.suppress(ValueError):  # not the main thread: nothing to protect
            for number in STOP_SIGNALS:
                restore[number] = signal.signal(number, signal.SIG_IGN)
        stopped = []
        try:
            live = [r for r in self.running if r.process.poll() is None]
            for running in live:
                running.process.send_signal(signal.SIGINT)
            deadline = time.monotonic() + STOP_S
            for running in live:
                try:
                    running.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    running.process.terminate()
                    try:
                        running.process.wait(STOP_S)
                    except subprocess.TimeoutExpired:
                        running.process.kill()
                        running.process.wait()
                stopped.append(running.name)
        finally:
            for log in self._logs:
                log.close()
            for held, handler in restore.items():
                signal.signal(held, handler)
        return stopped


@contextlib.contextmanager
def running(nodes: Nodes) -> Iterator[Nodes]:
    """Stop every node started within, however the block ends."""
    try:
        yield nodes
    finally:
        nodes.stop()


def wait_until(
    what: str, done: Callable[[], bool], nodes: Nodes, timeout_s: float = SYNC_S
) -> float:
    """Poll `done` until true; fail naming `what` after timeout_s. Returns the seconds taken."""
    started = time.monotonic()
    while not done():
        nodes.check()
        if time.monotonic() - started > timeout_s:
            raise FederationError(
                f"{what}: not after {timeout_s:.0f} s; see the nodes' logs "
                + ", ".join(shown_path(r.log_path) for r in nodes.running)
            )
        time.sleep(POLL_S)
    return time.monotonic() - started
