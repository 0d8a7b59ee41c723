"""`make demo`: the example clubs of nodes/, each a real node, federating for real.

Reads the demo specs in nodes/ (one TOML file per club), creates a node for each
under ./demo-federation/, signs each spec's posts into the club's logs, peers the
clubs as their specs say, starts every node as a background `federation run`
process, and shows sync at work: a new post travelling from node to node, what a
relay passes on and what it must not, per-peer status. Then verify, erase,
calendar and campaigns, and (unless --no-wait) the federation keeps running for
you to try things in another terminal until Ctrl-C.

Every step is a real `federation` command, printed as a newcomer can type it: the
one-shot commands call `federation.cli.main` in this process; the nodes are real
`python -m federation run` processes, stopped on every way out (end, error, Ctrl-C,
SIGTERM). A step that fails stops the demo with a one-line reason: exit 1.

A demo spec is not a node configuration (that is federation.core.config): it says
what to create and what to post. Specs decode into frozen Structs that reject
unknown fields, so a typo in nodes/ fails loudly; tests/test_demo.py loads them all.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Annotated, Any, Literal

import msgspec

from federation import cli
from federation.core.config import parse_listen
from federation.core.invite import read_invite
from federation.core.payloads import Count, Line, Period, Slug, Text
from federation.errors import ConfigError, FederationError, UsageError
from federation.keyfile import PASSPHRASE_ENV

NODES_DIR = Path(__file__).resolve().parents[1] / "nodes"
DEMO_DIR = Path("demo-federation")
# Printed on purpose: it protects nothing but demo keys. A real club chooses its own.
DEMO_PASSPHRASE = "demo passphrase, not a secret"
# The club whose node the demo looks into, and the hub that relays between the others;
# the first spec if there is none of that name.
FEATURED = "riverside"
# Written into the demo directory so that a rerun deletes only what a demo made.
MARKER = "README.txt"
MARKER_TEXT = (
    "Made by `make demo` (federation/demo.py): one node directory per club of nodes/.\n"
    "Safe to delete; `make demo` replaces it and `make clean` removes it.\n"
)
# Each running node's stderr, in its node directory.
RUN_LOG = "run.log"
WIDTH = 78
# Bounded waits, in seconds. A node starts listening in about half a second; a post
# reaches a peer within about a second (the store is polled every 0.2 s, peers
# long-poll), and a relay within two; a node stops within a fraction of a second.
START_S = 15.0
SYNC_S = 10.0
# The first sync waits out the retry of a node that started before its peer could
# answer (about 1 s, then 2 s: syncer.BACKOFF_FIRST_S, doubling).
FIRST_SYNC_S = 15.0
STOP_S = 5.0
POLL_S = 0.1
# Invites are long (the club's genesis, address, fingerprint and signature): on
# screen, this many characters of one are enough to recognise it.
INVITE_SHOWN = 60

# --- the demo spec ------------------------------------------------------------------

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


# --- running commands -------------------------------------------------------------

_SAFE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)


def quote(arg: str) -> str:
    """Quote for a POSIX shell, readably: double quotes where they are safe."""
    if _SAFE.fullmatch(arg):
        return arg
    if not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def capture(argv: Sequence[str]) -> tuple[int, str]:
    """Run one CLI command in this process; its exit status and what it printed."""
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)  # --json writes bytes
    try:
        with contextlib.redirect_stdout(out):
            code = cli.main(list(argv))
    except SystemExit as exc:  # argparse: a usage error, already explained on stderr
        code = exc.code if isinstance(exc.code, int) else 2
    if code == 130:  # the command saw the Ctrl-C meant for the demo: pass it on
        raise KeyboardInterrupt
    out.flush()
    return code, buffer.getvalue().decode("utf-8")


def federation(*argv: str, shown: str | None = None, clip: int | None = None) -> str:
    """Run one CLI command, printed as typed (or as `shown`); return what it printed.

    `clip` shortens long output lines on screen (an invite), not what is returned."""
    line = "federation " + (shown if shown is not None else " ".join(quote(a) for a in argv))
    print(f"$ {line}", flush=True)
    code, text = capture(argv)
    for printed in text.splitlines():
        if clip is not None and len(printed) > clip:
            printed = f"{printed[:clip]}… ({len(printed)} characters)"
        print(f"    {printed}")
    if code != 0:
        raise FederationError(f"`{line}` failed (exit status {code}); see its message above")
    return text


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


# --- the running nodes ------------------------------------------------------------


def port_free(host: str, port: int) -> bool:
    """Could a node listen on host:port? (Binds as the node will, with SO_REUSEADDR.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(listens: dict[str, str]) -> None:
    for name, listen in listens.items():
        host, port = parse_listen(listen)
        if not port_free(host, port):
            raise FederationError(
                f"port {port} ({listen}, for the {name} node) is already in use: stop what "
                "listens there (an earlier demo still running? `ss -ltnp` shows it), or "
                "run the demo on other ports with --base-port"
            )


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _sigint_handled() -> Iterator[None]:
    try:
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        if ignored:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: signals are not ours to change
        ignored = False
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class RunningNode:
    def __init__(self, name: str, node: Path, listen: str, log: IO[bytes]) -> None:
        self.name = name
        self.log_path = Path(log.name)
        self.host, self.port = parse_listen(listen)
        self.listen = listen
        # A session of its own: a Ctrl-C at the terminal reaches the demo alone, which
        # then stops each node in turn and waits for it. The demo stops a node with
        # SIGINT, so the node must not inherit it ignored (as a background job's is):
        # an exec resets a handled signal to the default, not an ignored one.
        with _sigint_handled():
            self.process = subprocess.Popen(
                [sys.executable, "-m", "federation", "--node", str(node.resolve()), "run"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    def last_line(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            last = self.last_line()
            raise FederationError(
                f"the {self.name} node stopped (exit status {code})"
                + (f"; its log {shown_path(self.log_path)} ends: {last}" if last else "")
            )


class Nodes:
    """The demo's `federation run` processes: started together, all stopped on exit."""

    def __init__(self) -> None:
        self.running: list[RunningNode] = []
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, node: Path, listen: str) -> RunningNode:
        log = (node / RUN_LOG).open("wb")
        self._logs.append(log)
        running = RunningNode(name, node, listen, log)
        self.running.append(running)
        return running

    def check(self) -> None:
        for running in self.running:
            running.check()

    def wait_listening(self, timeout_s: float = START_S) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = list(self.running)
        while waiting:
            for running in list(waiting):
                running.check()
                if listening(running.host, running.port):
                    waiting.remove(running)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{r.name} ({r.listen})" for r in waiting)
                raise FederationError(
                    f"not listening after {timeout_s:.0f} s: {names}; see "
                    + ", ".join(shown_path(r.log_path) for r in waiting)
                )
            if waiting:
                time.sleep(POLL_S)

    def stop(self) -> list[str]:
        """Ctrl-C each node (SIGINT), as a person would; insist if one does not stop."""
        # A second Ctrl-C must not leave nodes running: ignore it until they are stopped.
        restore = None
        with contextlib.suppress(ValueError):  # not the main thread: nothing to protect
            restore = signal.signal(signal.SIGINT, signal.SIG_IGN)
        stopped = []
        try:
            live = [r for r in self.running if r.process.poll() is None]
            for running in live:
                running.process.send_signal(signal.SIGINT)
            deadline = time.monotonic() + STOP_S
            for running in live:
                try:
                    running.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    running.process.terminate()
                    try:
                        running.process.wait(STOP_S)
                    except subprocess.TimeoutExpired:
                        running.process.kill()
                        running.process.wait()
                stopped.append(running.name)
        finally:
            for log in self._logs:
                log.close()
            if restore is not None:
                signal.signal(signal.SIGINT, restore)
        return stopped


@contextlib.contextmanager
def running(nodes: Nodes) -> Iterator[Nodes]:
    """Stop every node started within, however the block ends."""
    try:
        yield nodes
    finally:
        nodes.stop()


def wait_until(
    what: str, done: Callable[[], bool], nodes: Nodes, timeout_s: float = SYNC_S
) -> float:
    """Poll `done` until true; fail naming `what` after timeout_s. Returns the seconds taken."""
    started = time.monotonic()
    while not done():
        nodes.check()
        if time.monotonic() - started > timeout_s:
            raise FederationError(
                f"{what}: not after {timeout_s:.0f} s; see the nodes' logs "
                + ", ".join(shown_path(r.log_path) for r in nodes.running)
            )
        time.sleep(POLL_S)
    return time.monotonic() - started


# --- the walk-through ---------------------------------------------------------------


class Cast(msgspec.Struct, frozen=True):
    """Who plays which part in the sync scenes, worked out from the specs."""

    hub: str  # federates with both others and relays between them (riverside)
    origin: str  # posts while the nodes run (northside)
    target: str  # the hub's peer that is not the origin's peer (harbour)


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
    return Cast(hub=hub, origin=origin, target=targets[0])


def _expected(specs: dict[str, DemoSpec], origin: str, holder: str, audience: str) -> bool:
    """May `holder`'s node hold a log of `origin`'s with this audience, and should it?

    Public: every club connected to the origin through peers; federation: the
    origin's peers (the demo's clubs sign every peer into their rosters); the
    others never leave the origin's node."""
    if audience == "public":
        seen, todo = {origin}, [origin]
        while todo:
            for peer in specs[todo.pop()].club.peers:
                if peer not in seen:
                    seen.add(peer)
                    todo.append(peer)
        return holder in seen
    if audience == "federation":
        return holder in specs[origin].club.peers
    return False


def _logs(node: str) -> dict[tuple[str, str], tuple[str, int]]:
    """(club, log name) -> (audience, head seq), of every log a node holds."""
    status = query("--node", node, "status", "--json")
    return {(r["club"], r["name"]): (r["audience"], r["head_seq"]) for r in status["logs"]}


def audience_problems(
    specs: dict[str, DemoSpec], clubs: dict[str, str], node: dict[str, str]
) -> list[str]:
    """Every log a node holds that its origin's audience does not allow it."""
    name_of = {club: name for name, club in clubs.items()}
    problems = []
    for holder in specs:
        for (club, log), (audience, _) in _logs(node[holder]).items():
            origin = name_of.get(club)
            if origin is None or (
                origin != holder and not _expected(specs, origin, holder, audience)
            ):
                problems.append(
                    f"the {holder} node holds {origin or club[:12]}'s {log} log ({audience}), "
                    "which its audience does not allow"
                )
    return problems


def in_step(
    specs: dict[str, DemoSpec], clubs: dict[str, str], node: dict[str, str]
) -> Callable[[], bool]:
    """A check: does every node hold, up to its head, every log it should, and has it
    heard from every peer, with nothing left to fetch?"""

    def check() -> bool:
        held = {name: _logs(node[name]) for name in specs}
        for origin, club in clubs.items():
            for (owner, log), (audience, seq) in held[origin].items():
                if owner != club or not seq:  # an empty log has nothing to send
                    continue
                for holder in specs:
                    expected = holder != origin and _expected(specs, origin, holder, audience)
                    if expected and held[holder].get((club, log)) != (audience, seq):
                        return False
        for name in specs:
            for peer in query("--node", node[name], "peers", "--json"):
                if not peer["last_contact_us"] or peer["behind"]:
                    return False
        return True

    return check


def event_id(out: str) -> str:
    event = out.split(maxsplit=1)[0] if out.strip() else ""
    if not re.fullmatch(r"[0-9a-f]{64}", event):
        raise FederationError(f"`post` printed no event id: {out.strip()!r}")
    return event


def walk(
    root: Path, specs: dict[str, DemoSpec], listens: dict[str, str], nodes: Nodes
) -> dict[str, str]:
    """The scripted part, with the nodes running from step 5 on; returns the club ids."""
    featured = FEATURED if FEATURED in specs else next(iter(specs))
    order = [featured, *sorted(set(specs) - {featured})]
    node = {name: shown_path(root / name) for name in order}
    name_of = {name: specs[name].club.name for name in order}
    to_erase = [(n, p) for n in order for p in specs[n].posts if p.erase]
    if not to_erase:
        raise ConfigError("no post in nodes/ is marked `erase = true`; mark one to demo erasure")
    roles = cast(specs, featured)
    hub, origin, target = roles.hub, roles.origin, roles.target
    links = sorted({tuple(sorted((a, b))) for a in order for b in specs[a].club.peers})

    section(
        f"federation demo: {len(specs)} clubs, each running its own node",
        "Clubs of organisers keep signed, hash-chained logs of what they do, each club on "
        "its own node: no club is in charge and no platform holds everyone's data. Clubs "
        "that choose each other federate: their nodes sync what they may share. This "
        f"demo creates a node for each club in nodes/ ({', '.join(name_of.values())}) "
        f"under {shown_path(root)}/, federates them, runs them, and shows what travels "
        "and what never does.",
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
    clubs: dict[str, str] = {}
    for name in order:
        out = federation(
            "--node", node[name], "init", "--name", specs[name].club.name, "--listen", listens[name]
        )
        clubs[name] = out.split(maxsplit=1)[0] if out.strip() else ""
        if not re.fullmatch(r"[0-9a-f]{64}", clubs[name]):
            raise FederationError(f"`init` printed no club id: {out.strip()!r}")
    short = {name: club[:12] for name, club in clubs.items()}
    say("", "The first line is the club's id. The nodes do not know each other yet.")

    section(
        "2. Record what each club did",
        "Each event is signed into the club's log for its audience:",
        "- private: the club alone. It never leaves the node. Members' monthly reports go here.",
        "- federation: the clubs this club federates with.",
        "- public: anyone, including readers of the public feed.",
    )
    erase_ids: list[tuple[str, str, Post]] = []
    for name in order:
        print(f"# {name_of[name]}")
        for post in specs[name].posts:
            if post.live:
                continue
            event = event_id(federation("--node", node[name], *post_arguments(post)))
            if post.erase:
                erase_ids.append((name, event, post))
        print()

    section(
        f"3. What {name_of[featured]}'s node holds",
        "One log per audience, each its own hash chain; the log column (private#1, "
        "public#1, ...) names the log and the event's seq in it. Because private events "
        "live in a log of their own, a partner club will never even learn how many there are.",
    )
    federation("--node", node[featured], "log")

    section(
        "4. Peering: clubs choose each other",
        "Peers are named, never discovered. A club gives its invite to the clubs it "
        "chooses, in person or over a channel it trusts: the invite carries the club's "
        "id, name, address and TLS certificate fingerprint, signed by the club's key.",
    )
    invites: dict[str, str] = {}
    for name in order:
        invites[name] = federation("--node", node[name], "invite", clip=INVITE_SHOWN).strip()
        found = read_invite(invites[name])
        print(
            f"    (club {found.club.hex()[:12]}, {found.url}, "
            f"TLS fingerprint {found.fingerprint[:12]}…)"
        )
    print()
    say(
        "Each club adds the invites of the clubs in its spec's `peers`. Federation is "
        "mutual: both sides add each other. Here "
        + "; ".join(f"{name_of[a]} <-> {name_of[b]}" for a, b in links)
        + f". {name_of[origin]} and {name_of[target]} do not federate with each other.",
        "",
        "On one machine, `$(...)` passes the other node's invite straight in; between "
        "real clubs you paste the invite you were given.",
        "",
    )
    for name in order:
        for peer in specs[name].club.peers:
            federation(
                "--node",
                node[name],
                "peers",
                "add",
                invites[peer],
                shown=f'--node {quote(node[name])} peers add "$(federation --node '
                f'{quote(node[peer])} invite)"',
            )
    say(
        "",
        "Adding a peer also signs it into the club's roster, a federation log of its own: "
        "relays read a club's roster to know who may receive that club's federation events.",
    )

    section(
        "5. Start the nodes",
        "`run` serves the club's partners over TLS pinned to the invite's fingerprint and "
        "follows every peer: it asks for the peer's frontier (what it holds: one head per "
        "log), fetches what is missing, checks every event, and waits for more. The demo "
        "starts each node in the background and keeps what it says in run.log.",
    )
    check_ports(listens)
    for name in order:
        print(
            f"$ federation --node {quote(node[name])} run 2> {quote(node[name] + '/' + RUN_LOG)} &",
            flush=True,
        )
        nodes.start(name, root / name, listens[name])
    nodes.wait_listening()
    took = wait_until(
        "the nodes' first sync", in_step(specs, clubs, node), nodes, timeout_s=FIRST_SYNC_S
    )
    print()
    say(
        f"All {len(order)} nodes are listening ("
        + ", ".join(f"{name} on {listens[name]}" for name in order)
        + f"), and {took:.1f} s later each held what its partners may share with it. A "
        "node that started before its peer may not have reached it at first, and tried again "
        "a moment later (its run.log says so). They sync on their own from now on; the demo "
        "stops them when it ends."
    )

    live_posts = [post for post in specs[origin].posts if post.live]
    section(
        f"6. Sync: {name_of[origin]} posts, the others receive",
        f"With the nodes running, {name_of[origin]} posts {count(len(live_posts))} more "
        f"event{'s' * (len(live_posts) != 1)}, "
        "just as before. "
        f"Its node tells {name_of[hub]}'s node, which is waiting on it, within a moment.",
    )
    live = [
        (event_id(federation("--node", node[origin], *post_arguments(post))), post)
        for post in live_posts
    ]
    shared = {event for event, post in live if post.audience != "private"}
    public = {event for event, post in live if post.audience == "public"}

    def holds(name: str, events: set[str]) -> Callable[[], bool]:
        def check() -> bool:
            held = query(
                "--node", node[name], "log", "--club", clubs[origin], "--limit", "100000", "--json"
            )
            return events <= {e["id"] for e in held}

        return check

    took = wait_until(f"{name_of[hub]} receiving the new events", holds(hub, shared), nodes)
    took += wait_until(
        f"{name_of[target]} receiving the public event through {name_of[hub]}",
        holds(target, public),
        nodes,
    )
    wait_until("the nodes getting in step again", in_step(specs, clubs, node), nodes)
    print()
    say(
        f"{name_of[hub]} had both new events, and {name_of[target]} the public one, "
        f"{took:.1f} s after the posts. Everything {name_of[hub]}'s node now holds from "
        f"{name_of[origin]} (`--club` takes a prefix of the club id):",
        "",
    )
    federation("--node", node[hub], "log", "--club", short[origin])
    print()
    say(f"And what {name_of[target]}'s node holds from {name_of[origin]}:", "")
    federation("--node", node[target], "log", "--club", short[origin])
    print()
    say(
        f"{name_of[target]} never talks to {name_of[origin]}: it got these through "
        f"{name_of[hub]}, which relays. Signed events cannot be forged by a relay, but "
        "they could leak there, so a relay passes on an event only to clubs its author's "
        f"audience includes. To be sure nothing more is on the way, {name_of[target]} "
        f"runs one `sync` round with {name_of[hub]} by hand (its node does this on its "
        f"own), then looks for {name_of[origin]}'s notes:",
        "",
    )
    federation("--node", node[target], "sync", short[hub])
    federation("--node", node[target], "log", "--club", short[origin], "--kind", "note")
    held = {e["id"] for e in query("--node", node[target], "log", "--limit", "100000", "--json")}
    leaked = [post for event, post in live if post.audience != "public" and event in held]
    if leaked or not public <= held:
        raise FederationError(
            f"{name_of[target]} holds {name_of[origin]}'s non-public new events "
            "or lacks its public one: relaying broke the origin's audience"
        )
    print()
    say(
        f"- Relayed: {name_of[origin]}'s public events. Public means anyone, so "
        f"{name_of[hub]} passes them to {name_of[target]}.",
        f"- Not relayed: {name_of[origin]}'s federation events (its campaign and its new "
        f"note). Its signed roster names {name_of[hub]} only: {name_of[target]} is not "
        f"a club {name_of[origin]} federates with, so {name_of[hub]} never offers them.",
        "- Never sent at all: private events. Each node holds only its own club's members' "
        "reports:",
        "",
    )
    for name in order:
        federation("--node", node[name], "log", "--kind", "report")
    for name in order:
        for event in query("--node", node[name], "log", "--limit", "100000", "--json"):
            if event["audience"] == "private" and event["club"] != clubs[name]:
                raise FederationError(
                    f"{name_of[name]}'s node holds a private {event['kind']} of club "
                    f"{event['club'][:12]}: a private event left its club"
                )
    if problems := audience_problems(specs, clubs, node):
        raise FederationError(problems[0])
    print()
    say(
        "Checked on every node: it holds no private event of another club, and another "
        "club's federation logs only if that club federates with it."
    )

    section(
        "7. What sync is doing",
        "A node shows what it knows about each peer: when it last heard from it "
        "(contact) and last held everything it had (synced), how many heads they "
        "exchanged (logs), how many events it is still missing (behind), how many it "
        "received, and the last error, if one is newer than the last contact.",
    )
    federation("--node", node[hub], "status")
    print()
    for name in order:
        if name != hub:
            federation("--node", node[name], "peers", "list")

    section(
        "8. Check everything the node holds",
        "`verify` checks every event: its signature, the hash link to the event before "
        "it, and its payload against the hash in the signed header, for every club's "
        "logs the node holds. Anyone who holds the events can do this offline; one "
        "changed byte anywhere fails it.",
    )
    federation("--node", node[featured], "verify")

    for name, event, post in erase_ids:
        section(
            f"9. Erase a payload: {describe(post)}",
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
        "10. Calendar and campaigns",
        "Both are worked out from the logs a node holds (`federation rebuild` redoes "
        "them from nothing), so each club sees its own and what its partners share with "
        f"it: {name_of[target]} sees {name_of[origin]}'s public actions but not its "
        "federation campaign.",
    )
    for name in order:
        federation("--node", node[name], "calendar")
    for name in order:
        federation("--node", node[name], "campaigns")
    nodes.check()
    return clubs


def keep_running(
    root: Path, specs: dict[str, DemoSpec], clubs: dict[str, str], nodes: Nodes
) -> None:
    """Leave the nodes running for the user to try things, until Ctrl-C."""
    featured = FEATURED if FEATURED in specs else next(iter(specs))
    roles = cast(specs, featured)
    node = {name: quote(shown_path(root / name)) for name in specs}
    section(
        "The federation is running: try it",
        "The nodes keep running until you press Ctrl-C here. In another terminal, in "
        "this directory:",
    )
    print("$ . .venv/bin/activate")
    print(f"$ export {PASSPHRASE_ENV}={quote(DEMO_PASSPHRASE)}")
    print(f'$ federation --node {node[roles.target]} post note --audience public --text "Hello"')
    print(f"$ federation --node {node[roles.origin]} log --club {clubs[roles.target][:12]}")
    print(f"$ federation --node {node[roles.hub]} status")
    print(f"$ federation --node {node[roles.target]} sync")
    print(f"$ tail -f {node[roles.hub]}/{RUN_LOG}")
    print()
    say(
        f"A public note from {specs[roles.target].club.name} reaches "
        f"{specs[roles.origin].club.name} through {specs[roles.hub].club.name} within a "
        "second or two; post it with --audience federation instead and it stops at "
        f"{specs[roles.hub].club.name}.",
        "",
        "Press Ctrl-C to stop the nodes.",
    )
    sys.stdout.flush()
    while True:
        nodes.check()
        time.sleep(0.5)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m federation.demo",
        description="Create the example clubs of nodes/ as real nodes, federate and run them.",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=DEMO_DIR,
        help=f"where to create the nodes (default: ./{DEMO_DIR})",
    )
    p.add_argument("--nodes", type=Path, default=NODES_DIR, help="the demo specs (default: nodes/)")
    p.add_argument(
        "--base-port",
        type=int,
        metavar="PORT",
        help="serve the nodes from this port up instead of the specs' ports (e.g. for tests)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="stop the nodes after the walk-through instead of leaving them running",
    )
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
    # SIGTERM (a closed terminal, `kill`) stops the nodes like Ctrl-C does.
    restore = None
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        restore = signal.signal(signal.SIGTERM, _interrupt)
    stage = "walk-through"
    nodes = Nodes()
    try:
        specs = load_specs(args.nodes)
        listens = listen_addresses(specs, args.base_port)
        check_ports(listens)  # fail before building anything; again before starting
        prepare(args.dir, keep=args.keep)
        with environment(PASSPHRASE_ENV, DEMO_PASSPHRASE), running(nodes):
            clubs = walk(args.dir, specs, listens, nodes)
            scripted = time.monotonic() - started
            if args.no_wait:
                section(f"Done in {scripted:.1f} s", "Stopping the nodes.")
            else:
                print(f"\n(The walk-through took {scripted:.1f} s.)")
                stage = "running"
                keep_running(args.dir, specs, clubs, nodes)
    except FederationError as exc:
        stopped = "; the nodes are stopped" if nodes.running else ""
        print(f"\ndemo: {exc}{stopped}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if stage == "running":
            print("\nStopped the nodes. `make demo` starts over; `make clean` removes it all.")
            return 0
        stopped = "; the nodes are stopped" if nodes.running else ""
        print(f"\ndemo: interrupted{stopped}", file=sys.stderr)
        return 130
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
    root = shown_path(args.dir)
    first = FEATURED if FEATURED in specs else next(iter(specs))
    say(
        f"The nodes are in {root}/, each with the log of its run in {RUN_LOG}. Look "
        "around, or start one again, e.g.:",
        "",
    )
    print(f"$ federation --node {quote(f'{root}/{first}')} log --json")
    print(f"$ federation --node {quote(f'{root}/{first}')} run")
    say("", "`make demo` starts over (it replaces the directory); `make clean` removes it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
