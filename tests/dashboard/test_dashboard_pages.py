"""The dashboard pages as people see them: complete without JavaScript, kept current by our own script."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.settings import Settings
from tests.dashboard.world import make_world
from tests.factories import make_user, sign_in

HTML = {"accept": "text/html"}


async def test_org_dashboard_page_shows_jobs_reasons_capacity_bars_and_plan_caps(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    await sign_in(client, db, w.a_owner, settings)
    home = await client.get(f"/orgs/{w.a.slug}", headers=HTML)
    assert f'href="/orgs/{w.a.slug}/dashboard"' in home.text

    page = await client.get(f"/orgs/{w.a.slug}/dashboard", headers=HTML)
    assert page.status_code == 200, page.text
    text = page.text
    assert "Free plan: 7 of 8 vCPU, 13 of 16 GiB, no GPUs" in text
    assert f'href="/orgs/{w.a.slug}/billing"' in text  # the way to lift the caps
    # active and pending jobs, each pending one with its reason
    for name in ("train", "prep", "big", "warm"):
        assert f'/orgs/{w.a.slug}/jobs/{w.jobs[name]}">{name}</a>' in text
    assert "Free plan: 8 vCPU in use of 8" in text and "pulling the image" in text
    assert "oops" not in text  # finished jobs are not on the dashboard lists
    # totals and per-cluster bars, GPUs by type, cluster health
    assert "11 of 80 vCPU" in text and "21 of 320 GiB" in text and "2 of 8 GPUs" in text
    assert 'width="14"' in text  # 11/80 vCPU as an SVG bar, no inline style (the CSP forbids it)
    assert " style=" not in text
    assert "A100" in text and "disconnected" in text and "10 min ago" in text
    # kept current by our own script polling the JSON
    assert 'src="/static/dashboard.js"' in text and f'data-url="/api/v1/orgs/{w.a.slug}/dashboard"' in text
    assert re.search(r"data-meter='\[\"resources\", \"clusters\", \"" + str(w.clusters["gpu-a"]), text)
    script = await client.get("/static/dashboard.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


async def test_a_member_of_another_org_gets_404_for_the_dashboard_page(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    await sign_in(client, db, w.b_owner, settings)
    assert (await client.get(f"/orgs/{w.a.slug}/dashboard", headers=HTML)).status_code == 404
    own = await client.get(f"/orgs/{w.b.slug}/dashboard", headers=HTML)
    assert own.status_code == 200 and "b-one" in own.text and "gpu-a" not in own.text and "train" not in own.text


async def test_operator_dashboard_page_shows_platform_totals_cluster_states_and_top_orgs(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    await sign_in(client, db, await make_user(db, operator=True), settings)
    console = await client.get("/operator", headers=HTML)
    assert 'href="/operator/dashboard"' in console.text
    page = await client.get("/operator/dashboard", headers=HTML)
    assert page.status_code == 200, page.text
    assert "13 of 88 vCPU" in page.text and "old-c" in page.text and "disconnected" in page.text
    assert page.text.index(w.a.slug) < page.text.index(w.b.slug)  # A holds more CPU than B
    assert 'data-url="/api/v1/operator/dashboard"' in page.text
