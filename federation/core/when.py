"""A time typed on the command line: RFC 3339 with its zone, one rule for every command.

`post --starts/--ends`, `proposal new --deadline`, `key revoke --before` all take a
time this way. A time without a zone is refused rather than guessed: a club's members
and its partners may live in different zones, and times travel in signed events.
Standard library only: `federation post` imports this on its fast path.
"""

from __future__ import annotations

import datetime as dt

from federation.errors import UsageError

EXAMPLE = "2026-12-01T18:00+00:00"


def zoned_time(text: str, what: str) -> dt.datetime:
    """`text` as an aware datetime; `what` names the argument in the one-line error."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a date and time; use e.g. {EXAMPLE}") from None
    if value.tzinfo is None:
        raise UsageError(f"{what} {text!r} needs a time zone, e.g. {EXAMPLE}")
    return value
