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
import sys
import unicodedata
from collections.abc import Iterator
from typing import Any, TextIO

import msgspec
from tqdm import tqdm


class Output(msgspec.Struct):
    data: Any
    lines: list[str]
    exit_code: int = 0


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
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(result.data)) + b"\n")
    else:
        for line in result.lines:
            say(line)
    sys.stdout.flush()


# --- time -------------------------------------------------------------------------------


def format_time(time_us: int) -> str:
    """An event time (microseconds since the epoch) as UTC to the second."""
    return dt.datetime.fromtimestamp(time_us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_ago(now_us: int, then_us: int) -> str:
    """How long ago `then_us` was, for people: seconds, minutes, or else the date."""
    if not then_us:
        return "never"
    seconds = max(0, (now_us - then_us) // 1_000_000)
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return dt.datetime.fromtimestamp(then_us / 1e6, dt.UTC).strftime("%Y-%m-%d %H:%MZ")


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
