"""How `federation run` stops: Ctrl-C (SIGINT) or SIGTERM, at any moment, once.

A stop is a request, not an accident: `run` ends with exit status 0 and one line
("node stopped"), whichever of the two signals asked and whenever it arrived: while
the modules load, at the passphrase prompt, while the node opens, in the middle of a
sync round, or twice.

Why not asyncio's own Ctrl-C handling: `asyncio.run` cancels the main task at once,
wherever it is, and a second Ctrl-C raises KeyboardInterrupt inside the event loop.
Cancelled in the middle of opening the store, a node can leave aiosqlite's
connection thread (not a daemon) keeping the process alive after "stopped"; a
second Ctrl-C during the cancellation printed tracebacks (issue 12) or killed the
stopping node (exit -2); SIGTERM was only caught once the node served, so the exit
status depended on the moment. Here:

- before the event loop runs, a signal is only noted, and `run` checks for it
  before each step (`requested`): the modules go on loading (a second or so) and
  the node is never opened. An exception raised from a signal handler lands
  wherever the interpreter is: inside an import's weakref callback it is printed
  as "Exception ignored" and lost; inside an `eval` of source text (namedtuple,
  dataclasses, attrs) CPython 3.11 notes a KeyboardInterrupt as unhandled even
  when it is caught, and ends the process by SIGINT (exit -2). The one place that
  cannot wait is the passphrase prompt (a blocking read): there, inside
  `interruptible`, the signal raises `Stopped`;
- once `deferred` is entered inside the loop, a signal only sets an event: the node
  finishes opening (a second or so), then stops from one place (`service.py`), where
  every task is cancelled by its owner and every resource closed in order;
- every later signal is ignored: the stop is already under way;
- should a stop ever take longer than `FORCE_AFTER_S` (a bug: a task that will not
  end, a thread the interpreter waits for), a timer thread ends the process with the
  same exit status, so a service manager's stop never hangs.

A SIGINT that was ignored when the process started (a background job of a script,
`nohup`-style) stays ignored, as for any program; SIGTERM always stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# `run` stopped by either signal: a requested stop is a success (documented in README).
EXIT_STOPPED = 0
STOPPED_LINE = "node stopped"
# An honest stop takes well under two seconds (service.SHUTDOWN_S bounds the slowest
# part, clients still being answered); this is the backstop for a bug.
FORCE_AFTER_S = 10.0


class Stopped(BaseException):
    """Raised by a stop signal inside `interruptible`, or by it when a stop was asked
    for before. A BaseException: no `except Exception` may swallow it."""


class Stop:
    """The stop signals of this process, caught for `run` (see the module docstring)."""

    def __init__(self) -> None:
        self.signal: int | None = None  # the first stop signal received
        self._wake: Callable[[], None] | None = None  # set while `deferred` runs
        self._interruptible = False  # inside `interruptible`
        self.reported = False  # the stop line was written

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def install(self) -> None:
        for number in STOP_SIGNALS:
            if number == signal.SIGINT and signal.getsignal(number) == signal.SIG_IGN:
                continue  # see the module docstring
            signal.signal(number, self._on_signal)

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            return  # the stop is under way: a second Ctrl-C changes nothing
        self.signal = number
        # Every later stop signal is ignored by the kernel, not by us: the interpreter
        # puts back the default action of a handled signal as it exits, and a second
        # Ctrl-C in that moment used to kill the stopping node (exit -2, not 0).
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        timer = threading.Timer(FORCE_AFTER_S, self._force)
        timer.daemon = True
        timer.start()
        if self._wake is not None:
            self._wake()
        elif self._interruptible:
            raise Stopped

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A blocking step (the passphrase prompt) that a stop ends by raising Stopped;
        raised at once if a stop was asked for already."""
        if self.requested:
            raise Stopped
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _force(self) -> None:
        # A daemon thread: it dies with a process that ended normally. If it runs, the
        # main thread is stuck; write the line (unless written) and end the process.
        if not self.reported:
            with contextlib.suppress(OSError):
                os.write(
                    sys.stderr.fileno(),
                    f"federation: {STOPPED_LINE} (forced after {FORCE_AFTER_S:g} s; "
                    "please report this)\n".encode(),
                )
        os._exit(EXIT_STOPPED)

    @contextlib.asynccontextmanager
    async def deferred(self) -> AsyncIterator[asyncio.Event]:
        """Inside the event loop: from here a stop signal sets the event yielded (set
        already if one arrived before) instead of interrupting whatever runs."""
        # Imported here: `catch` must be in place before the slow imports of `run`.
        import asyncio

        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(stopped.set)

        self._wake = wake
        if self.requested:  # after _wake is set: a signal in between is not lost
            stopped.set()
        try:
            yield stopped
        finally:
            self._wake = None


_current: Stop | None = None


def catch() -> Stop:
    """Catch this process's stop signals from now on (once; later calls return it)."""
    global _current
    if _current is None:
        _current = Stop()
        _current.install()
    return _current


def report_stopped(*, as_json: bool = False) -> int:
    """Write the one stop line, as a log record, and return the exit status of a
    requested stop. A stop before `run` set up its log (while the modules loaded) sets
    it up here, at the default level (`as_json`: --log-json was given)."""
    import logging  # here: see `deferred`

    stop = catch()
    if not stop.reported:
        stop.reported = True
        if not logging.getLogger().handlers:
            from federation.cli import runlog

            runlog.configure(as_json=as_json)
        logging.getLogger("federation.run").info(STOPPED_LINE)
    return EXIT_STOPPED
