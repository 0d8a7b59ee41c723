"""The live stream (server-sent events: a peer's public event arrives on an open
stream; Last-Event-ID resumes after the last one seen), and how `federation run`
starts the feed: `[feed] listen` in config (off when absent), `init --feed-listen`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from federation.cli.main import main
from federation.core.canonical import Audience, Kind
from federation.core.config import parse_config
from federation.errors import ConfigError
from federation.node.node import Node
from federation.service import open_service
from tests.feed.support import FeedClient, feed_federation

pytestmark = pytest.mark.timeout(60)


async def next_item(response: aiohttp.ClientResponse) -> tuple[str, dict[str, str]]:
    """The next `item` event of a stream: (its id, its data decoded)."""
    ident = ""
    async with asyncio.timeout(10):
        while True:
            line = (await response.content.readline()).decode().rstrip("\r\n")
            if line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                data: dict[str, str] = json.loads(line[6:])
                return ident, data


async def test_a_peers_public_event_arrives_live_and_resumes(tmp_path: Path) -> None:
    async with feed_federation(tmp_path) as (fed, feed):
        b = fed["b"]
        async with feed.http.get(feed.base + "/live") as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            event = await b.post(Kind.NOTE, {"text": "live from b"}, "public")
            ident, data = await next_item(stream)
        assert ident == event.id.hex()
        assert data["title"] == "live from b"
        assert data["club_name"] == "Club b"

        missed = [await b.post(Kind.NOTE, {"text": f"missed {i}"}, "public") for i in range(2)]
        await feed.wait_for("/feed.json", b"missed 1")
        headers = {"Last-Event-ID": ident}
        async with feed.http.get(feed.base + "/live", headers=headers) as stream:
            got = [await next_item(stream) for _ in missed]
        assert [i for i, _ in got] == [e.id.hex() for e in missed]


async def test_live_filters_by_club(tmp_path: Path) -> None:
    async with feed_federation(tmp_path) as (fed, feed):
        path = f"/live?club={fed['b'].club.hex()}"
        async with feed.http.get(feed.base + path) as stream:
            await fed["a"].post(Kind.NOTE, {"text": "not for this stream"}, "public")
            await fed["b"].post(Kind.NOTE, {"text": "for this stream"}, "public")
            _, data = await next_item(stream)
        assert data["title"] == "for this stream"


def test_feed_section_parses_strictly() -> None:
    base = '[club]\nname = "x"\nid = "' + "ab" * 32 + '"\n'
    assert parse_config(base).feed is None  # off when absent
    config = parse_config(base + '[feed]\nlisten = "0.0.0.0:8480"\n')
    assert config.feed is not None
    assert config.feed.listen == "0.0.0.0:8480"
    with pytest.raises(ConfigError, match="feed"):
        parse_config(base + '[feed]\nlisten = "0.0.0.0:8480"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match=r"feed\.listen"):
        parse_config(base + '[feed]\nlisten = "nowhere"\n')


async def test_run_serves_the_feed_from_config(tmp_path: Path) -> None:
    root = tmp_path / "club"
    args = [
        "--node",
        str(root),
        "init",
        "--name",
        "Feed club",
        "--listen",
        "127.0.0.1:0",
        "--no-passphrase",
        "--plain-http",
        "--feed-listen",
        "127.0.0.1:8480",
    ]
    assert await asyncio.to_thread(main, args) == 0
    assert '[feed]\nlisten = "127.0.0.1:8480"' in (root / "config.toml").read_text()
    async with await Node.open(root) as node, open_service(node, port=0, feed_port=0) as service:
        assert service.feed is not None
        await node.post(Kind.NOTE, {"text": "from the running node"}, Audience("public"))
        await service.rt.refresh()
        async with aiohttp.ClientSession() as http:
            feed = FeedClient(service.feed, http)
            await feed.wait_for("/", b"from the running node")
    bare = tmp_path / "bare"
    args = ["--node", str(bare), "init", "--name", "No feed", "--no-passphrase", "--plain-http"]
    assert await asyncio.to_thread(main, args) == 0
    async with await Node.open(bare) as node, open_service(node, port=0) as service:
        assert service.feed is None
