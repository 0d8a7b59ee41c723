"""The page in a real browser: Playwright driving Debian's Chromium (`make test`
installs it; never a browser download). The page loads and shows the items, a public
event posted on a peer appears on the open page without a reload (server-sent
events), axe finds no serious or critical accessibility violation, nothing is
requested from anywhere but the feed, and the script breaks no CSP rule.
Screenshots at 390 px and 1280 px go to tests/feed/screenshots/."""

from __future__ import annotations

from pathlib import Path

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import ConsoleMessage, async_playwright

from federation.core.canonical import Kind
from tests.feed.support import feed_federation, synced

pytestmark = pytest.mark.timeout(90)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium: `make test` installs Debian's chromium"
)
async def test_the_page_in_a_real_browser(tmp_path: Path) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    async with feed_federation(tmp_path) as (fed, feed), async_playwright() as pw:
        a, b = fed["a"], fed["b"]
        await b.post(
            Kind.ACTION,
            {
                "what": "Picket at the depot",
                "starts": "2031-05-01T18:00:00+00:00",
                "where": "Gate 2",
            },
            "public",
        )
        await b.post(
            Kind.CAMPAIGN,
            {"campaign": "rent", "op": "created", "title": "Rent strike", "text": "No rise."},
            "public",
        )
        await a.post(Kind.NOTE, {"text": "Meeting moved to Thursday.\nBring a friend."}, "public")
        await synced(fed, 2)
        await feed.wait_for("/", b"Rent strike")

        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            problems: list[str] = []
            page.on("request", lambda r: requests.append(r.url))

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    problems.append(message.text)

            page.on("console", on_console)
            await page.goto(feed.base + "/")
            await page.get_by_role("heading", name="Picket at the depot").wait_for()
            await page.get_by_role(
                "heading", name="Meeting moved to Thursday. Bring a friend."
            ).wait_for()
            assert await page.locator("ol.items > li").count() == 3
            # The script put times in the reader's zone (the page says which).
            assert "your local time" in await page.locator("[data-zone]").inner_text()

            results = await Axe().run(page)
            serious = [
                v["id"]
                for v in results.response["violations"]
                if v.get("impact") in ("serious", "critical")
            ]
            assert serious == [], results.generate_report()
            await page.screenshot(path=str(SCREENSHOTS / "feed-1280.png"), full_page=True)

            await page.evaluate("window.stillTheSamePage = true")
            event = await b.post(Kind.NOTE, {"text": "Posted on b, seen live"}, "public")
            await page.locator(f"#e-{event.id.hex()}").wait_for(timeout=15_000)
            assert await page.evaluate("window.stillTheSamePage === true")  # no reload
            assert (
                "Posted on b, seen live" in await page.locator("ol.items > li").first.inner_text()
            )

            await page.set_viewport_size({"width": 390, "height": 844})
            await page.screenshot(path=str(SCREENSHOTS / "feed-390.png"), full_page=True)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390  # readable on a phone: nothing scrolls sideways

            await page.goto(f"{feed.base}/clubs/{b.club.hex()}")
            await page.get_by_role("heading", name="Club b", level=1).wait_for()
            results = await Axe().run(page)
            assert not [
                v
                for v in results.response["violations"]
                if v.get("impact") in ("serious", "critical")
            ], results.generate_report()
        finally:
            await browser.close()
        assert all(url.startswith(feed.base) for url in requests), requests  # no third party
        assert problems == []  # no CSP violation or script error
