"""What every benchmark shares: the workload, fresh stores, timing and the JSON line.

The workload is one club writing round-robin to a few logs, with deterministic
keys, times and payloads, so two machines bench the same bytes. Stores are real
SQLite files (WAL, synchronous=FULL, as the node runs them) in a temporary
directory on whatever filesystem `tempfile` picks; the line names that filesystem
because a durable commit costs what its fsync costs.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TypeAlias, TypeVar

import msgspec
from sqlcipher3 import dbapi2 as sqlcipher

from federation.core import canonical
from federation.core.canonical import Audience, Genesis, Kind
from federation.core.crypto import SigningKey
from federation.core.events import Head, KeyCheck, VerifiedEvent, sign_event
from federation.core.log import default_log_name, descriptor_bytes
from federation.store.sqlite import SqliteStore

_REPO = Path(__file__).resolve().parent.parent
DEFAULT_EVENTS = 100_000
DEFAULT_RUNS = 3
# A node appends what one sync response or one burst of local writes holds; the
# protocol pages runs of 1,000 events, so batches and verified runs are that size.
BATCH_EVENTS = 1_000
RUN_EVENTS = 1_000
# One durable commit per event costs an fsync each; 2,000 of them bound the time of
# a run on a slow disk (~20 s at 10 ms a commit) while still averaging out jitter.
APPEND_ONE_EVENTS = 2_000

# Fixed secrets and times: the bench signs the same bytes on every machine.
_CLUB_SECRET = canonical.sha256(b"federation bench: club signing key")
_RECOVERY_SECRET = canonical.sha256(b"federation bench: club recovery key")
_BASE_TIME_US = 1_795_305_600_000_000  # 2026-11-22T00:00:00Z
_EVENT_SPACING_US = 1_000
_AUDIENCES = (Audience("private"), Audience("federation"), Audience("public"))
# Payload text lengths cycle over 64..447 characters: short notes to a paragraph.
_TEXT_MIN_CHARS = 64
_TEXT_SPREAD_CHARS = 384

# How the sync benchmarks' nodes talk: as real nodes do, on the loopback interface.
TLS = "TLS 1.3, pinned certificate, 127.0.0.1"
# The store key of the benchmarks' stores: encrypted, as a node's store is (store.cipher);
# the *_plain_store benchmarks open the same stores with no key (plain SQLite).
STORE_KEY = bytes(range(32))

JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"
T = TypeVar("T")


class BenchError(Exception):
    """A benchmark saw a wrong result (a failed verification, a missing event)."""


class Workload:
    """One club, its signing key and its logs: what every benchmark writes."""

    def __init__(self) -> None:
        self.key = SigningKey(_CLUB_SECRET)
        recovery = SigningKey(_RECOVERY_SECRET).public
        genesis = canonical.encode_genesis(
            Genesis(self.key.public, canonical.sha256(recovery), _BASE_TIME_US)
        )
        self.genesis = genesis
        self.club = canonical.club_id(genesis)
        self.logs: list[tuple[bytes, bytes]] = []  # (log id, descriptor)
        for audience in _AUDIENCES:
            descriptor = descriptor_bytes(self.club, default_log_name(audience), audience)
            self.logs.append((canonical.log_id(descriptor), descriptor))
        self._payloads: list[bytes] = []

    def authorized(self) -> KeyCheck:
        club, key = self.club, self.key.public
        return lambda c, k: c == club and k == key

    def payloads(self, n: int) -> list[bytes]:
        """n Note payloads, made once: their encoding is not part of any timing."""
        self._payloads.extend(note_payload(i) for i in range(len(self._payloads), n))
        return self._payloads[:n]

    def sign(self, payloads: Sequence[bytes]) -> list[VerifiedEvent]:
        """Sign one event per payload, round-robin over the logs, each extending its head."""
        logs = [log for log, _ in self.logs]
        heads: list[Head | None] = [None] * len(logs)
        out: list[VerifiedEvent] = []
        for i, payload in enumerate(payloads):
            j = i % len(logs)
            event = sign_event(
                self.key,
                club=self.club,
                log=logs[j],
                head=heads[j],
                time_us=_BASE_TIME_US + i * _EVENT_SPACING_US,
                kind=Kind.NOTE,
                payload=payload,
            )
            heads[j] = Head(event.header.seq, event.id)
            out.append(event)
        return out

    async def open_store(self, path: Path, key: bytes | None = STORE_KEY) -> SqliteStore:
        """A new store at `path` that knows the club and its logs, and holds no events."""
        store = await SqliteStore.open(path, create=True, key=key)
        await store.put_club(self.club, self.genesis)
        for log, descriptor in self.logs:
            await store.put_log(log, descriptor)
        return store


def note_payload(i: int) -> bytes:
    """The i-th bench Note payload: deterministic, 64-447 characters of text."""
    chars = _TEXT_MIN_CHARS + (i * 37) % _TEXT_SPREAD_CHARS
    text = (f"note {i}: " + "the branch met and agreed the rota. " * 13)[:chars]
    # {"text": ...} is the wire form of a Note (federation.core.payloads).
    return msgspec.json.encode({"text": text})


def remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def timed(work: Callable[[], T]) -> tuple[T, float]:
    """Run `work` once and time it, after a full collection so every run starts alike.

    The collector stays on while timing: a node holding many events pays for it too.
    """
    gc.collect()
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding `path` (from /proc/mounts; "unknown" elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    target = str(path.resolve())
    best, kind = "", "unknown"
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def _git(*args: str) -> str:
    """Output of a git command in this repository ("" when git or the repository is missing)."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=_REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.rstrip("\n")


def code_version() -> dict[str, JsonValue]:
    """The commit measured, and the files of the package that differ from it."""
    changed = _git("status", "--porcelain", "--", "federation").splitlines()
    return {
        "commit": _git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted": [line[3:] for line in changed],
    }


def environment(directory: Path) -> dict[str, JsonValue]:
    return {
        **code_version(),
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "sqlite": sqlcipher.sqlite_version,  # the store's library: SQLCipher's SQLite
        "sqlcipher": version("sqlcipher3-wheels"),
        "cryptography": version("cryptography"),
        "filesystem": filesystem_of(directory),
    }


class Measurement:
    """One benchmark's runs, reported as their median with every run value beside it."""

    def __init__(self, name: str, unit: str, runs: Sequence[float], **context: JsonValue) -> None:
        if not runs:
            raise BenchError(f"{name}: no runs measured")
        self.name = name
        self.unit = unit
        self.runs = list(runs)
        self.context = context

    @property
    def median(self) -> float:
        return round(statistics.median(self.runs), 1)

    def json_line(self, environment: dict[str, JsonValue]) -> str:
        line: dict[str, JsonValue] = {
            "name": self.name,
            "value": self.median,
            "unit": self.unit,
            **self.context,
            "runs": list(self.runs),
            "median_of": len(self.runs),
            **environment,
        }
        return json.dumps(line)
