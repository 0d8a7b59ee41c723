"""What `federation run` writes while it runs: log records on stderr, through `logging`.

Each line carries its time (UTC, to the millisecond) and level; `--log-level` chooses
the least level shown, `--log-json` writes one JSON object a line for a log collector.
A record can quote other clubs' text (a peer's name from its invite, its error
message): in a text line every character a terminal could act on is escaped
(`cli.output.escape_unsafe`, DESIGN principle 19), and in a JSON line the encoder
escapes it (non-ASCII as \\uXXXX too, so a line is always one line of ASCII).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from federation.cli.output import escape_unsafe

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
# Every logger of the package is a child of this one: `run` configures it alone, so a
# library's own loggers (aiohttp, asyncio) stay at Python's default (warnings and up,
# through the same handler).
ROOT_LOGGER = "federation"


def _time(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-12-01T18:00:00.123Z INFO    message`, one line, safe for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)} {record.levelname:<7} {escape_unsafe(record.getMessage())}"
        if record.exc_info:
            # A bug's traceback: kept (it is what a report needs), each line escaped.
            trace = self.formatException(record.exc_info)
            line += "".join("\n    " + escape_unsafe(t) for t in trace.splitlines())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and a bug's traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _Rewrite(logging.Filter):
    """Rewrites each record's message with `rewrite` before any handler formats it."""

    def __init__(self, rewrite: Callable[[str], str]) -> None:
        super().__init__()
        self.rewrite = rewrite

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        rewritten = self.rewrite(message)
        if rewritten != message:
            record.msg, record.args = rewritten, None
        return True


@contextlib.contextmanager
def rewriting(rewrite: Callable[[str], str]) -> Iterator[None]:
    """While inside, every text record is written as `rewrite` makes it (`run` names
    the places its peers' errors name by ids: cli/names.py `name_places`). A JSON
    record keeps the ids, as `--json` output does: a log collector matches on them."""
    handlers = [
        h for h in logging.getLogger().handlers if not isinstance(h.formatter, JsonFormatter)
    ]
    rewriter = _Rewrite(rewrite)
    for handler in handlers:
        handler.addFilter(rewriter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(rewriter)


def configure(
    level: str = DEFAULT_LEVEL, *, as_json: bool = False, stream: TextIO | None = None
) -> None:
    """Send log records of `level` and above to stderr (or `stream`), as text or JSON."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # other libraries: warnings and up
    ours = logging.getLogger(ROOT_LOGGER)
    ours.setLevel(level.upper())
    # Our records reach the root handler; a level below WARNING must pass it too.
    handler.setLevel(min(logging.WARNING, ours.level))
