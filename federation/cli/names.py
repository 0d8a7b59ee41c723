"""Clubs as people know them: by name, in every listing (issue 12).

A listing shows a club by its name: our own club's, a peer's (from its invite), or
one a roster gives it (node/naming.py `club_names`). Two clubs may carry one name,
and a name cut to fit a column may meet another: `Labels` keeps every club's label
its own, adding the first digits of the id where names alone would not tell clubs
apart. A club we know no name for is shown as "club " and the first 8 digits of its
id. JSON keeps the ids and adds the name as known (`Labels.names`), or null.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar

from federation.cli.output import escape_unsafe
from federation.cli.table import cut, width
from federation.core.canonical import Audience

if TYPE_CHECKING:
    from federation.node.node import Node
    from federation.store.base import LogRecord

SHORT_HEX = 8  # digits of an id shown where a name is missing or shared

K = TypeVar("K")


def short_id(club: bytes) -> str:
    return club.hex()[:SHORT_HEX]


class Labels:
    """Each club's label for people: its name, unique among the clubs named here."""

    def __init__(self, names: Mapping[bytes, str]) -> None:
        self.names = dict(names)  # as given: for JSON, and for resolving `--club NAME`
        # Made safe to display first, so that widths are measured on what is shown.
        self._names = {c: escape_unsafe(" ".join(n.split())) for c, n in names.items() if n.strip()}
        seen: dict[str, int] = {}
        for n in self._names.values():
            seen[n.casefold()] = seen.get(n.casefold(), 0) + 1
        self._shared = {k for k, count in seen.items() if count > 1}

    def __call__(self, club: bytes) -> str:
        name = self._names.get(club)
        if name is None:
            return f"club {short_id(club)}"
        if name.casefold() in self._shared:
            return f"{name} ({short_id(club)})"
        return name

    def name(self, club: bytes) -> str:
        """The club's name as given (not made safe: for formats that escape their own)."""
        return self.names.get(club) or f"club {short_id(club)}"

    def fitted(self, clubs: Iterable[bytes], columns: int) -> dict[bytes, str]:
        """Labels at most `columns` wide (cut with "…"), still one per club: a cut that
        meets another club's keeps the id's first digits at its end instead."""
        return distinct({c: self(c) for c in clubs}, columns, short_id)

    def audience(self, audience: Audience) -> str:
        """An audience for people: private, federation, public, or the named clubs."""
        if audience.kind != "clubs":
            return audience.kind
        return "clubs: " + ", ".join(sorted((self(c) for c in audience.clubs), key=str.casefold))


def distinct(labels: Mapping[K, str], columns: int, tag: Callable[[K], str]) -> dict[K, str]:
    """`labels` cut to `columns`, keeping different keys' labels different: where cuts
    collide, each colliding label ends in `tag(key)` (a short id) instead."""
    out = {k: cut(v, columns) for k, v in labels.items()}
    by_text: dict[str, list[K]] = {}
    for k, v in out.items():
        by_text.setdefault(v, []).append(k)
    for keys in by_text.values():
        if len(keys) < 2:
            continue
        for k in keys:
            suffix = f" {tag(k)}"
            room = max(1, columns - width(suffix))
            out[k] = cut(labels[k], room) + suffix
    return out


# A place an error names by ids, as errors.py InvalidEventError.where writes it: "club
# 84e22dbae935f578 log 61be8c7610779467 seq 1", "log 61be8c7610779467", ...
_PLACE = re.compile(
    r"\b(?:club (?P<club>[0-9a-f]{16})(?: log (?P<log>[0-9a-f]{16}))?|log (?P<only>[0-9a-f]{16}))"
    r"(?: seq (?P<seq>[0-9]+))?\b"
)


def name_places(text: str, known: Labels, logs: Mapping[bytes, LogRecord]) -> str:
    """`text` (an error, a peer's last error) with each place it names by ids named as
    listings name it, "Alpha Tenants keys#1", where this node holds the log (or, for a
    log it does not hold, knows the club's name); the rest stays as it was."""

    def named(found: re.Match[str]) -> str:
        club, seq = found.group("club"), found.group("seq")
        log = found.group("log") or found.group("only")
        record = next((r for i, r in logs.items() if log and i.hex().startswith(log)), None)
        if record is not None and (club is None or record.club.hex().startswith(club)):
            return f"{known(record.club)} {record.name}" + (f"#{seq}" if seq else "")
        whole = next((c for c in known.names if club and c.hex().startswith(club)), None)
        if whole is None:
            return found.group(0)
        return known(whole) + found.group(0).removeprefix(f"club {club}")

    return _PLACE.sub(named, text)


async def known_labels(node: Node) -> Labels:
    """The labels of every club this node knows a name for (node/naming.py: ours, our
    peers', then the names rosters held here give)."""
    from federation.node.naming import club_names

    return Labels(await club_names(node))
