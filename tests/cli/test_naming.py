"""One way to name a club or an event (issue 12): the pure rule (core/naming.py), and
every command that names one, through the real CLI on real node directories.

Club A's node knows peers "Weston Climate Bloc", "Harbour" and "harbour" (two clubs,
one name but for case), from their invites; no node runs: naming needs none.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.core.naming import (
    MIN_PREFIX_HEX,
    Named,
    fold,
    hex_prefix,
    resolve_club,
    resolve_id,
)
from federation.errors import UsageError
from tests.cli.test_cli import Run, cli, cli_quiet, ok

pytestmark = pytest.mark.timeout(60)

# --- the pure rule ----------------------------------------------------------------------

NORTH = bytes.fromhex("ab12cd" + "00" * 29)
NORTH_TWIN = bytes.fromhex("ab12ce" + "11" * 29)  # shares five digits with NORTH
EAST = bytes.fromhex("ee" * 32)
KNOWN = [Named(NORTH, "Northside"), Named(NORTH_TWIN, "Harbour"), Named(EAST, "Eastside")]


def test_a_club_by_name_any_case_or_by_a_six_digit_prefix() -> None:
    assert resolve_club("northside", KNOWN) == NORTH
    assert resolve_club("  EASTSIDE ", KNOWN) == EAST
    assert resolve_club("ab12cd", KNOWN) == NORTH
    assert resolve_club(EAST.hex(), KNOWN) == EAST
    assert resolve_club("AB12CE", KNOWN) == NORTH_TWIN


def test_too_short_a_prefix_or_an_unknown_name_lists_what_is_known() -> None:
    with pytest.raises(UsageError) as short:
        resolve_club("ab12c", KNOWN)  # five digits: below MIN_PREFIX_HEX
    assert MIN_PREFIX_HEX == 6
    assert f"at least {MIN_PREFIX_HEX} hex digits" in str(short.value)
    with pytest.raises(UsageError) as unknown:
        resolve_club("Westside", KNOWN)
    text = str(unknown.value)
    assert "no club 'Westside' here" in text
    assert "'Northside' ab12cd000000" in text  # the candidates: name and short id


def test_an_ambiguous_reference_lists_the_candidates() -> None:
    twins = [*KNOWN, Named(bytes.fromhex("cc" * 32), "NORTHSIDE")]
    with pytest.raises(UsageError) as named:
        resolve_club("northside", twins)
    assert "names more than one club" in str(named.value)
    assert "ab12cd000000" in str(named.value)
    assert "cccccccccccc" in str(named.value)
    # A name that is also another club's id prefix names both: refused, never a guess.
    hexname = [*KNOWN, Named(bytes.fromhex("dd" * 32), "ab12cd")]
    with pytest.raises(UsageError, match="names more than one club"):
        resolve_club("ab12cd", hexname)


def test_a_name_we_gave_outranks_a_name_another_club_wrote() -> None:
    squatter = bytes.fromhex("99" * 32)
    known = [*KNOWN, Named(squatter, "Northside", trusted=False)]
    assert resolve_club("Northside", known) == NORTH
    # With no name of ours, another club's roster name is used.
    assert resolve_club("Westside", [*KNOWN, Named(squatter, "Westside", trusted=False)]) == (
        squatter
    )


def test_names_in_errors_cannot_act_on_a_terminal() -> None:
    evil = Named(bytes.fromhex("cd" * 32), "Harbour\x1b[2J\u202e")
    with pytest.raises(UsageError) as exc:
        resolve_club("nowhere", [evil])
    text = str(exc.value)
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "\\x1b[2J\\u202e" in text  # shown, escaped (repr), not obeyed


@given(
    st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=8, unique=True),
    st.lists(st.text(min_size=1, max_size=12), min_size=8, max_size=8),
    st.data(),
)
def test_the_rule_names_exactly_the_unique_matches(
    ids: list[bytes], names: list[str], data: st.DataObject
) -> None:
    """Any club: its whole id names it; a prefix or a name names it exactly when no
    other club shares that prefix or (case-insensitively) that name; else refused."""
    known = [Named(c, n) for c, n in zip(ids, names, strict=False)]
    club = data.draw(st.sampled_from(known))
    assert resolve_club(club.id.hex().upper(), known) == club.id
    length = data.draw(st.integers(MIN_PREFIX_HEX, 64))
    prefix = club.id.hex()[:length]
    sharing = {k.id for k in known if k.id.hex().startswith(prefix)}
    sharing |= {k.id for k in known if fold(k.name) == prefix}
    other_case = club.name.swapcase()
    by_name = {k.id for k in known if fold(other_case) and fold(k.name) == fold(other_case)}
    as_hex = hex_prefix(other_case)
    by_name |= {k.id for k in known if as_hex and k.id.hex().startswith(as_hex)}
    for ref, found in ((prefix, sharing), (other_case, by_name)):
        if len(found) == 1:
            assert resolve_club(ref, known) == found.pop()
        else:
            with pytest.raises(UsageError):
                resolve_club(ref, known)


def test_an_event_id_by_prefix() -> None:
    ids = [bytes.fromhex("aa" * 32), bytes.fromhex("aabbcc" + "00" * 29)]
    assert resolve_id("aabbcc", ids, what="event", labels={}) == ids[1]
    with pytest.raises(UsageError, match="ambiguous"):
        resolve_id(
            "aaaaaa"[:6], [ids[0], bytes.fromhex("aaaaaa" + "11" * 29)], what="event", labels={}
        )
    with pytest.raises(UsageError, match="at least 6 hex digits"):
        resolve_id("aabbc", ids, what="event", labels={})


# --- through the CLI ----------------------------------------------------------------------


def init(root: Path, name: str) -> str:
    run = cli_quiet(root, "init", "--name", name, "--plain-http", "--no-passphrase")
    return ok(run).out.split()[0]


def refused(run: Run, *fragments: str) -> str:
    assert run.code == 2, run
    line = run.error_line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture
def a(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Club A with three peers: "Weston Climate Bloc", "Harbour" and "harbour"."""
    root = tmp_path / "a"
    init(root, "Club A")
    ids = {}
    for i, name in enumerate(("Weston Climate Bloc", "Harbour", "harbour")):
        other = tmp_path / f"p{i}"
        ids[name] = init(other, name)
        invite = ok(cli_quiet(other, "invite", "--url", f"http://127.0.0.1:{9 + i}")).out.strip()
        ok(cli_quiet(root, "peers", "add", invite))
    return root, ids


def test_log_club_by_name(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, dict[str, str]]
) -> None:
    root, _ = a
    posted = ok(cli(capsys, root, "post", "note", "--text", "hello", "--json")).json()
    by_name = ok(cli(capsys, root, "log", "--club", "CLUB A", "--kind", "note", "--json")).json()
    assert [e["id"] for e in by_name] == [posted["id"]]
    by_id = cli(capsys, root, "log", "--club", posted["club"][:6], "--kind", "note", "--json")
    assert ok(by_id).json() == by_name
    # A peer's name resolves too (it holds none of its events yet: an empty list).
    assert ok(cli(capsys, root, "log", "--club", "weston climate bloc", "--json")).json() == []
    refused(cli(capsys, root, "log", "--club", "Weston"), "no club 'Weston' here")


def test_show_and_erase_take_six_digits(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, dict[str, str]]
) -> None:
    root, _ = a
    posted = ok(cli(capsys, root, "post", "note", "--text", "hello", "--json")).json()
    shown = ok(cli(capsys, root, "show", posted["id"][:6].upper(), "--json")).json()
    assert shown["id"] == posted["id"]
    refused(cli(capsys, root, "show", posted["id"][:5]), "at least 6 hex digits")
    erased = ok(cli(capsys, root, "erase", posted["id"][:6], "--json")).json()
    assert erased["id"] == posted["id"]


def test_peers_and_sync_by_name_any_case(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, dict[str, str]]
) -> None:
    root, ids = a
    paused = ok(cli(capsys, root, "peers", "pause", "WESTON climate bloc", "--json")).json()
    assert (paused["club"], paused["state"]) == (ids["Weston Climate Bloc"], "paused")
    resumed = ok(cli(capsys, root, "peers", "resume", ids["Weston Climate Bloc"][:6], "--json"))
    assert resumed.json()["state"] == "active"
    # Two peers called Harbour but for case: the name is ambiguous, and both are listed.
    line = refused(cli(capsys, root, "peers", "pause", "harbour"), "names more than one peer")
    assert ids["Harbour"][:12] in line
    assert ids["harbour"][:12] in line
    # `sync NAME` names the peer the same way; the peer is down, so the round fails, but
    # after naming it (exit 1, not a usage error).
    synced = cli(capsys, root, "sync", "weston climate bloc")
    assert synced.code == 1, synced
    refused(cli(capsys, root, "sync", "nobody"), "no peer 'nobody' here")


def test_post_audience_by_names_and_prefixes(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, dict[str, str]]
) -> None:
    root, ids = a
    weston, harbour = ids["Weston Climate Bloc"], ids["Harbour"]
    audience = f"clubs:weston climate bloc,{harbour[:8]}"
    posted = ok(cli(capsys, root, "post", "note", "--text", "x", "--audience", audience, "--json"))
    assert posted.json()["audience"] == "clubs:" + ",".join(sorted([weston, harbour]))
    refused(
        cli(capsys, root, "post", "note", "--text", "x", "--audience", "clubs:harbour"),
        "names more than one club",
    )


def test_block_and_unblock_by_the_same_rule(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, dict[str, str]]
) -> None:
    root, ids = a
    ok(cli(capsys, root, "peers", "remove", "Weston Climate Bloc"))
    # Still known by the name our roster gave it: blocked by name, unblocked by prefix.
    blocked = ok(cli(capsys, root, "block", "weston climate bloc", "--json")).json()
    assert blocked["club"] == ids["Weston Climate Bloc"]
    refused(cli(capsys, root, "unblock", "Harbour"), "no blocked club 'Harbour'")
    unblocked = ok(cli(capsys, root, "unblock", ids["Weston Climate Bloc"][:6], "--json"))
    assert unblocked.json()["club"] == ids["Weston Climate Bloc"]


def test_proposals_name_clubs_and_proposals_alike(
    capsys: pytest.CaptureFixture[str], a: tuple[Path, dict[str, str]]
) -> None:
    root, ids = a
    args = ["proposal", "new", "--title", "Rent strike", "--deadline", "2030-01-01T12:00Z"]
    ok(cli(capsys, root, *args, "--to", "weston climate bloc", "--to", ids["harbour"][:6]))
    (listed,) = ok(cli(capsys, root, "proposal", "list", "--json")).json()
    proposal = listed["proposal"]
    assert sorted(listed["invited"]) == sorted([ids["Weston Climate Bloc"], ids["harbour"]])
    shown = ok(cli(capsys, root, "proposal", "show", proposal[:6], "--json")).json()
    assert shown["proposal"] == proposal
    refused(cli(capsys, root, "proposal", "show", proposal[:5]), "at least 6 hex digits")
