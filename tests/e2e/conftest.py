"""Browser tests: Debian chromium driven by Playwright (async API) against the real stack.

Nothing is downloaded: Playwright launches ``/usr/bin/chromium`` (CI installs it with apt; see ``.ci/run``).
The stack is `metacloud dev` in a subprocess, started once per module (see ``tests/e2e/stack.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.e2e.stack import RunningStack, start_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    running = start_stack()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():  # a clear message rather than Playwright's offer to download a browser
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run does this on CI)")
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    yield ctx
    await ctx.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(context: BrowserContext) -> Page:
    return await context.new_page()
