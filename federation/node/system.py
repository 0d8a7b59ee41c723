"""What the node takes from the machine: the clock and randomness, in one place; and
what it keeps from the machine: its memory, never written to disk as a core dump.

The pure layers (core, sync, views) never read the time or draw random bytes: the
shell passes both in, so tests can inject a fake clock and every use is findable
here (tests/test_layering.py forbids `time`, `random` and `os.urandom` below).
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import sys
import time
from collections.abc import Callable

Clock = Callable[[], int]  # microseconds since the epoch: event times, tokens, deadlines


def system_clock() -> int:
    return time.time_ns() // 1000


def random_bytes(n: int) -> bytes:
    """Secret randomness from the operating system: keys, salts, nonces."""
    return os.urandom(n)


def jitter(low: float, high: float) -> float:
    """Non-secret randomness: spreads retries so clubs restarting together differ."""
    return random.uniform(low, high)


# prctl(2) option: whether the process may be dumped (a core file) or traced by
# processes of its user that are not privileged.
_PR_SET_DUMPABLE = 4


def keep_memory_off_disk() -> None:
    """No core dump of this process, ever: its memory holds the club's signing key,
    the store key and decrypted payloads once unlocked, and a crash would write them
    in the clear to the working directory, or to wherever the system keeps crashes
    (systemd-coredump's /var/lib/systemd/coredump, apport's /var/crash), for good.

    The core size limit goes to zero; on Linux the process is also made not
    dumpable, which stops the kernel from dumping it whatever the limit says (a core
    piped to a collector too), and keeps other processes of the same user from
    attaching a debugger to read it. The hard limit is left: a process that runs a
    command in-process (the tests) may still let its other children dump. Swap and a
    hibernation image are the machine's to keep off the disk (README, "What a seized
    disk reveals")."""
    with contextlib.suppress(ValueError, OSError):  # a platform without the limit
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    if sys.platform.startswith("linux"):
        import ctypes  # here: only Linux has prctl, and every command starts through this

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # libc, in the process
