"""`make demo`: the example clubs of nodes/, each a real node driven through the CLI.

Reads the demo specs in nodes/ (one TOML file per club), creates a node for each
under ./demo-federation/, signs each spec's posts into the club's logs, and walks
through status, log, verify, erase, calendar and campaigns. Every step calls
`federation.cli.main`, the code of the `federation` command, and is printed as the
command a newcomer can type to repeat it. A step that fails stops the demo: exit 1.

A demo spec is not a node configuration (that is federation.core.config): it says
what to create and what to post. Specs decode into frozen Structs that reject
unknown fields, so a typo in nodes/ fails loudly; tests/test_demo.py loads them all.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import re
import shlex
import shutil
import sys
import textwrap
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from federation import cli
from federation.core.config import parse_listen
from federation.core.payloads import Count, Line, Period, Slug, Text
from federation.errors import ConfigError, FederationError, UsageError
from federation.keyfile import PASSPHRASE_ENV

NODES_DIR = Path(__file__).resolve().parents[1] / "nodes"
DEMO_DIR = Path("demo-federation")
# Printed on purpose: it protects nothing but demo keys. A real club chooses its own.
DEMO_PASSPHRASE = "demo passphrase, not a secret"
# The club whose node the demo looks into; the first spec if there is none of that name.
FEATURED = "riverside"
# Written into the demo directory so that a rerun deletes only what a demo made.
MARKER = "README.txt"
MARKER_TEXT = (
    "Made by `make demo` (federation/demo.py): one node directory per club of nodes/.\n"
    "Safe to delete; `make demo` replaces it and `make clean` removes it.\n"
)
WIDTH = 78

# --- the demo spec ------------------------------------------------------------------

SpecName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]
ClubName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
When = Annotated[dt.datetime, msgspec.Meta(tz=True)]
PostAudience = Literal["private", "federation", "public"]


class ClubSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: ClubName
    listen: str
    # Other demo clubs (file names in nodes/) this club will federate with. Unused
    # for now: peering and sync come in a later version, which will connect them.
    peers: tuple[SpecName, ...] = ()


class _Post(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="kind"
):
    # The standard audiences only: a named set of clubs needs club ids, which exist
    # only once the nodes do.
    audience: PostAudience
    # The demo erases this event's payload after posting, to show erasure.
    erase: bool = False


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
        if spec.club.listen in listens:
            raise ConfigError(
                f"{where}: club.listen {spec.club.listen} is also {listens[spec.club.listen]}'s; "
                "give each club its own port",
                path=where,
                field="club.listen",
            )
        listens[spec.club.listen] = name
    return specs


def post_arguments(post: Post) -> list[str]:
    """The `federation post` arguments that sign `post`."""
    kind = str(type(post).__struct_config__.tag)
    argv = ["post", kind, "--audience", post.audience]
    for field in msgspec.structs.fields(post):
        value = getattr(post, field.name)
        if field.name in ("audience", "erase") or value is None or value == field.default:
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


# --- running commands -------------------------------------------------------------

_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)


def quote(arg: str) -> str:
    """Quote for a POSIX shell, readably: double quotes where they are safe."""
    if _SAFE.fullmatch(arg):
        return arg
    if not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def federation(*argv: str) -> str:
    """Run one CLI command in this process, printed as typed; return what it printed."""
    line = "federation " + " ".join(quote(a) for a in argv)
    print(f"$ {line}", flush=True)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = cli.main(list(argv))
    except SystemExit as exc:  # argparse: a usage error, already explained on stderr
        code = exc.code if isinstance(exc.code, int) else 2
    text = out.getvalue()
    for shown in text.splitlines():
        print(f"    {shown}")
    if code != 0:
        raise FederationError(f"`{line}` failed (exit status {code}); see its message above")
    return text


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


def prepare(root: Path, *, keep: bool) -> None:
    """Make an empty demo directory, replacing one an earlier demo made (not --keep)."""
    if root.exists() or root.is_symlink():
        if keep:
            raise UsageError(
                f"{root} already exists from an earlier demo. Run the demo without --keep "
                f"(or with --fresh) to replace it, or remove it first: `rm -rf {root}` "
                "(`make clean` does too, along with the virtualenv)"
            )
        made_by_demo = (
            root.is_dir()
            and not root.is_symlink()
            and (not any(root.iterdir()) or (root / MARKER).is_file())
        )
        if not made_by_demo:
            raise UsageError(
                f"{root} exists but was not made by the demo (it has no {MARKER} from it); "
                "not deleting it: move it away or pass --dir with another directory"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text(MARKER_TEXT, encoding="utf-8")


# --- the walk-through ---------------------------------------------------------------


def walk(root: Path, specs: dict[str, DemoSpec]) -> None:
    featured = FEATURED if FEATURED in specs else next(iter(specs))
    order = [featured, *sorted(set(specs) - {featured})]
    node = {name: shown_path(root / name) for name in order}
    name_of = {name: specs[name].club.name for name in order}
    to_erase = [(n, p) for n in order for p in specs[n].posts if p.erase]
    if not to_erase:
        raise ConfigError("no post in nodes/ is marked `erase = true`; mark one to demo erasure")

    section(
        f"federation demo: {len(specs)} clubs, each running its own node",
        "Clubs of organisers keep signed, hash-chained logs of what they do, each club on "
        "its own node: no club is in charge and no platform holds everyone's data. This "
        f"demo creates a node for each club in nodes/ ({', '.join(name_of.values())}) "
        f"under {shown_path(root)}/ and shows what a node holds.",
        "",
        "Every step below is a real `federation` command, printed so that you can repeat "
        "it. To type them yourself, put the command on your PATH and give it the demo "
        "clubs' passphrase:",
    )
    print("$ . .venv/bin/activate")
    print(f"$ export {PASSPHRASE_ENV}={quote(DEMO_PASSPHRASE)}")
    print()
    say(
        "Each club's signing key is sealed with a passphrase: federation asks for it at a "
        f"terminal, or reads {PASSPHRASE_ENV}. This one is a demo value, printed on "
        "purpose; a real club chooses its own and keeps it out of scripts."
    )

    section(
        "1. Create a node for each club",
        "`init` makes the club's identity and its node directory: the signing key sealed "
        "with the passphrase, a recovery key (to revoke a seized key; a real club moves it "
        "off the machine), a TLS certificate for partner clubs to pin, and the store.",
    )
    for name in order:
        spec = specs[name].club
        federation("--node", node[name], "init", "--name", spec.name, "--listen", spec.listen)
    say(
        "",
        "The nodes do not know each other yet: peering and sync come in a later version "
        "(the `peers` in nodes/*.toml are kept for it).",
    )

    section(
        "2. Record what each club did",
        "Each event is signed into the club's log for its audience:",
        "- private: the club alone. It never leaves the node. Members' monthly reports go here.",
        "- federation: the clubs this club federates with, once they sync.",
        "- public: anyone, including readers of the public feed.",
    )
    erase_ids: list[tuple[str, str, Post]] = []
    for name in order:
        print(f"# {name_of[name]}")
        for post in specs[name].posts:
            out = federation("--node", node[name], *post_arguments(post))
            event = out.split(maxsplit=1)[0] if out.strip() else ""
            if not re.fullmatch(r"[0-9a-f]{64}", event):
                raise FederationError(f"`post` printed no event id: {out.strip()!r}")
            if post.erase:
                erase_ids.append((name, event, post))
        print()

    section(
        f"3. What {name_of[featured]}'s node holds",
        "One log per audience, each its own hash chain; seq counts that log's events. "
        "Because private events live in a log of their own, a partner club will never "
        "learn how many there are.",
    )
    federation("--node", node[featured], "status")

    section(
        "4. Every event, and the log it is in",
        "The log column (private#1, public#1, ...) says who may receive each event.",
    )
    federation("--node", node[featured], "log")
    say(
        "",
        "When clubs sync, only the federation and public events will leave this node; "
        "the private ones never will. This is all a supporter will see from "
        f"{name_of[featured]} on the public feed:",
        "",
    )
    federation("--node", node[featured], "log", "--log", "public")

    section(
        "5. Check everything the node holds",
        "`verify` checks every event: its signature, the hash link to the event before "
        "it, and its payload against the hash in the signed header. Anyone who holds the "
        "events can do this offline; one changed byte anywhere fails it.",
    )
    federation("--node", node[featured], "verify")

    for name, event, post in erase_ids:
        section(
            f"6. Erase a payload: {describe(post)}",
            f"{name_of[name]} wipes {describe(post)}: a member may ask to be forgotten, or "
            "a report may say too much about someone. `erase` drops the payload but keeps "
            "the signed header, which commits to the payload only by its hash and size: "
            "nobody can read what was erased, and the chain still verifies.",
        )
        federation("--node", node[name], "erase", event)
        shown = federation("--node", node[name], "show", event)
        if "[erased]" not in shown:
            raise FederationError(f"`show` does not report event {event[:12]} as erased")
        checked = federation("--node", node[name], "verify")
        if "verify ok" not in checked or "(0 erased)" in checked:
            raise FederationError("`verify` after the erase does not report an erased event")

    section(
        "7. Calendar and campaigns",
        "Both are worked out from the logs (`federation rebuild` redoes them from "
        "nothing). Today each node sees its own club only; once clubs sync, partner "
        "clubs' federation and public actions and campaigns will show here too.",
    )
    for name in order:
        federation("--node", node[name], "calendar")
    for name in order:
        federation("--node", node[name], "campaigns")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m federation.demo",
        description="Create the example clubs of nodes/ as real nodes and show what they hold.",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=DEMO_DIR,
        help=f"where to create the nodes (default: ./{DEMO_DIR})",
    )
    p.add_argument("--nodes", type=Path, default=NODES_DIR, help="the demo specs (default: nodes/)")
    replace = p.add_mutually_exclusive_group()
    replace.add_argument(
        "--fresh",
        action="store_true",
        help="replace a directory an earlier demo made (the default)",
    )
    replace.add_argument(
        "--keep", action="store_true", help="refuse to run if the directory already exists"
    )
    args = p.parse_args(argv)
    started = time.monotonic()
    try:
        specs = load_specs(args.nodes)
        prepare(args.dir, keep=args.keep)
        with environment(PASSPHRASE_ENV, DEMO_PASSPHRASE):
            walk(args.dir, specs)
    except FederationError as exc:
        print(f"\ndemo: {exc}", file=sys.stderr)
        return 1
    root = shown_path(args.dir)
    first = FEATURED if FEATURED in specs else next(iter(specs))
    section(
        f"Done in {time.monotonic() - started:.1f} s",
        f"The nodes are in {root}/. Look around, e.g.:",
    )
    print(f"$ federation --node {quote(f'{root}/{first}')} log --json")
    print(f'$ federation --node {quote(f"{root}/{first}")} post note --text "Hello"')
    say("", "`make demo` starts over (it replaces the directory); `make clean` removes it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
