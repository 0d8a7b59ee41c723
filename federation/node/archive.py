"""Export and import of logs as JSON lines (protocol.md §8).

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
from federation.core.events import VerifiedEvent
from federation.core.log import format_audience
from federation.errors import InvalidEventError
from federation.node.ingest import Ingest, open_ingest
from federation.store.base import PAGE_EVENTS, LogRecord, Store

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
        while page := await store.events(record.id, after, PAGE_EVENTS):
            for event in page:
                out.write(event_line(event))
            after = page[-1].header.seq
            count += len(page)
            if advance is not None:
                advance(len(page))
    return count


async def _import_chunk(ingest: Ingest, numbered: list[tuple[int, bytes]]) -> None:
    """Import lines in file order; at the first bad line, keep the prefix and raise."""
    run_log: bytes | None = None
    run: list[tuple[int, bytes, bytes | None]] = []

    async def end_run() -> None:
        nonlocal run
        if run_log is None or not run:
            return
        taken, error = await ingest.run(run_log, [(s, p) for _, s, p in run])
        if error is not None:
            raise _at(run[taken][0], error)
        run = []

    for number, raw in numbered:
        try:
            if len(raw) > MAX_LINE_BYTES:
                raise InvalidEventError(f"line is over {MAX_LINE_BYTES} bytes")
            line = _decoder.decode(raw)
            if isinstance(line, EventLine):
                log = _hex(line.log, "log")
                if log != run_log:
                    await end_run()
                    run_log = log
                signed = _hex(line.signed, "signed header")
                payload = None
                if line.payload is not None:
                    payload = _base64(line.payload, "payload")
                if canonical.event_id(signed).hex() != line.id:
                    raise InvalidEventError("id field does not match the signed header")
                run.append((number, signed, payload))
                continue
            await end_run()
            if isinstance(line, ClubLine):
                await ingest.club(_hex(line.id, "club id"), _hex(line.genesis, "genesis"))
            else:
                await ingest.log(_hex(line.id, "log id"), _hex(line.descriptor, "descriptor"))
        except (msgspec.DecodeError, RecursionError, binascii.Error, InvalidEventError) as exc:
            await end_run()  # the events before this line are the valid prefix
            raise _at(number, exc) from None
    await end_run()


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InvalidEventError(f"{what} is not hex") from None


def _base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a character beyond ASCII
        raise InvalidEventError(f"{what} is not base64") from None


def _at(number: int, exc: Exception) -> InvalidEventError:
    message = str(exc).splitlines()[0]
    return InvalidEventError(f"line {number}: {message}; nothing after the valid prefix was stored")


def _numbered(lines: Iterable[bytes]) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            chunk.append((number, raw))
        if len(chunk) >= PAGE_EVENTS:
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
    report = ImportReport()
    try:
        async with open_ingest(store, dict(genesis), lambda: now_us, allow_private=True) as ingest:
            for chunk in _numbered(lines):
                await _import_chunk(ingest, chunk)
                report.lines += len(chunk)
                if advance is not None:
                    advance(len(chunk))
    finally:
        report.added, report.already, report.forks = (
            ingest.added,
            ingest.already,
            len(ingest.forks),
        )
    return report
