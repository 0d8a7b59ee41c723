"""The demo specs: nodes/*.toml, one per club, decoded strictly and checked together.

A demo spec is not a node configuration (that is federation.core.config): it says
what to create and what to post. Specs decode into frozen Structs that reject
unknown fields, so a typo in nodes/ fails loudly; tests/test_demo.py loads them all.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from federation.core.config import parse_listen
from federation.core.payloads import Count, Line, Period, Slug, Text
from federation.errors import ConfigError, UsageError

NODES_DIR = Path(__file__).resolve().parents[2] / "nodes"
# The club whose node the demo looks into, and the hub that relays between the others;
# the first spec if there is none of that name.
FEATURED = "riverside"

SpecName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
ClubName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
When = Annotated[dt.datetime, msgspec.Meta(tz=True)]
PostAudience = Literal["private", "federation", "public"]


class ClubSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: ClubName
    listen: str
    # Other demo clubs (file names in nodes/) this club federates with. Federation is
    # mutual: each of them must name this club too.
    peers: tuple[SpecName, ...] = ()


class _Post(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="kind"
):
    # The standard audiences only: a named set of clubs needs club ids, which exist
    # only once the nodes do.
    audience: PostAudience
    # The demo erases this event's payload after posting, to show erasure.
    erase: bool = False
    # The demo posts this event while the nodes run, to show it travel.
    live: bool = False


class NotePost(_Post, frozen=True, forbid_unknown_fields=True, tag="note"):
    text: Text


class ActionPost(_Post, frozen=True, forbid_unknown_fields=True, tag="action"):
    what: Line
    starts: When
    ends: When | None = None
    where: str = ""
    participants: Count | None = None
    text: Text = ""


class ReportPost(_Post, frozen=True, forbid_unknown_fields=True, tag="report"):
    member: Line
    period: Period
    text: Text


class CampaignPost(_Post, frozen=True, forbid_unknown_fields=True, tag="campaign"):
    campaign: Slug
    op: Literal["created", "updated", "closed"]
    title: str | None = None
    text: str | None = None


Post = NotePost | ActionPost | ReportPost | CampaignPost


class DemoSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    club: ClubSpec
    posts: tuple[Post, ...] = msgspec.field(default=(), name="post")


def load_spec(path: Path) -> DemoSpec:
    """Decode one demo spec; a ConfigError names the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read demo spec {path}: {exc}", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file", path=str(path)) from None
    try:
        spec = msgspec.convert(data, DemoSpec)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}; fix that field", path=str(path)) from None
    try:
        parse_listen(spec.club.listen)
    except ConfigError as exc:
        raise ConfigError(f"{path}: club.{exc}", path=str(path), field="club.listen") from None
    for i, post in enumerate(spec.posts, 1):
        if post.live and post.erase:
            raise ConfigError(
                f"{path}: post {i} is both `live` and `erase`; the demo erases only posts "
                "made up front: drop one of the two",
                path=str(path),
                field="post",
            )
    return spec


def load_specs(directory: Path = NODES_DIR) -> dict[str, DemoSpec]:
    """Every `*.toml` in `directory`, by file name, checked against each other."""
    specs = {path.stem: load_spec(path) for path in sorted(directory.glob("*.toml"))}
    if not specs:
        raise ConfigError(f"no demo specs (*.toml) in {directory}", path=str(directory))
    listens: dict[str, str] = {}
    for name, spec in specs.items():
        where = str(directory / f"{name}.toml")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", name):
            raise ConfigError(f"{where}: name the file with a-z, 0-9 and -", path=where)
        for peer in spec.club.peers:
            if peer == name or peer not in specs:
                raise ConfigError(
                    f"{where}: club.peers names {peer!r}, which is not another spec in "
                    f"{directory}; use one of {sorted(set(specs) - {name})}",
                    path=where,
                    field="club.peers",
                )
            if name not in specs[peer].club.peers:
                raise ConfigError(
                    f"{where}: club.peers names {peer!r}, but {peer}.toml does not name "
                    f"{name!r}: clubs federate both ways, so add it there too",
                    path=where,
                    field="club.peers",
                )
        if spec.club.listen in listens:
            raise ConfigError(
                f"{where}: club.listen {spec.club.listen} is also {listens[spec.club.listen]}'s; "
                "give each club its own port",
                path=where,
                field="club.listen",
            )
        listens[spec.club.listen] = name
    return specs


def listen_addresses(specs: dict[str, DemoSpec], base_port: int | None) -> dict[str, str]:
    """Each club's host:port: the spec's, or moved so that the lowest port is base_port."""
    parsed = {name: parse_listen(spec.club.listen) for name, spec in specs.items()}
    if base_port is None:
        return {name: spec.club.listen for name, spec in specs.items()}
    lowest = min(port for _, port in parsed.values())
    highest = max(port for _, port in parsed.values())
    if not 1024 <= base_port <= 65535 - (highest - lowest):
        raise UsageError(
            f"--base-port {base_port} puts the nodes outside the ports 1024-65535; the "
            f"clubs need {highest - lowest + 1} ports from it"
        )
    return {name: _listen(host, port - lowest + base_port) for name, (host, port) in parsed.items()}


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def post_arguments(post: Post) -> list[str]:
    """The `federation post` arguments that sign `post`."""
    kind = str(type(post).__struct_config__.tag)
    argv = ["post", kind, "--audience", post.audience]
    for field in msgspec.structs.fields(post):
        value = getattr(post, field.name)
        if field.name in ("audience", "erase", "live") or value is None or value == field.default:
            continue
        argv += [
            f"--{field.name}",
            value.isoformat() if isinstance(value, dt.datetime) else str(value),
        ]
    return argv


def describe(post: Post) -> str:
    if isinstance(post, ReportPost):
        return f"{post.member}'s report for {post.period}"
    if isinstance(post, ActionPost):
        return f"the action {post.what!r}"
    if isinstance(post, CampaignPost):
        return f"the campaign step {post.campaign} {post.op}"
    return "a note"


class Cast(msgspec.Struct, frozen=True):
    """Who plays which part in the sync scenes, worked out from the specs."""

    hub: str  # federates with both others and relays between them (riverside)
    origin: str  # posts while the nodes run (northside)
    target: str  # the hub's peer that is not the origin's peer (harbour)
    # In the proposal scene the hub proposes a joint campaign to the origin and the
    # target; the outsider, another peer of the hub, is not invited (millbrook).
    outsider: str


def cast(specs: dict[str, DemoSpec], hub: str) -> Cast:
    origins = [n for n, s in specs.items() if any(p.live for p in s.posts)]
    help_text = (
        "mark a public and a federation post of one club `live = true` (posted while "
        f"the nodes run), a club that federates with {hub}, which relays to a club that "
        "does not federate with it"
    )
    if len(origins) != 1:
        raise ConfigError(f"nodes/: {len(origins)} clubs have live posts; {help_text}")
    origin = origins[0]
    contrast = {"public", "federation"} <= {p.audience for p in specs[origin].posts if p.live}
    if origin == hub or origin not in specs[hub].club.peers or not contrast:
        raise ConfigError(f"nodes/{origin}.toml: {help_text}")
    targets = sorted(set(specs[hub].club.peers) - {origin} - set(specs[origin].club.peers))
    if not targets:
        raise ConfigError(f"nodes/: {help_text}")
    outsiders = sorted(set(specs[hub].club.peers) - {origin, targets[0]})
    if not outsiders:
        raise ConfigError(
            f"nodes/: add a fourth club that federates with {hub}: the demo shows that a "
            "joint campaign proposal between the other three never reaches it"
        )
    return Cast(hub=hub, origin=origin, target=targets[0], outsider=outsiders[0])
