"""What the demo prints, and the one-shot `federation` commands it runs and shows.

The commands call `federation.cli.main` in this process, printed as a newcomer can
type them; a command that fails raises FederationError, which stops the demo. What
the demo does otherwise that a user would do in a shell (start a node, stop one,
copy a directory) it prints with `shell` first (README: "prints every command it
runs, so you can repeat them").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from federation.cli import main as cli
from federation.errors import FederationError

WIDTH = 78

_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)


def quote(arg: str) -> str:
    """Quote for a POSIX shell, readably: double quotes where they are safe."""
    if _SAFE.fullmatch(arg):
        return arg
    if not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def capture(argv: Sequence[str], *, stderr: bool = False) -> tuple[int, str]:
    """Run one CLI command in this process; its exit status and what it printed (on
    standard output, and with `stderr` on standard error too)."""
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)  # --json writes bytes
    err = contextlib.redirect_stderr(out) if stderr else contextlib.nullcontext()
    try:
        with contextlib.redirect_stdout(out), err:
            code = cli.main(list(argv))
    except SystemExit as exc:  # argparse: a usage error, already explained on stderr
        code = exc.code if isinstance(exc.code, int) else 2
    if code == 130:  # the command saw the Ctrl-C meant for the demo: pass it on
        raise KeyboardInterrupt
    out.flush()
    return code, buffer.getvalue().decode("utf-8")


def federation(
    *argv: str, shown: str | None = None, clip: int | None = None, stderr: bool = False
) -> str:
    """Run one CLI command, printed as typed (or as `shown`); return what it printed.

    `clip` shortens long output lines on screen (an invite), not what is returned;
    `stderr` shows what the command says there too (`export -o` reports there)."""
    line = "federation " + (shown if shown is not None else " ".join(quote(a) for a in argv))
    print(f"$ {line}", flush=True)
    code, text = capture(argv, stderr=stderr)
    for printed in text.splitlines():
        if clip is not None and len(printed) > clip:
            printed = f"{printed[:clip]}… ({len(printed)} characters)"
        print(f"    {printed}")
    if code != 0:
        raise FederationError(f"`{line}` failed (exit status {code}); see its message above")
    return text


def shell(line: str) -> None:
    """Print a command that is not a one-shot `federation` one (start or stop a node,
    copy a directory) as a user types it in a shell; the caller then does the same."""
    print(f"$ {line}", flush=True)


def query(*argv: str) -> Any:
    """Run one CLI command for its JSON, unprinted: the demo's own checks.

    `argv` includes --json, where the command takes it."""
    code, text = capture(argv)
    if code != 0:
        line = "federation " + " ".join(quote(a) for a in argv)
        raise FederationError(f"`{line}` failed (exit status {code}); see its message above")
    return json.loads(text)


def count(n: int) -> str:
    return ("no", "one", "two", "three", "four", "five")[n] if n <= 5 else str(n)


def joined(names: Iterable[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    listed = list(names)
    return ", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1 else "".join(listed)


def say(*paragraphs: str) -> None:
    for paragraph in paragraphs:
        print(textwrap.fill(paragraph, WIDTH, subsequent_indent="  " * paragraph.startswith("- ")))


def section(title: str, *paragraphs: str) -> None:
    print(f"\n=== {title} " + "=" * max(3, WIDTH - 5 - len(title)))
    say(*paragraphs)
    print()


@contextlib.contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def shown_path(path: Path) -> str:
    """`path` as the user would type it: relative to the current directory if inside it."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
