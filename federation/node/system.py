"""What the node takes from the machine: the clock and randomness, in one place.

The pure layers (core, sync, views) never read the time or draw random bytes: the
shell passes both in, so tests can inject a fake clock and every use is findable
here (tests/test_layering.py forbids `time`, `random` and `os.urandom` below).
"""

from __future__ import annotations

import os
import random
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
