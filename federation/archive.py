"""Export and import of logs as JSON lines (protocol.md §6).

One JSON object per line, tagged by "type": a `club` line (its genesis), a `log`
line (its descriptor), then `event` lines in seq order. Binary values are hex,
payloads base64 (they are exact bytes: a hash commits to them). Import verifies
everything (genesis and descriptor hashes, chain, payload hashes, signatures), is
idempotent, keeps a fork as evidence, and on the first bad line stores nothing
past the valid prefix before it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import msgspec

from federation.core import canonical
from federation.core.events import Head, VerifiedEvent, verify_event, verify_run
from federation.core.log import fork_between, format_audience
from federation.errors import FederationError, InvalidEventError
from federation.store.base import ForkRecord, LogRecord, Store

CHUNK_LINES = 5000
# A line holds at most one event: its header, a base64 payload and field names.
MAX_LINE_BYTES = 2 * canonical.MAX_PAYLOAD_BYTES


class ClubLine(msgspec.Struct, tag="club", forbid_unknown_fields=True):
    id: str
    genesis: str


class LogLine(msgspec.Struct, tag="log", forbid_unknown_fields=True):
    id: str
    descriptor: str
    name: str = ""
    audience: str = ""


class EventLine(msgspec.Struct, tag="event", forbid_unknown_fields=True):
    log: str
    seq: int
    id: str
    signed: str
    payload: str | None


Line = ClubLine | LogLine | EventLine
_decoder = msgspec.json.Decoder(Line)
_encoder = msgspec.json.Encoder()


class ImportReport(msgspec.Struct):
    added: int = 0
    already: int = 0
    forks: int = 0
    lines: int = 0


def event_line(event: VerifiedEvent) -> bytes:
    payload = None if event.payload is None else base64.b64encode(event.payload).decode()
    line = EventLine(
        event.header.log.hex(), event.header.seq, event.id.hex(), event.signed.hex(), payload
    )
    return _encoder.encode(line) + b"\n"


async def export(
    store: Store,
    out: IO[bytes],
    logs: list[LogRecord],
    advance: Callable[[int], None] | None = None,
) -> int:
    """Write the given logs (with their clubs) to `out`; returns how many events."""
    clubs = await store.clubs()
    for club in sorted({r.club for r in logs}):
        out.write(_encoder.encode(ClubLine(club.hex(), clubs[club].hex())) + b"\n")
    count = 0
    for record in logs:
        out.write(
            _encoder.encode(
                LogLine(
                    record.id.hex(),
                    record.descriptor.hex(),
                    record.name,
                    format_audience(record.audience),
                )
            )
            + b"\n"
        )
        after = 0
        while page := await store.events(record.id, after, CHUNK_LINES):
            for event in page:
                out.write(event_line(event))
            after = page[-1].header.seq
            count += len(page)
            if advance is not None:
                advance(len(page))
    return count


class _Importer:
    def __init__(self, store: Store, genesis: dict[bytes, canonical.Genesis], now_us: int) -> None:
        self.store = store
        self.genesis = genesis
        self.now_us = now_us
        self.report = ImportReport()

    def authorized(self, club: bytes, key: bytes) -> bool:
        g = self.genesis.get(club)
        return g is not None and g.key == key

    async def chunk(self, numbered: list[tuple[int, bytes]]) -> None:
        """Import one chunk of lines; raise at the first bad one, after storing the prefix."""
        error: FederationError | None = None
        error_line = None
        parsed: list[tuple[int, Line]] = []
        for number, raw in numbered:
            try:
                if len(raw) > MAX_LINE_BYTES:
                    raise InvalidEventError(f"line is over {MAX_LINE_BYTES} bytes")
                parsed.append((number, _decoder.decode(raw)))
            except (msgspec.DecodeError, InvalidEventError) as exc:
                error, error_line = _at(number, exc), number
                break
        # Apply club and log lines in order; gather each log's events as one run.
        runs: dict[bytes, list[tuple[int, EventLine]]] = {}
        for number, line in parsed:
            try:
                if isinstance(line, ClubLine):
                    await self._club(line)
                elif isinstance(line, LogLine):
                    await self._log(line)
                else:
                    runs.setdefault(_hex(line.log, "log"), []).append((number, line))
            except FederationError as exc:
                error, error_line = _at(number, exc), number
                break
        accepted: list[tuple[int, VerifiedEvent]] = []
        for log, run in runs.items():
            if error_line is not None:
                run = [(n, ln) for n, ln in run if n < error_line]
            good, bad = await self._run(log, run)
            accepted.extend(good)
            if bad is not None and (error_line is None or bad[0] < error_line):
                error, error_line = bad[1], bad[0]
        keep = [
            e
            for n, e in sorted(accepted, key=lambda p: p[0])
            if error_line is None or n < error_line
        ]
        await self.store.append(keep)
        self.report.added += len(keep)
        if error is not None:
            raise error

    async def _club(self, line: ClubLine) -> None:
        club, genesis = _hex(line.id, "club id"), _hex(line.genesis, "genesis")
        g = canonical.decode_genesis(genesis)
        if canonical.club_id(genesis) != club:
            raise InvalidEventError("club id is not the hash of its genesis", club=club)
        await self.store.put_club(club, genesis)
        self.genesis.setdefault(club, g)

    async def _log(self, line: LogLine) -> None:
        log, descriptor = _hex(line.id, "log id"), _hex(line.descriptor, "descriptor")
        d = canonical.decode_log(descriptor)
        if canonical.log_id(descriptor) != log:
            raise InvalidEventError("log id is not the hash of its descriptor", log=log)
        if d.club not in self.genesis:
            raise InvalidEventError("log of a club with no club line before it", log=log)
        await self.store.put_log(log, descriptor)

    async def _run(
        self, log: bytes, run: list[tuple[int, EventLine]]
    ) -> tuple[list[tuple[int, VerifiedEvent]], tuple[int, FederationError] | None]:
        record = await self.store.log(log)
        if record is None:
            return [], (
                run[0][0],
                InvalidEventError("event of a log with no log line before it", log=log),
            )
        head: Head | None = record.head
        fresh: list[tuple[int, EventLine, bytes, bytes | None]] = []
        for number, line in run:
            try:
                signed = _hex(line.signed, "signed header")
                payload = None
                if line.payload is not None:
                    payload = base64.b64decode(line.payload, validate=True)
            except (FederationError, binascii.Error) as exc:
                return [], (number, _at(number, exc))
            if head is not None and line.seq <= head.seq and not fresh:
                fork = await self._held(log, line.seq, signed, payload)
                if fork is not None:
                    return [], (number, _at(number, fork))
                continue
            fresh.append((number, line, signed, payload))
        verified, error = verify_run(log, head, [(s, p) for _, _, s, p in fresh], self.authorized)
        good: list[tuple[int, VerifiedEvent]] = []
        for (number, line, _, _), event in zip(fresh, verified, strict=False):
            if line.seq != event.header.seq or line.id != event.id.hex():
                mismatch = InvalidEventError("seq or id field does not match the signed header")
                return good, (number, _at(number, mismatch))
            good.append((number, event))
        if error is not None:
            number = fresh[len(verified)][0]
            return good, (number, _at(number, error))
        return good, None

    async def _held(
        self, log: bytes, seq: int, signed: bytes, payload: bytes | None
    ) -> FederationError | None:
        """An event at a seq we hold: the same one (skip), or a fork (keep the proof)."""
        held = await self.store.event_at(log, seq)
        assert held is not None
        if held.signed == signed:
            self.report.already += 1
            return None
        try:  # a fork counts only if the other event is validly signed
            theirs = verify_event(signed, payload, self.authorized)
        except InvalidEventError as exc:
            return exc
        fork = fork_between(held.signed, theirs)
        assert fork is not None
        await self.store.record_fork(
            ForkRecord(theirs.header.club, log, seq, held.signed, signed, self.now_us)
        )
        self.report.forks += 1
        return fork


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InvalidEventError(f"{what} is not hex") from None


def _at(number: int, exc: Exception) -> FederationError:
    message = str(exc).splitlines()[0]
    return InvalidEventError(f"line {number}: {message}; nothing after the valid prefix was stored")


def _numbered(lines: Iterable[bytes]) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            chunk.append((number, raw))
        if len(chunk) >= CHUNK_LINES:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def import_lines(
    store: Store,
    genesis: dict[bytes, canonical.Genesis],
    lines: Iterable[bytes],
    now_us: int,
    advance: Callable[[int], None] | None = None,
) -> ImportReport:
    importer = _Importer(store, dict(genesis), now_us)
    for chunk in _numbered(lines):
        await importer.chunk(chunk)
        importer.report.lines += len(chunk)
        if advance is not None:
            advance(len(chunk))
    return importer.report
