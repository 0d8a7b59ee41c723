"""One way to name a club or an event, on every command (issue 12).

A club is named by a unique prefix of its id, at least `MIN_PREFIX_HEX` hex digits
(all 64 are a prefix too), or by its name, case-insensitive. An event or a proposal
is named by a unique id prefix of the same length. A reference that fits nothing, or
more than one thing, is refused with one line that lists the candidates (name and
short id, each quoted with `repr`, so another club's text cannot act on a terminal
even before the CLI escapes the line).

Pure: the shell gathers what it knows (`Named` entries) and asks here. Names come
from several places and are not all equally trusted: the name our own node was given,
a peer's invite, our own roster, are the operator's choices (`trusted`); a name in
another club's roster is that club's word. A name that matches a trusted entry is
resolved among the trusted entries alone, so another club cannot take a name we use
by writing it into its roster; otherwise the other names count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from federation.errors import UsageError

# Six hex digits are 16.7 million values: a prefix that short is unique among the
# clubs or events a small federation holds, and short enough to type from a screen.
MIN_PREFIX_HEX = 6
_HEX = frozenset("0123456789abcdef")
# Candidates an error lists; more are counted, not listed (one line for people).
MAX_CANDIDATES_SHOWN = 5


class Named(msgspec.Struct, frozen=True):
    """One thing that may be named: its id, a name (may be ""), and whether the name
    is the operator's own choice (see the module docstring)."""

    id: bytes
    name: str = ""
    trusted: bool = True


def hex_prefix(ref: str) -> str | None:
    """`ref` as a lowercase id prefix, or None if it is not one: at least
    `MIN_PREFIX_HEX` and at most 64 hex digits."""
    text = ref.strip().lower()
    if MIN_PREFIX_HEX <= len(text) <= 64 and all(c in _HEX for c in text):
        return text
    return None


def full_id(ref: str) -> bytes | None:
    """`ref` as a whole 64-digit id, or None."""
    text = hex_prefix(ref)
    return bytes.fromhex(text) if text is not None and len(text) == 64 else None


def fold(name: str) -> str:
    """A name as names are compared: case-folded, runs of white space as one space,
    none at either end ("" for a name of white space alone, which names nothing)."""
    return " ".join(name.split()).casefold()


def _label(ids: Sequence[bytes], names: dict[bytes, list[str]]) -> str:
    shown = []
    for raw in sorted(ids)[:MAX_CANDIDATES_SHOWN]:
        given = [n for n in names.get(raw, []) if fold(n)]  # ours first (resolve_club)
        shown.append(f"{given[0]!r} {raw.hex()[:12]}" if given else raw.hex()[:12])
    extra = len(ids) - MAX_CANDIDATES_SHOWN
    return ", ".join(shown) + (f" and {extra} more" if extra > 0 else "")


def resolve_club(ref: str, known: Iterable[Named], *, what: str = "club") -> bytes:
    """The one club `ref` names among `known`: by id prefix or by name (see the
    module docstring). Raises UsageError, listing the candidates, when it names
    none or more than one."""
    entries = list(known)
    names: dict[bytes, list[str]] = {}
    for e in sorted(entries, key=lambda e: not e.trusted):  # stable: the given order kept
        names.setdefault(e.id, []).append(e.name)
    wanted = fold(ref)
    named = [e for e in entries if wanted and fold(e.name) == wanted]
    trusted = {e.id for e in named if e.trusted}
    others = {e.id for e in named}
    by_name = trusted or others
    prefix = hex_prefix(ref)
    by_id = {e.id for e in entries if prefix is not None and e.id.hex().startswith(prefix)}
    matches = sorted(by_name | by_id)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(
            f"{ref!r} names more than one {what}: {_label(matches, names)}; "
            f"give more digits of the id"
        )
    hint = (
        f" (an id prefix needs at least {MIN_PREFIX_HEX} hex digits)"
        if 0 < len(ref.strip()) < MIN_PREFIX_HEX and all(c in _HEX for c in ref.strip().lower())
        else ""
    )
    listed = sorted(names)
    known_text = f"; known: {_label(listed, names)}" if listed else ""
    raise UsageError(
        f"no {what} {ref!r} here{hint}: give a {what}'s name or at least "
        f"{MIN_PREFIX_HEX} hex digits of its id{known_text}"
    )


def resolve_id(
    ref: str, candidates: Iterable[bytes], *, what: str, labels: dict[bytes, str]
) -> bytes:
    """The one id among `candidates` (ids that start with the prefix `ref`, as the
    store found them) that `ref` names. `labels`: what to show of each candidate
    when `ref` is ambiguous (e.g. a log name and seq)."""
    prefix = hex_prefix(ref)
    if prefix is None:
        raise UsageError(
            f"{what} must be an id or a prefix of at least {MIN_PREFIX_HEX} hex digits; got {ref!r}"
        )
    matches = sorted({c for c in candidates if c.hex().startswith(prefix)})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no {what} {ref!r} here")
    shown = ", ".join(
        f"{m.hex()[:16]} ({labels[m]!r})" if m in labels else m.hex()[:16]
        for m in matches[:MAX_CANDIDATES_SHOWN]
    )
    extra = len(matches) - MAX_CANDIDATES_SHOWN
    raise UsageError(
        f"{what} {ref!r} is ambiguous: {shown}"
        + (f" and {extra} more" if extra > 0 else "")
        + "; give more digits"
    )
