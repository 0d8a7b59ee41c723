"""Shared fixtures: one club with a fixed key and a log for each standard audience.

Randomness is seeded: Hypothesis runs derandomized (the same examples every run)
and without its example database, so a failure found once is found every time.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings

from federation.core import canonical
from federation.core.canonical import Audience, Genesis, Kind
from federation.core.crypto import SigningKey
from federation.core.events import Head, VerifiedEvent, sign_event
from federation.core.log import STANDARD_AUDIENCES, default_log_name, descriptor_bytes

settings.register_profile(
    "federation",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("federation")

# 2026-01-01T00:00:00Z: events get times from here on, one second per seq (no clock).
BASE_TIME_US = 1_767_225_600_000_000


def run_of(events: Sequence[VerifiedEvent]) -> list[tuple[bytes, bytes | None]]:
    """Events as a peer sends them: (signed header, payload) pairs."""
    return [(e.signed, e.payload) for e in events]


@dataclass
class Club:
    """A club made from a fixed seed: key, genesis, id and one log per standard audience."""

    key: SigningKey
    genesis: bytes
    id: bytes
    descriptors: dict[str, bytes] = field(default_factory=dict)  # audience name -> descriptor

    @classmethod
    def make(cls, seed: bytes) -> Club:
        key = SigningKey(canonical.sha256(b"signing key " + seed))
        genesis = canonical.encode_genesis(
            Genesis(key.public, canonical.sha256(b"recovery key " + seed), BASE_TIME_US)
        )
        club = cls(key, genesis, canonical.club_id(genesis))
        for name in STANDARD_AUDIENCES:
            audience = Audience(name)  # type: ignore[arg-type]
            club.descriptors[name] = descriptor_bytes(club.id, default_log_name(audience), audience)
        return club

    def log(self, audience: str = "federation") -> bytes:
        return canonical.log_id(self.descriptors[audience])

    def authorized(self, club: bytes, key: bytes) -> bool:
        """The KeyCheck for this club alone: its genesis key signs for its id."""
        return club == self.id and key == self.key.public

    def chain(
        self,
        n: int,
        *,
        audience: str = "federation",
        after: Head | None = None,
        payloads: Sequence[bytes] | None = None,
    ) -> list[VerifiedEvent]:
        """`n` signed events extending `after` in one log."""
        out: list[VerifiedEvent] = []
        head = after
        for i in range(n):
            payload = payloads[i] if payloads is not None else b'{"text":"note %d"}' % i
            seq = 1 if head is None else head.seq + 1
            event = sign_event(
                self.key,
                club=self.id,
                log=self.log(audience),
                head=head,
                time_us=BASE_TIME_US + seq * 1_000_000,
                kind=Kind.NOTE,
                payload=payload,
            )
            out.append(event)
            head = Head(event.header.seq, event.id)
        return out


@pytest.fixture
def club() -> Club:
    return Club.make(b"club a")


@pytest.fixture
def other_club() -> Club:
    return Club.make(b"club b")


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Started in the background (`make test &` in a script), the test process inherits
# SIGINT ignored, and so would every node a test starts: `run` keeps an inherited
# ignore, as a shell's background job expects (cli/stop.py), and the tests that stop
# a node with Ctrl-C's SIGINT would wait for it in vain. The tests take SIGINT back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _stop_signals_left_alone() -> Iterator[None]:
    """A test must leave this process's SIGINT and SIGTERM as it found them. `federation
    run` in-process catches them for good (cli/stop.py), and once one arrives it
    ignores both: every node a later test of this worker starts then inherits SIGINT
    ignored, and no Ctrl-C stops it. Run `run` in a subprocess."""
    before = {number: signal.getsignal(number) for number in _STOP_SIGNALS}
    yield
    changed = [n for n in _STOP_SIGNALS if signal.getsignal(n) != before[n]]
    for number in _STOP_SIGNALS:
        signal.signal(number, before[number])  # the next test starts as this one did
    if changed:
        names = ", ".join(signal.Signals(n).name for n in changed)
        pytest.fail(
            f"this test changed how the test process handles {names}: "
            "run `federation run` in a subprocess, not in-process"
        )
