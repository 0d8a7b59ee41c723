"""Rendering for people and for --json: what every command returns, and how it is printed.

A command returns an `Output`: `data` (printed as one JSON document with --json, exactly
as it is held) and `lines` (for people). Much of what a node shows was written by other
clubs (notes, campaign titles, peer names, a peer's error text), and a terminal obeys
what it is sent: `ESC [2J` clears the screen, an OSC sequence retitles the window, a
bidi override makes text read backwards, and a newline inside one field can fake a
line of its own. So every line for people passes through `escape_unsafe` on its way
out (`say`, `write`); no command formats its own way around it. JSON needs no such
care: its encoder escapes control characters, and scripts must see the data unaltered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import unicodedata
from collections.abc import Iterator

# Not `from typing import TYPE_CHECKING`: see Output (type checkers honour this).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import zoneinfo
    from typing import Any, TextIO

    from tqdm import tqdm


class Output:
    """What a command returns. A plain class, and msgspec imported only to print JSON:
    `post` through the running node imports this module and must start in a few
    milliseconds (cli/post.py); dataclasses and msgspec cost tens."""

    __slots__ = ("data", "errors", "exit_code", "lines")

    def __init__(
        self, data: Any, lines: list[str], exit_code: int = 0, errors: list[str] | None = None
    ) -> None:
        self.data = data
        self.lines = lines
        self.exit_code = exit_code
        # What failed (on standard error, as `write_error` prints an error), beside the
        # result: `sync` reports each peer, and the peers it could not reach here.
        self.errors = errors or []


# --- text that is safe to display -----------------------------------------------------

# Unicode general categories a terminal may act on rather than show: Cc is C0 (tab and
# newline included: a line for people is one line), DEL and C1; Cf holds the bidi
# embeddings, overrides and isolates (U+202A-202E, U+2066-2069), the zero-width
# characters (U+200B-200F, U+2060), the byte order mark U+FEFF, soft hyphens and tags;
# Cs is a lone surrogate (a decoding accident, unprintable as UTF-8); Zl and Zp are the
# line and paragraph separators U+2028 and U+2029.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_unsafe(text: str) -> str:
    """`text` with every character a terminal could act on shown as a visible escape.

    The rule: a character whose Unicode category is Cc, Cf, Cs, Zl or Zp becomes
    `\\n`, `\\t`, `\\r`, `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN`; everything else is kept,
    so ordinary text in any script prints as it was written.
    """
    if text.isprintable():  # the common case; isprintable() is False for every unsafe one
        return text
    return "".join(
        _escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text
    )


def say(line: str, file: TextIO | None = None, *, flush: bool = False) -> None:
    """Print one line for people (on standard output unless `file`), made safe to display."""
    print(escape_unsafe(line), file=sys.stdout if file is None else file, flush=flush)


def write(result: Output, as_json: bool) -> None:
    """Print a command's result: its data as JSON for scripts, or its lines for people."""
    if as_json:
        import msgspec  # only here: see Output

        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(result.data)) + b"\n")
    else:
        for line in result.lines:
            say(line)
    sys.stdout.flush()
    if result.errors:
        write_error("; ".join(result.errors), result.exit_code or 1, as_json)


def write_error(message: str, code: int, as_json: bool) -> None:
    """An error, on standard error: one line for people ("federation: error: ..."), or
    under --json one JSON object, {"error": message, "code": exit status}. The message
    may quote other clubs' text: escaped for a terminal, or by the JSON encoder."""
    if as_json:
        import json  # only here: see Output

        line = json.dumps({"error": message, "code": code})
    else:
        line = f"federation: error: {message}"
    say(line, file=sys.stderr, flush=True)


# --- time -------------------------------------------------------------------------------


def format_time(time_us: int) -> str:
    """An event time (microseconds since the epoch) as UTC to the second: for JSON."""
    return dt.datetime.fromtimestamp(time_us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _reader_zone() -> zoneinfo.ZoneInfo | None:
    """The reader's zone when `TZ` names one (Europe/Berlin); None: the machine's local
    zone, which the C library reads (from `TZ` too when it is a rule such as CET-1CEST)."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if not name:
        return None
    import zoneinfo  # only here: a short command that shows no time need not load it

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def local_time(when: dt.datetime | int) -> dt.datetime:
    """`when` (an aware datetime, or microseconds since the epoch) in the reader's zone."""
    if isinstance(when, int):
        when = dt.datetime.fromtimestamp(when / 1e6, dt.UTC)
    elif when.tzinfo is None:  # another club's time with no zone: read as UTC, as views do
        when = when.replace(tzinfo=dt.UTC)
    zone = _reader_zone()
    return when.astimezone(zone) if zone is not None else when.astimezone()


def format_when(when: dt.datetime | int) -> str:
    """A time for people, in the reader's zone with its label: "2026-12-03 18:00 CET"."""
    moved = local_time(when)
    return f"{moved:%Y-%m-%d %H:%M} {moved.tzname() or moved.strftime('%z')}"


def format_ago(now_us: int, then_us: int) -> str:
    """How long ago `then_us` was, for people: "12 s ago", "5 min ago", "3 h ago", and
    after two days the time itself (`format_when`)."""
    if not then_us:
        return "never"
    seconds = max(0, (now_us - then_us) // 1_000_000)
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return format_when(then_us)


# --- words ------------------------------------------------------------------------------


def plural(count: int, word: str, words: str | None = None) -> str:
    """A count and its noun: "1 event", "2 events", "0 events" (`words`: irregular)."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


# --- progress ---------------------------------------------------------------------------


class Progress:
    """Call it with how many more are done; `expect` sets the total once it is known."""

    def __init__(self, bar: tqdm[Any]) -> None:
        self._bar = bar

    def __call__(self, done: int) -> None:
        self._bar.update(done)

    def expect(self, total: int) -> None:
        self._bar.total = self._bar.n + total
        self._bar.refresh()


# Work shorter than this finishes before a bar would be worth drawing.
PROGRESS_MIN_EVENTS = 5000


@contextlib.contextmanager
def progress(total: int | None, what: str) -> Iterator[Progress]:
    """A progress bar on stderr for long work (total None: of unknown length), shown
    only to a person at a terminal, and only when the work is long enough to need it.
    `what` may name a peer, so it is made safe to display like any line."""
    from tqdm import tqdm  # only here: importing it costs a short command's start-up

    quiet = not sys.stderr.isatty() or (total is not None and total < PROGRESS_MIN_EVENTS)
    with tqdm(
        total=total,
        unit=" events",
        desc=escape_unsafe(what),
        disable=quiet,
        file=sys.stderr,
        leave=False,
    ) as bar:
        yield Progress(bar)
