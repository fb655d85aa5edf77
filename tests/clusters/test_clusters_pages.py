"""The connect wizard and the cluster pages, as a signed-in person uses them."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.settings import Settings
from tests.clusters.conftest import Admin
from tests.clusters.helpers import FakeAgent
from tests.factories import add_member, make_user, sign_in

HTML = {"accept": "text/html"}


async def test_the_wizard_names_a_cluster_shows_the_command_once_and_follows_the_agent(
    http: httpx.AsyncClient, admin: Admin, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await sign_in(http, db, admin.user, settings)
    base = f"/orgs/{admin.org.slug}/clusters"
    form = await http.get(base + "/new", headers=HTML)
    assert form.status_code == 200 and 'name="provider"' in form.text

    bad = await http.post(base, data={"name": "Bad Name", "provider": "eks"}, headers=HTML)
    assert bad.status_code == 422 and "lower-case letters" in bad.text and 'value="Bad Name"' in bad.text

    made = await http.post(base, data={"name": "lab-box", "provider": "bare_host", "region": "office"}, headers=HTML)
    assert made.status_code == 201
    token = re.search(r"--token (mcr_[A-Za-z0-9_-]+) --runtime local", made.text)
    assert token, made.text
    assert "kubectl apply -f http://metacloud.example.com/agent/v1/install/" in made.text
    assert 'src="/static/clusters.js"' in made.text and "waiting for the agent" in made.text
    cluster_id = re.search(r'/clusters/([0-9a-f-]{36})"', made.text)
    assert cluster_id
    connect = await http.get(f"{base}/{cluster_id.group(1)}/connect", headers=HTML)
    assert token.group(1) not in connect.text and "Re-issue token" in connect.text

    agent = FakeAgent(http, token.group(1))
    await agent.register()
    await agent.heartbeat()
    listing = await http.get(base, headers=HTML)
    detail = await http.get(f"{base}/{cluster_id.group(1)}", headers=HTML)
    assert "lab-box" in listing.text and "0.1.0" in listing.text and "64" in listing.text  # 64 CPUs
    assert "nvidia.com/gpu A100" in detail.text and "created by" in detail.text

    reissued = await http.post(f"{base}/{cluster_id.group(1)}/token", headers=HTML)
    assert reissued.status_code == 201 and "--token mcr_" in reissued.text and token.group(1) not in reissued.text


async def test_viewers_see_clusters_but_cannot_connect_or_detach(
    http: httpx.AsyncClient, admin: Admin, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    viewer = await make_user(db)
    await add_member(db, admin.org, viewer, "viewer")
    await sign_in(http, db, viewer, settings)
    base = f"/orgs/{admin.org.slug}/clusters"
    page = await http.get(base, headers=HTML)
    assert page.status_code == 200 and "Connect a cluster" not in page.text
    assert (await http.get(base + "/new", headers=HTML)).status_code == 403


async def test_the_live_status_script_is_served_from_our_origin(http: httpx.AsyncClient) -> None:
    js = await http.get("/static/clusters.js")
    assert js.status_code == 200 and "fetch(url" in js.text and "innerHTML" not in js.text
