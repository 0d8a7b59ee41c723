"""Tables for people: column headers, cells cut to fit the terminal, wide characters counted.

Why not `rich`: it reads `[markup]` inside every string it prints, so each piece of
another club's text would need escaping by a second rule beside `escape_unsafe`
(DESIGN principle 19: one rule, applied once, is one that stays right), and importing
it costs tens of milliseconds on a CLI whose `post` must start fast. What we need is
small: measure, cut with "…", pad, join.

Every cell is made safe to display (`escape_unsafe`) *before* it is measured, so an
escape such as `\\x1b` counts as the four columns it takes on screen. A character's
width is 2 for East Asian wide and fullwidth characters, 0 for combining marks, and 1
otherwise: simple, and right for the text clubs write.
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from federation.cli.output import escape_unsafe

WIDTH = 80  # columns, when standard output is not a terminal (a pipe, a file, a test)
GAP = "  "  # between columns
ELLIPSIS = "…"


def terminal_width() -> int:
    """The width to render for: the terminal's when standard output is one, else 80."""
    try:
        if sys.stdout.isatty():
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
            # 0: a terminal that does not know its size (a serial console, a pty
            # nobody sized): the default, not 20 columns.
            return max(20, columns) if columns > 0 else WIDTH
    except (OSError, ValueError):  # no terminal after all, or stdout closed
        pass
    return WIDTH


def char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def width(text: str) -> int:
    """How many columns `text` (already safe to display) takes on a terminal."""
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def cut(text: str, columns: int) -> str:
    """`text` (already safe to display) in at most `columns` columns, "…" marking a cut."""
    if width(text) <= columns:
        return text
    if columns <= 0:
        return ""
    kept: list[str] = []
    used = 0
    for ch in text:
        w = char_width(ch)
        if used + w > columns - 1:
            break
        kept.append(ch)
        used += w
    return "".join(kept).rstrip() + ELLIPSIS


def pad(text: str, columns: int, right: bool = False) -> str:
    fill = " " * max(0, columns - width(text))
    return fill + text if right else text + fill


@dataclass(frozen=True)
class Column:
    """A column: its header; `least` the narrowest it may be cut to (None: never cut);
    `weight` how much of the cutting it is spared (2: keeps about twice the width);
    `right` aligned to the right (numbers)."""

    header: str
    least: int | None = 6
    weight: int = 1
    right: bool = False


def table(columns: Sequence[Column], rows: Sequence[Sequence[object]], total: int) -> list[str]:
    """The header line and one line per row, each at most `total` columns wide.

    Columns start at their widest cell; while the line is too wide, the cuttable column
    with the most width per weight gives up one column. The last column is not padded.
    If even the narrowest widths do not fit, each line is cut at `total`.
    """
    cells = [[escape_unsafe(str(v)) for v in row] for row in rows]
    widths = [max([width(c.header), *(width(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    floor = [
        widths[i] if c.least is None else min(widths[i], max(c.least, width(c.header)))
        for i, c in enumerate(columns)
    ]

    def line_width() -> int:
        return sum(widths) + len(GAP) * (len(columns) - 1)

    while line_width() > total:
        cuttable = [i for i in range(len(columns)) if widths[i] > floor[i]]
        if not cuttable:
            break
        widest = max(cuttable, key=lambda i: (widths[i] / columns[i].weight, i))
        widths[widest] -= 1

    def render(values: Sequence[str]) -> str:
        last = len(columns) - 1
        parts = [
            pad(
                cut(v, widths[i]),
                0 if i == last and not columns[i].right else widths[i],
                columns[i].right,
            )
            for i, v in enumerate(values)
        ]
        return cut(GAP.join(parts).rstrip(), total)

    return [render([c.header for c in columns]), *(render(r) for r in cells)]


def wrap(text: str, total: int, indent: str = "", hang: str = "    ") -> list[str]:
    """A sentence for people (made safe to display first) as lines of at most `total`
    columns: the first after `indent`, the rest after `indent + hang`. A word longer
    than a line (a path, in a command to copy) gets a line of its own, whole: the
    terminal wraps it, and a cut path would be a wrong command."""
    words = escape_unsafe(text).split()
    lines: list[str] = []
    line = indent
    for word in words:
        if line.strip() and width(line) + 1 + width(word) > total:
            lines.append(line)
            line = indent + hang
        line = line + (" " if line.strip() else "") + word
    if line.strip():
        lines.append(line)
    return lines


_LABELLED = re.compile(r"^(\s*\S+\s{2,})")  # "key      value": go on under the value


def fit(lines: list[str], total: int) -> list[str]:
    """Lines of prose and tables, each at most `total` columns: a longer line is
    wrapped under its own indent (or, for "label   value", under the value)."""
    out: list[str] = []
    for line in lines:
        safe = escape_unsafe(line)
        if width(safe) <= total:
            out.append(safe)
            continue
        labelled = _LABELLED.match(safe)
        if labelled:
            label = labelled.group(1)
            first, *rest = wrap(safe[len(label) :], total, " " * width(label), "")
            out += [label + first.lstrip(), *rest]
        else:
            indent = safe[: len(safe) - len(safe.lstrip())]
            out += wrap(safe[len(indent) :], total, indent)
    return out
