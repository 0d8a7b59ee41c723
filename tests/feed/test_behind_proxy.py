"""Behind a reverse proxy named in `[feed] trusted_proxies`, what the feed counts per
request (the request rate, live streams, the cache's budget) is counted per client the
proxy forwards for, by the rightmost untrusted address of X-Forwarded-For
(`feed_guard.client_address`); from any other peer the header is ignored, so nobody
can pick the address it is counted as. Connections stay the TCP peer's (the gate
counts them before HTTP is read).

Real HTTP to a real feed on 127.0.0.1. The "proxy" is this test's client on
127.0.0.1, sending the X-Forwarded-For a proxy would; an untrusted peer comes from
127.0.0.2 (all of 127/8 is loopback on Linux). Clients are named by documentation
addresses (RFC 5737, RFC 3849).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.cli.main import main
from federation.core.config import parse_config, parse_trusted_proxies
from federation.errors import ConfigError
from federation.node.node import Node
from federation.service import open_service
from federation.web.feed import CACHE, LIMITER, LIMITS, LIVE, RESPONSE_CACHE_PER_ADDRESS
from federation.web.feed_guard import FeedLimits, client_address
from tests.cli.test_cli import Run, cli
from tests.feed.support import FeedClient, feed_federation

pytestmark = pytest.mark.timeout(60)
WAIT_S = 5.0
PROXY = parse_trusted_proxies(("127.0.0.1",))
ALICE, BOB = "198.51.100.1", "198.51.100.2"


def slow(**more: Any) -> FeedLimits:
    """Buckets of 5 that refill a token in 100 s: no test here runs long enough to be
    given one back."""
    return FeedLimits(requests_per_s=0.01, burst=5, response_cache_s=0.0, **more)


def xff(*values: str) -> dict[str, str]:
    return {"X-Forwarded-For": ", ".join(values)}


@contextlib.asynccontextmanager
async def client_from(feed: FeedClient, source: str) -> AsyncIterator[FeedClient]:
    """A client of the same feed whose connections come from `source` (127.0.0.x)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        yield FeedClient(feed.server, http)


async def status(feed: FeedClient, headers: Any = None) -> int:
    return (await feed.fetch("/openapi.json", headers=headers))[0]


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S} s: {what}"
        await asyncio.sleep(0.02)


# --- the rule, pure ---------------------------------------------------------------------

NETS = parse_trusted_proxies(("127.0.0.1", "10.0.0.0/8", "2001:db8:ffff::/48"))
RULE_CASES = {
    # peer, X-Forwarded-For lines, the client counted
    "no header from the proxy: the proxy": ("127.0.0.1", [], "127.0.0.1"),
    "the client the proxy names": ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
    "fakes left of it are the client's own writing": (
        "127.0.0.1",
        ["203.0.113.9, 10.0.0.1, 198.51.100.1"],
        "198.51.100.1",
    ),
    "a chain of trusted proxies is walked": (
        "127.0.0.1",
        ["203.0.113.9, 198.51.100.1, 10.1.2.3, 10.0.0.1"],
        "198.51.100.1",
    ),
    "header lines are one list, in order": (
        "127.0.0.1",
        ["203.0.113.9", "198.51.100.1,10.0.0.1"],
        "198.51.100.1",
    ),
    "empty elements skipped": ("127.0.0.1", [" , 198.51.100.1 ,, "], "198.51.100.1"),
    "all trusted: the leftmost": ("127.0.0.1", ["10.0.0.7, 10.0.0.1"], "10.0.0.7"),
    "an untrusted peer's header is ignored": ("127.0.0.2", ["198.51.100.1"], "127.0.0.2"),
    "a name from the proxy: the proxy": ("127.0.0.1", ["client.example"], "127.0.0.1"),
    "unknown from the proxy: the proxy": ("127.0.0.1", ["unknown"], "127.0.0.1"),
    "an address with a port: the proxy": ("127.0.0.1", ["198.51.100.1:443"], "127.0.0.1"),
    "a bad element reached through trusted ones: the proxy": (
        "127.0.0.1",
        ["garbage, 10.0.0.1"],
        "127.0.0.1",
    ),
    "a bad element left of the client is not read": (
        "127.0.0.1",
        ["garbage, 198.51.100.1"],
        "198.51.100.1",
    ),
    "an IPv6 client: its /64": ("127.0.0.1", ["2001:db8:1:2::99"], "2001:db8:1:2::/64"),
    "an IPv6 proxy of a trusted network": (
        "2001:db8:ffff::5",
        ["198.51.100.1"],
        "198.51.100.1",
    ),
    "an IPv6 peer not trusted: its /64": ("2001:db8:1:2::5", ["198.51.100.1"], "2001:db8:1:2::/64"),
    "the proxy as an IPv4-mapped peer": ("::ffff:127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
    "a mapped client is its IPv4 host": ("127.0.0.1", ["::ffff:198.51.100.1"], "198.51.100.1"),
}


@pytest.mark.parametrize("case", RULE_CASES)
def test_the_client_is_the_rightmost_untrusted_address(case: str) -> None:
    peer, lines, expected = RULE_CASES[case]
    assert client_address(peer, lines, NETS) == expected
    # Nothing trusted: the peer, whatever the header says (positive control of the
    # cases above that name another address).
    assert client_address(peer, lines, ()) == client_address(peer, [], ())


# --- over HTTP --------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [True, False], ids=["proxy trusted", "proxy not trusted"])
async def test_each_forwarded_client_has_its_own_live_streams(
    tmp_path: Path, trusted: bool
) -> None:
    """Was: behind a proxy every reader was the proxy's address, so live_per_address
    streams served the whole public (the "not trusted" case still shows it)."""
    limits = FeedLimits(
        live_clients=8,
        live_per_address=2,
        response_cache_s=0.0,
        trusted_proxies=PROXY if trusted else (),
    )
    async with feed_federation(tmp_path, ("a",), limits) as (_, feed):
        slots = feed.server.app[LIVE]

        async def live(who: str) -> aiohttp.ClientResponse:
            return await feed.http.get(feed.base + "/live", headers=xff(who))

        held = [await live(ALICE) for _ in range(2)]
        assert [r.status for r in held] == [200, 200]
        third = await live(ALICE)
        assert third.status == 429
        third.close()
        bob = [await live(BOB) for _ in range(3)]
        held += bob
        if trusted:
            assert [r.status for r in bob] == [200, 200, 429]  # his own share of 2
            assert slots.held == 4
        else:
            assert [r.status for r in bob] == [429, 429, 429]  # the proxy's share is spent
            assert slots.held == 2
        for response in held:
            response.close()
        await wait_until(lambda: slots.held == 0, "every slot given back")


async def test_each_forwarded_client_has_its_own_request_bucket(tmp_path: Path) -> None:
    async with feed_federation(tmp_path, ("a",), slow(trusted_proxies=PROXY)) as (_, feed):
        assert [await status(feed, xff(ALICE)) for _ in range(6)] == [200] * 5 + [429]
        assert await status(feed, xff(BOB)) == 200
        assert await status(feed) == 200  # the proxy's own requests: a bucket of their own
        # Alice cannot leave her bucket by writing addresses left of hers (a proxy
        # appends hers to whatever she sent: in one line, or as a line after hers).
        for headers in (
            xff("203.0.113.9", ALICE),
            xff("127.0.0.1", ALICE),  # a trusted address written by her is hers too
            [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", ALICE)],
        ):
            assert await status(feed, headers) == 429, headers
        # One IPv6 host is its /64, through the proxy as directly.
        statuses = [await status(feed, xff(f"2001:db8:1:2::{i}")) for i in range(1, 7)]
        assert statuses == [200] * 5 + [429]
        assert await status(feed, xff("2001:db8:1:3::1")) == 200
        assert len(feed.server.app[LIMITER]) == 5  # alice, bob, the proxy, two /64s


async def test_a_header_the_walk_cannot_read_counts_as_the_proxy(tmp_path: Path) -> None:
    async with feed_federation(tmp_path, ("a",), slow(trusted_proxies=PROXY)) as (_, feed):
        for value in ("unknown", "client.example", f"{ALICE}:443", "garbage, 127.0.0.1"):
            assert await status(feed, xff(value)) == 200
        assert await status(feed) == 200  # the proxy's fifth
        assert await status(feed, xff("unknown")) == 429
        assert await status(feed) == 429
        assert await status(feed, xff(ALICE)) == 200  # a client it names is apart


async def test_an_untrusted_peers_header_is_ignored(tmp_path: Path) -> None:
    """The spoofing control: from a peer not in trusted_proxies, a fresh
    X-Forwarded-For on every request is still counted as the peer."""
    fresh = [xff(f"203.0.113.{i}") for i in range(1, 7)]
    async with (
        feed_federation(tmp_path, ("a",), slow(trusted_proxies=PROXY)) as (_, feed),
        client_from(feed, "127.0.0.2") as spoofer,
    ):
        assert [await status(spoofer, h) for h in fresh] == [200] * 5 + [429]
        # Positive control: the same headers from the trusted proxy are six clients.
        assert [await status(feed, h) for h in fresh] == [200] * 6

    limits = FeedLimits(live_clients=8, live_per_address=2, trusted_proxies=PROXY)
    async with (
        feed_federation(tmp_path / "live", ("a",), limits) as (_, feed),
        client_from(feed, "127.0.0.2") as spoofer,
    ):
        slots = feed.server.app[LIVE]
        streams = [await spoofer.http.get(spoofer.base + "/live", headers=h) for h in fresh[:3]]
        assert [r.status for r in streams] == [200, 200, 429]  # 127.0.0.2's share of 2
        text = await streams[2].text()
        assert text.endswith("close one and try again\n"), text
        assert slots.held == 2
        for response in streams:
            response.close()
        await wait_until(lambda: slots.held == 0, "every slot given back")


async def test_each_forwarded_client_fills_only_its_share_of_the_cache(tmp_path: Path) -> None:
    limits = FeedLimits(burst=10_000, response_cache_s=600.0, trusted_proxies=PROXY)
    async with feed_federation(tmp_path, ("a",), limits) as (_, feed):
        cache = feed.server.app[CACHE]
        for limit in range(1, RESPONSE_CACHE_PER_ADDRESS + 11):
            assert (await feed.fetch(f"/feed.json?limit={limit}", headers=xff(ALICE)))[0] == 200
        assert len(cache) == RESPONSE_CACHE_PER_ADDRESS
        assert (await feed.fetch("/feed.json", headers=xff(BOB)))[0] == 200
        assert (await feed.fetch("/", headers=xff(BOB)))[0] == 200
        assert len(cache) == RESPONSE_CACHE_PER_ADDRESS + 2  # bob's answers are kept


# --- from config.toml ---------------------------------------------------------------------


def _init(root: Path, feed_extra: str = "") -> None:
    args = ["--node", str(root), "init", "--name", "Proxied club", "--listen", "127.0.0.1:0"]
    args += ["--no-passphrase", "--plain-http", "--feed-listen", "127.0.0.1:0"]
    assert main(args) == 0
    config = root / "config.toml"
    config.write_text(config.read_text() + feed_extra)


async def test_run_takes_trusted_proxies_from_config(tmp_path: Path) -> None:
    root = tmp_path / "club"
    await asyncio.to_thread(_init, root, 'trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]\n')
    async with (
        await Node.open(root) as node,
        open_service(node, port=0, feed_port=0) as service,
        aiohttp.ClientSession() as http,
    ):
        assert service.feed is not None
        app = service.feed.app
        assert app[LIMITS].trusted_proxies == (
            ipaddress.ip_network("127.0.0.1/32"),
            ipaddress.ip_network("10.0.0.0/8"),
        )
        feed = FeedClient(service.feed, http)
        for headers in (xff(ALICE), xff(BOB), xff("203.0.113.9", BOB, "10.0.0.1")):
            assert await status(feed, headers) == 200
        assert len(app[LIMITER]) == 2  # counted as alice and bob, not as the proxy


BAD_VALUES = {
    "not an address": ("proxy.example", "is not an IP address or network"),
    "host bits set": ("10.0.0.1/8", 'did you mean "10.0.0.0/8"?'),
    "prefix too long": ("10.0.0.0/33", "is not an IP address or network"),
    "empty": ("", "is not an IP address or network"),
    "everyone": ("0.0.0.0/0", "trusts every address"),
    "everyone, IPv6": ("::/0", "trusts every address"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_a_bad_trusted_proxy_is_refused_at_load(case: str) -> None:
    value, says = BAD_VALUES[case]
    base = '[club]\nname = "A"\nid = "' + "ab" * 32 + '"\n[feed]\nlisten = "127.0.0.1:8480"\n'
    good = parse_config(base + 'trusted_proxies = ["127.0.0.1", "::1", "fd00::/8"]\n')
    assert good.feed is not None
    assert len(good.feed.trusted_proxies) == 3
    with pytest.raises(ConfigError) as raised:
        parse_config(base + f'trusted_proxies = ["127.0.0.1", "{value}"]\n', "c.toml")
    message = str(raised.value)
    assert raised.value.field == "feed.trusted_proxies"
    assert message.startswith(f"c.toml: feed.trusted_proxies: {value!r} ")
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize("command", ["status", "run"])
def test_the_cli_refuses_a_bad_trusted_proxy_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    root = tmp_path / "club"
    _init(root, 'trusted_proxies = ["10.0.0.1/8"]\n')
    before = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    if command == "run":  # in a process of its own: it catches the stop signals for good
        done = subprocess.run(
            [sys.executable, "-m", "federation", "--node", str(root), "run"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        run = Run(done.returncode, done.stdout, done.stderr)
    else:
        run = cli(capsys, root, command)
    assert run.code == 2, run.err
    line = run.error_line
    # `run` logs it (a timestamp, ERROR); the other commands print it.
    assert line.startswith("federation: error: ") or " ERROR " in line, line
    assert f"{root / 'config.toml'}: feed.trusted_proxies: '10.0.0.1/8'" in line
    assert 'did you mean "10.0.0.0/8"?' in line
    assert {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} == before
    # Positive control: with the value it suggests, the same command gets past the config.
    config = root / "config.toml"
    config.write_text(config.read_text().replace("10.0.0.1/8", "10.0.0.0/8"))
    if command == "status":
        assert cli(capsys, root, command).code == 0


def test_the_readmes_example_loads() -> None:
    """README.md, "The public feed": its `trusted_proxies` example is a valid [feed]."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = [b for b in readme.split("```") if "trusted_proxies = " in b]
    assert len(blocks) == 1
    club = '[club]\nname = "A"\nid = "' + "ab" * 32 + '"\n'
    config = parse_config(club + blocks[0])
    assert config.feed is not None
    assert parse_trusted_proxies(config.feed.trusted_proxies) == PROXY
