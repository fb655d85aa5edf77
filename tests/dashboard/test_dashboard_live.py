"""In a real browser (Debian chromium): the dashboard and a job's page update themselves, without a reload."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from litestar import Litestar
from playwright.async_api import Browser, BrowserContext, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth import session_cookie_name
from tenants.credentials import SessionPolicy, create_web_session
from tenants.db import unscoped_session
from tenants.models import User
from tenants.settings import Settings
from tests.dashboard.rows import log_agent, make_job, set_state
from tests.dashboard.world import World, make_world

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")


@pytest.fixture
async def served(app: Litestar) -> AsyncIterator[str]:
    """The app over real HTTP on loopback (no lifespan: the engine belongs to the test session)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", ws="none",
                                           log_config=None, access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for this
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        await b.close()


async def signed_in(browser: Browser, served: str, db: async_sessionmaker[AsyncSession], settings: Settings,
                    w: World) -> BrowserContext:
    async with unscoped_session(db, reason="test signs in") as s:
        user = await s.get(User, w.a_owner.id)
        assert user is not None
        token = await create_web_session(s, user, policy=SessionPolicy(), ip="127.0.0.1", user_agent="chromium")
    ctx = await browser.new_context()
    ctx.set_default_timeout(10_000)
    await ctx.add_cookies([{"name": session_cookie_name(settings), "value": token, "url": served}])
    return ctx


def watch(page: Any, errors: list[str]) -> None:
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)


async def test_active_jobs_and_bars_change_on_the_open_page_when_a_job_starts(
    browser: Browser, served: str, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    ctx = await signed_in(browser, served, db, settings, w)
    page = await ctx.new_page()
    errors: list[str] = []
    watch(page, errors)
    await page.goto(f"{served}/orgs/{w.a.slug}/dashboard")
    active = page.locator('[data-num=\'["jobs", "active"]\']')
    assert await active.text_content() == "2"
    await page.evaluate("window.__not_reloaded = true")

    await make_job(db, w.a.id, "fresh", "running", cluster_id=w.clusters["gpu-a"], cpu=30, memory_gib=4)
    await expect(active).to_have_text("3", timeout=12_000)  # polled every 4 s
    assert await page.evaluate("window.__not_reloaded === true")
    await page.locator("#active-jobs").get_by_text("fresh").wait_for(timeout=5_000)  # the list was swapped
    cpu_bar = page.locator('[data-meter=\'["resources", "clusters", "' + str(w.clusters["gpu-a"])
                           + '", "cpu"]\'] .meter-text')
    assert await cpu_bar.text_content() == "34 of 64 vCPU"  # 30 + 4 held by our jobs > 8 reported
    assert errors == []
    await ctx.close()


async def test_follow_streams_the_log_and_the_page_shows_the_end(
    browser: Browser, served: str, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    ctx = await signed_in(browser, served, db, settings, w)
    page = await ctx.new_page()
    errors: list[str] = []
    watch(page, errors)
    async with log_agent(db, w.clusters["gpu-a"], "epoch 1\nepoch 2\n"):
        await page.goto(f"{served}/orgs/{w.a.slug}/jobs/{w.jobs['train']}")
        await expect(page.locator("#log")).to_have_text("epoch 1\nepoch 2\n")  # the tail, rendered
        await page.get_by_role("button", name="Follow").click()
        await expect(page.locator("[data-log-status]")).to_have_text("Following the log…")
        await set_state(db, w.jobs["train"], "succeeded", "exited with code 0", exit_code=0)
        await expect(page.locator("[data-log-status]")).to_have_text(
            "The job has finished; this is its whole log tail.")
    await expect(page.locator('[data-job="state"]')).to_have_text("succeeded")
    await expect(page.locator('[data-job="reason"]')).to_have_text("exited with code 0")
    await expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    await expect(page.locator("#log")).to_have_text("epoch 1\nepoch 2\n")  # each line once
    assert errors == []
    await ctx.close()
