"""The CLI's output for people, exactly: `log`, `status`, `peers list`, `calendar`,
`campaigns`; and the pieces that make it (tables, widths, plurals, times, names).

One fixed scenario (four real clubs, fixed times, TZ=Europe/Berlin, 80 columns) is
built once through the real CLI and real sync; each test compares a command's output
with the expected text in tests/cli/expected/, where the ids (random with the keys)
appear as tags of the same width (`PICKET__`, `RIVERSIDE___…`: see `normalised`). It
then checks what must hold whatever the layout: every line fits 80 columns, and no
listing names a club by its id.

After a deliberate change of layout, run with FEDERATION_WRITE_EXPECTED=1 to rewrite
the expected files from the output, and review the diff before committing it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import struct
import sys
import termios
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import icalendar
import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.cli.listing import delivery_lines
from federation.cli.names import Labels
from federation.cli.output import escape_unsafe, format_ago, format_when, plural
from federation.cli.table import Column, cut, fit, table, terminal_width, width
from federation.core.canonical import Audience
from federation.node.delivery import NOT_A_PEER, LogDelivery, PeerDelivery
from federation.store.base import LogRecord
from federation.store.meta import Refusal
from tests.cli.everyday import Run, Served, SetClock, check_widths, create, fixed_time, run_cli

EXPECTED = Path(__file__).parent / "expected"
ZONE = "Europe/Berlin"
CLUBS = {
    "riverside": "Riverside Tenants' Union",
    "northside": "Northside Workers' Club",
    "harbour": "Harbour Reading Group",
    "westbank": "Westbank Mutual Aid",
}
pytestmark = pytest.mark.timeout(120)


@dataclass
class Scenario:
    root: Path
    clock: SetClock
    served: Served
    ids: dict[str, str] = field(default_factory=dict)  # placeholder -> full id

    def node(self, club: str) -> Path:
        return self.root / club

    def cli(self, club: str, *args: str, code: int = 0) -> Run:
        return run_cli(self.node(club), *args, code=code)

    def post(self, club: str, name: str, *args: str) -> str:
        event = json.loads(self.cli(club, "post", *args, "--json").out)["id"]
        self.ids[name] = event
        self.served.refresh()
        return str(event)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("rendering")
    clock = SetClock("2026-11-20T10:00+01:00")
    with fixed_time(clock, ZONE):
        served = Served(clock)
        s = Scenario(root, clock, served)
        try:
            for club, name in CLUBS.items():
                s.ids[club] = create(s.node(club), name, clock).hex()
                served.start(s.node(club))
            for other in ("northside", "harbour", "westbank"):
                served.federate(s.node("riverside"), s.node(other))
            _fill(s)
            yield s
        finally:
            served.close()


def _fill(s: Scenario) -> None:
    """What the clubs did in November, at fixed times."""
    s.clock.set("2026-11-21T09:15+01:00")
    s.post(
        "riverside",
        "post_leaflets",
        "action",
        "--audience=federation",
        "--what=Leafleting the Elm estate",
        "--where=Elm estate, blocks A-D",
        "--starts=2026-11-21T11:00+01:00",
        "--participants=6",
    )
    s.clock.set("2026-11-28T19:30+01:00")
    s.post(
        "riverside",
        "post_thanks",
        "note",
        "--audience=public",
        "--text=Thanks to the 40 neighbours who came to the rent meeting on Thursday!",
    )
    s.post(
        "riverside",
        "post_report",
        "report",
        "--member=ana",
        "--period=2026-11",
        "--text=door-knocked 30 flats",
    )
    s.clock.set("2026-11-29T10:00+01:00")
    s.post(
        "riverside",
        "post_rent",
        "campaign",
        "--audience=federation",
        "--campaign=rent",
        "--op=created",
        "--title=Rent strike at Elm estate",
    )
    s.post(
        "riverside",
        "post_picket",
        "action",
        "--audience=federation",
        "--what=Picket at the depot",
        "--where=Depot gates, Mill Road",
        "--starts=2026-12-03T18:00+01:00",
        "--ends=2026-12-03T20:00+01:00",
    )
    # Two named audiences whose names, cut to fit, would read the same.
    s.post(
        "riverside",
        "post_banner",
        "action",
        "--audience=clubs:Harbour Reading Group,Northside Workers' Club",
        "--what=Banner painting",
        "--where=Harbour hall",
        "--starts=2026-12-06T14:00+01:00",
    )
    s.clock.set("2026-11-29T10:05+01:00")
    s.post(
        "riverside",
        "post_joint",
        "note",
        "--audience=clubs:Harbour Reading Group,Northside Workers' Club,Westbank Mutual Aid",
        "--text=Coordination call on Sunday",
    )
    s.clock.set("2026-11-30T12:00+01:00")
    s.post(
        "northside",
        "post_march",
        "action",
        "--audience=public",
        "--what=March for the pay claim",
        "--where=Town hall square",
        "--starts=2026-12-05T12:00+01:00",
    )
    s.cli("riverside", "peers", "pause", "Westbank Mutual Aid")
    s.served.refresh()
    # Northside fetches what Riverside holds for it; then Riverside syncs with its
    # active peers, and sees from Northside's frontier that Northside holds its logs.
    s.clock.set("2026-12-01T17:00+01:00")
    s.cli("northside", "sync")
    s.served.refresh()
    s.cli("riverside", "sync")
    s.served.refresh()
    s.clock.set("2026-12-01T17:05+01:00")  # the reader looks five minutes later


# --- comparing with the expected text ----------------------------------------------------


def _tags(s: Scenario) -> dict[str, str]:
    """A tag for each id the output may show (random with the keys), as wide as the
    widest form shown and never hex: clubs by name, posts by what the test called
    them, other events by club, log and seq, `clubs-` logs by their clubs' count,
    signing keys by their club."""
    tags = {s.ids[c]: c.upper() for c in CLUBS}
    tags |= {s.ids[k]: k.removeprefix("post_").upper() for k in s.ids if k.startswith("post_")}
    key = {s.ids[c]: c for c in CLUBS}
    for club in CLUBS:
        for e in json.loads(s.cli(club, "log", "--json", "--limit", "1000").out):
            tag = f"{key[e['club']][:3]}-{e['log_name'][:3]}{e['seq']}".upper()
            tags.setdefault(e["id"], tag)
        status = json.loads(s.cli(club, "status", "--json").out)
        if "signing_key" in status:  # the key in use, shown by the start of its hex
            tags[status["signing_key"]["key"]] = f"{club}-key".upper()
        for log in status["logs"]:
            if log["name"].startswith("clubs-"):
                count = len(log["audience"].split(","))
                tags[log["name"].removeprefix("clubs-")] = f"AUD-{count}-CLUBS"
    return tags


def normalised(s: Scenario, out: str) -> str:
    """`out` with each id, whole or a prefix of 6, 8 or 12 digits, as its tag, padded
    with "_" to the width it replaces (so columns stay aligned)."""
    for real, tag in sorted(_tags(s).items(), key=lambda kv: -len(kv[0])):
        for n in (64, 12, 8, 6):
            if n <= len(real):
                out = re.sub(rf"\b{real[:n]}\b", tag[:n].ljust(n, "_"), out)
        if tag.startswith("AUD-"):  # a `clubs-` log's name, cut to fit: "clubs-9b2…"
            for n in range(len(real), 0, -1):
                out = out.replace(f"clubs-{real[:n]}…", f"clubs-{tag[:n]}…")
    return out


def expect(s: Scenario, name: str, out: str) -> None:
    """`out` is the expected text (ids normalised), fits 80 columns, names no club by id."""
    path = EXPECTED / f"{name}.txt"
    shown = normalised(s, out)
    if os.environ.get("FEDERATION_WRITE_EXPECTED"):
        path.write_text(shown)
    assert shown == path.read_text(), f"{name}: output differs from {path}:\n{shown}"
    lines = out.splitlines()
    check_widths(lines)
    clubs = [s.ids[c] for c in CLUBS]
    for line in lines:
        if line.startswith("id "):  # status names the club's own id, once
            continue
        assert not any(c[:6] in line for c in clubs), f"a club id in a listing: {line!r}"


# --- the tests --------------------------------------------------------------------------


def test_log(scenario: Scenario) -> None:
    expect(scenario, "log", scenario.cli("riverside", "log").out)


def test_status(scenario: Scenario) -> None:
    out = scenario.cli("riverside", "status").out
    expect(scenario, "status", out)
    assert "events   13 events in 9 logs" in out
    # The two `clubs:` logs, both cut to fit, still read differently.
    audiences = [line[22:56] for line in out.splitlines() if line.startswith("  clubs-")]
    assert len(audiences) == len(set(audiences)) == 2, audiences


def test_peers_list(scenario: Scenario) -> None:
    expect(scenario, "peers_list", scenario.cli("riverside", "peers", "list").out)


def test_calendar(scenario: Scenario) -> None:
    expect(scenario, "calendar", scenario.cli("riverside", "calendar").out)


def test_calendar_past(scenario: Scenario) -> None:
    expect(scenario, "calendar_past", scenario.cli("riverside", "calendar", "--past").out)


def test_campaigns(scenario: Scenario) -> None:
    expect(scenario, "campaigns", scenario.cli("riverside", "campaigns").out)


def test_calendar_names_the_club_and_writes_icalendar(scenario: Scenario) -> None:
    ics = scenario.root / "upcoming.ics"
    run = scenario.cli(
        "riverside", "calendar", "--club", "northside workers' club", "--ics", str(ics)
    )
    header, march, wrote = run.out.splitlines()
    assert header.startswith("WHEN ")
    assert march.startswith("2026-12-05 12:00 CET  Northside Work")
    assert "March for the pay claim" in march
    assert wrote == f"wrote 1 action to {ics}"
    assert ics.stat().st_mode & 0o777 == 0o600  # the actions may be the federation's only
    calendar = icalendar.Calendar.from_ical(ics.read_bytes())
    (event,) = calendar.walk("VEVENT")
    assert str(event["summary"]) == "Northside Workers' Club: March for the pay claim"
    assert str(event["location"]) == "Town hall square"
    assert event.decoded("dtstart") == dt.datetime(2026, 12, 5, 11, 0, tzinfo=dt.UTC)
    assert scenario.ids["post_march"] in str(event["description"])
    # An existing file is never overwritten.
    again = scenario.cli("riverside", "calendar", "--ics", str(ics), code=2)
    assert "already exists" in again.err
    assert len(icalendar.Calendar.from_ical(ics.read_bytes()).walk("VEVENT")) == 1


def test_calendar_json_keeps_ids_and_adds_names(scenario: Scenario) -> None:
    items = json.loads(scenario.cli("riverside", "calendar", "--json").out)
    assert [i["event"] for i in items] == [
        scenario.ids["post_picket"],
        scenario.ids["post_march"],
        scenario.ids["post_banner"],
    ]
    assert [i["club_name"] for i in items] == [
        CLUBS["riverside"],
        CLUBS["northside"],
        CLUBS["riverside"],
    ]
    assert items[0]["club"] == scenario.ids["riverside"]
    assert items[0]["starts"] == "2026-12-03T18:00:00+01:00"  # as posted, with its zone
    past = json.loads(scenario.cli("riverside", "calendar", "--past", "--json").out)
    assert [(i["event"], i["participants"]) for i in past] == [(scenario.ids["post_leaflets"], 6)]


def test_log_json_keeps_ids_and_adds_names(scenario: Scenario) -> None:
    events = json.loads(scenario.cli("riverside", "log", "--json", "--kind", "action").out)
    by_id = {e["id"]: e for e in events}
    march = by_id[scenario.ids["post_march"]]
    assert march["club"] == scenario.ids["northside"]
    assert march["club_name"] == CLUBS["northside"]
    assert march["time"] == "2026-11-30 11:00:00Z"  # JSON stays in UTC, to the second


def test_the_reader_zone_is_honoured(scenario: Scenario) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TZ", "America/New_York")
        out = scenario.cli("riverside", "calendar").out.splitlines()
    assert out[1].startswith("2026-12-03 12:00 EST  Riverside")
    check_widths(out)


def test_an_erased_action_is_not_listed(tmp_path: Path) -> None:
    clock = SetClock("2026-12-01T12:00+01:00")
    node = tmp_path / "club"
    with fixed_time(clock, ZONE):
        create(node, "Eastside Renters", clock)
        posted = run_cli(
            node, "post", "action", "--what=Vigil", "--starts=2026-12-10T18:00+01:00", "--json"
        )
        event = json.loads(posted.out)["id"]
        assert run_cli(node, "calendar").out.splitlines()[1].startswith("2026-12-10 18:00 CET")
        run_cli(node, "erase", event)
        assert run_cli(node, "calendar").out.splitlines() == [
            "no upcoming actions (--past: those over)"
        ]
        assert run_cli(node, "calendar", "--past").out.splitlines() == ["no past actions"]
        assert json.loads(run_cli(node, "calendar", "--json").out) == []
        assert "[erased]" not in run_cli(node, "calendar", "--past").out


# --- the pieces, one by one ---------------------------------------------------------------


def test_plurals() -> None:
    assert plural(0, "event") == "0 events"
    assert plural(1, "event") == "1 event"
    assert plural(2, "update") == "2 updates"
    assert plural(1, "person", "people") == "1 person"
    assert plural(3, "person", "people") == "3 people"


def test_times_in_the_reader_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    winter = dt.datetime(2026, 12, 3, 17, 0, tzinfo=dt.UTC)
    summer = dt.datetime(2026, 7, 3, 17, 0, tzinfo=dt.UTC)
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert format_when(winter) == "2026-12-03 18:00 CET"
    assert format_when(summer) == "2026-07-03 19:00 CEST"
    assert format_when(int(winter.timestamp() * 1_000_000)) == "2026-12-03 18:00 CET"
    assert format_when(winter.replace(tzinfo=None)) == "2026-12-03 18:00 CET"  # no zone: UTC
    monkeypatch.setenv("TZ", "UTC")
    assert format_when(winter) == "2026-12-03 17:00 UTC"
    now = int(winter.timestamp() * 1_000_000)
    assert format_ago(now, 0) == "never"
    assert format_ago(now, now - 1_000_000) == "1 s ago"
    assert format_ago(now, now - 300_000_000) == "5 min ago"
    assert format_ago(now, now - 3 * 3600_000_000) == "3 h ago"
    assert format_ago(now, now - 3 * 86400_000_000) == "2026-11-30 17:00 UTC"


def test_widths_count_wide_characters_and_escapes() -> None:
    assert width("abc") == 3
    assert width("中文") == 4
    assert width("e\u0301") == 1  # a combining accent takes no column
    assert cut("Picket at the depot", 10) == "Picket at…"
    assert cut("中文中文中文", 5) == "中文…"
    assert width(cut("中文中文中文", 5)) <= 5


def test_other_clubs_text_is_escaped_before_it_is_measured() -> None:
    hostile = "Evil\x1b[2J\u202eclub\nfake line"
    assert escape_unsafe(hostile) != hostile  # the positive control: it needs escaping
    lines = table(
        [Column("CLUB", least=8), Column("WHAT", least=8, weight=2)],
        [(hostile, "March " * 20), ("中文俱乐部" * 4, "Picket")],
        40,
    )
    for line in lines:
        assert width(line) <= 40
        assert line.isprintable()
    assert lines[1].startswith("Evil\\x1b[2J")


def test_every_table_fits_however_narrow() -> None:
    rows = [("Riverside Tenants' Union", "federation", "Picket at the depot, Mill Road")]
    columns = [Column("CLUB"), Column("LOG", least=None), Column("WHAT", weight=3)]
    for total in range(20, 100):
        assert all(width(line) <= total for line in table(columns, rows, total)), total


def test_a_name_two_clubs_share_is_told_apart() -> None:
    a, b, c = (bytes([i]) * 32 for i in (0xAA, 0xBB, 0xCC))
    labels = Labels({a: "Northside", b: "northside", c: "Harbour"})
    assert labels(a) == "Northside (aaaaaaaa)"
    assert labels(b) == "northside (bbbbbbbb)"
    assert labels(c) == "Harbour"
    assert labels(bytes(32)) == "club 00000000"
    # Names that read the same once cut keep the start of their ids instead.
    long = Labels({a: "Northside Workers' Club East", b: "Northside Workers' Club West"})
    assert long.fitted([a, b], 16) == {a: "Norths… aaaaaaaa", b: "Norths… bbbbbbbb"}
    assert long.fitted([a, b], 40) == {a: long(a), b: long(b)}  # uncut: the names differ


def test_proposals_name_their_clubs(tmp_path: Path) -> None:
    clock = SetClock("2026-12-01T12:00+01:00")
    node = {club: tmp_path / club for club in ("riverside", "northside")}
    with fixed_time(clock, ZONE):
        ids = {club: create(root, CLUBS[club], clock).hex() for club, root in node.items()}
        for a, b in (("riverside", "northside"), ("northside", "riverside")):
            invite = run_cli(node[a], "invite", "--url", "http://127.0.0.1:9").out.strip()
            run_cli(node[b], "peers", "add", invite)
        clock.set("2026-12-01T12:30+01:00")
        proposed = run_cli(
            node["riverside"],
            "proposal",
            "new",
            "--title=Day of action for the pay claim and the rent strike together",
            "--to=Northside Workers' Club",
            "--deadline=2026-12-20T18:00+01:00",
            "--ask=Northside Workers' Club=Bring the banner",
            "--action=March@Town hall square@2026-12-20T12:00+01:00",
        )
        proposal = proposed.out.split()[-1]
        listed = run_cli(node["riverside"], "proposal", "list").out.splitlines()
        shown = run_cli(node["riverside"], "proposal", "show", proposal[:8]).out.splitlines()
    assert listed[0].split() == ["ID", "STATE", "TITLE", "FROM"]
    assert listed[1].startswith(f"{proposal[:8]}  open ")
    assert "Day of action for the pay claim" in listed[1]
    assert "  Riverside Tenants" in listed[1]  # the proposer, by name (cut to fit)
    assert f"  asks {CLUBS['northside']}: Bring the banner" in shown
    assert "  action: March @ Town hall square, 2026-12-20 12:00 CET" in shown
    assert any(f"still needed: {CLUBS['northside']}" in line for line in shown)
    assert any("deadline 2026-12-20 18:00 CET; proposer Riverside" in line for line in shown)
    for line in listed + shown:
        assert width(line) <= 80, line
        assert not any(club[:6] in line for club in ids.values()), f"a club id: {line!r}"


def test_the_width_is_the_terminals_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert terminal_width() == 80  # standard output is captured here: not a terminal
    controller, terminal = os.openpty()
    try:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 123, 0, 0))
        with os.fdopen(os.dup(terminal), "w") as tty:
            monkeypatch.setattr(sys, "stdout", tty)
            assert terminal_width() == 123
            rows = [("Riverside Tenants' Union", "Picket at the depot, Mill Road " * 5)]
            lines = table([Column("CLUB"), Column("WHAT", weight=3)], rows, terminal_width())
            assert max(width(line) for line in lines) == 123
    finally:
        os.close(controller)
        os.close(terminal)


def test_long_sentences_wrap_under_their_label_or_indent() -> None:
    key = "key      UNENCRYPTED on disk: club.key holds the store key, so a copy of this"
    assert fit([key + " directory reads every log", "short"], 60) == [
        "key      UNENCRYPTED on disk: club.key holds the store key,",
        "         so a copy of this directory reads every log",
        "short",
    ]
    said = "  log federation: delivered to Northside\x1b[2J; not yet to Harbour Reading Group"
    lines = fit([said], 40)
    assert lines == [
        "  log federation: delivered to",
        "      Northside\\x1b[2J; not yet to",
        "      Harbour Reading Group",
    ]
    assert all(width(line) <= 40 and line.isprintable() for line in lines)


def test_delivery_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", ZONE)
    now = int(dt.datetime(2026, 12, 1, 17, 0, tzinfo=dt.UTC).timestamp() * 1_000_000)
    ours, north, east, west = (bytes([i]) * 32 for i in (1, 2, 3, 4))
    federation = LogRecord(
        bytes([9]) * 32, b"", ours, "federation", Audience("federation"), None, False
    )
    known = Labels({ours: "Riverside", north: "Northside", east: "Eastside", west: "Westbank"})

    def log(held: int) -> LogDelivery:
        return LogDelivery(federation.id, "federation", "federation", 4, held, 0)

    found = [
        PeerDelivery(north, "Northside", "active", now - 60_000_000, None, [log(4)]),
        PeerDelivery(east, "Eastside", "active", now - 3 * 3600_000_000, None, [log(2)]),
        PeerDelivery(
            west,
            "Westbank",
            "active",
            now - 86400_000_000,
            Refusal(now - 7200_000_000, NOT_A_PEER),
            [log(0)],
        ),
    ]
    assert delivery_lines(found, [federation], known, now) == [
        "delivery:",
        "  log federation: delivered to Northside; not yet to Eastside (last contact 3 h "
        "ago), Westbank (last contact 24 h ago)",
        "  Westbank no longer accepts our requests since 2026-12-01 16:00 CET (paused or "
        "removed us)",
    ]


# Any text a club could write: every script, wide characters, combining marks, and the
# characters a terminal would act on.
_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x1b", "\n", "\u202e", "\u200b", "中", "\u0301", "😀"]),
    ),
    max_size=60,
)


@given(
    rows=st.lists(st.tuples(_TEXT, _TEXT, st.integers(0, 10**6)), max_size=5),
    total=st.integers(20, 160),
)
def test_any_table_fits_and_is_safe(rows: list[tuple[str, str, int]], total: int) -> None:
    columns = [Column("CLUB", least=10), Column("WHAT", weight=2), Column("N", right=True)]
    lines = table(columns, rows, total)
    assert len(lines) == len(rows) + 1
    for line in lines:
        assert width(line) <= total
        assert escape_unsafe(line) == line  # nothing left for a terminal to act on


@given(text=_TEXT, columns=st.integers(0, 40))
def test_a_cut_never_overflows(text: str, columns: int) -> None:
    safe = escape_unsafe(text)
    assert width(cut(safe, columns)) <= columns
    if width(safe) <= columns:
        assert cut(safe, columns) == safe
