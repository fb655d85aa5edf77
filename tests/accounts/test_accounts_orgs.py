"""Organizations: slugs, several orgs per person, switching, soft delete and restore."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.db import unscoped_session, utcnow
from tenants.models import Org
from tenants.orgs import slugify
from tenants.settings import Settings
from tests.accounts.conftest import HTML, audit_actions
from tests.factories import make_org, make_user, sign_in


@pytest.mark.parametrize(("name", "slug"), [
    ("Acme", "acme"),
    ("Ada's Lab (ML)", "adas-lab-ml"),
    ("  Zürich  Research ", "zurich-research"),
    ("!!", "org"),
    ("x" * 80, "x" * 40),
])
def test_slug_is_derived_from_the_name(name: str, slug: str) -> None:
    assert slugify(name) == slug


async def test_colliding_names_get_numbered_slugs(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession],
                                                  settings: Settings) -> None:
    user = await make_user(db)
    await make_org(db, slug="acme")
    await sign_in(client, db, user, settings)
    slugs = [(await client.post("/api/v1/orgs", json={"name": "Acme"})).json()["slug"] for _ in range(3)]
    assert slugs == ["acme-2", "acme-3", "acme-4"]


async def test_a_person_lists_creates_and_switches_between_orgs(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    first = await make_org(db, members={user.id: "member"}, slug="first-org")
    await sign_in(client, db, user, settings)
    created = await client.post("/api/v1/orgs", json={"name": "Second Org"})
    assert created.status_code == 201
    assert created.json()["role"] == "owner" and created.json()["plan"] == "free"
    listed = (await client.get("/api/v1/orgs")).json()
    assert [(o["slug"], o["role"]) for o in listed] == [(first.slug, "member"), ("second-org", "owner")]

    switcher = await client.get("/orgs", headers=HTML)
    assert "Second Org" in switcher.text and 'action="/orgs/second-org/switch"' in switcher.text
    switched = await client.post("/orgs/second-org/switch", headers=HTML)
    assert switched.status_code == 303 and switched.headers["location"] == "/orgs/second-org"
    assert (await client.get("/", headers=HTML)).headers["location"] == "/orgs/second-org"
    assert (await client.get("/api/v1/me")).json()["active_org"] == "second-org"


async def test_org_home_links_only_the_admin_pages_the_role_may_open(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    admin_org = await make_org(db, members={user.id: "admin"})
    viewer_org = await make_org(db, members={user.id: "viewer"})
    await sign_in(client, db, user, settings)
    admin_page = (await client.get(f"/orgs/{admin_org.slug}", headers=HTML)).text
    for part in ("members", "invites", "api-keys", "sso", "audit"):
        assert f'href="/orgs/{admin_org.slug}/{part}"' in admin_page
    assert "Delete this organization" not in admin_page
    viewer_page = (await client.get(f"/orgs/{viewer_org.slug}", headers=HTML)).text
    assert f"/orgs/{viewer_org.slug}/members" in viewer_page
    assert f"/orgs/{viewer_org.slug}/audit" not in viewer_page


async def test_owner_deletes_and_restores_an_org(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession],
                                                 settings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    await sign_in(client, db, user, settings)
    deleted = await client.delete(f"/api/v1/orgs/{org.slug}")
    assert deleted.status_code == 200
    assert deleted.json()["restorable_until"]
    assert (await client.get(f"/api/v1/orgs/{org.slug}")).status_code == 404
    assert (await client.get("/api/v1/orgs")).json() == []
    assert [o["slug"] for o in (await client.get("/api/v1/orgs?include_deleted=true")).json()] == [org.slug]
    assert "Recently deleted" in (await client.get("/orgs", headers=HTML)).text

    restored = await client.post(f"/api/v1/orgs/{org.slug}/restore")
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None
    assert (await client.get(f"/api/v1/orgs/{org.slug}")).status_code == 200
    assert [a for a in await audit_actions(db) if a.startswith("org.")] == ["org.deleted", "org.restored"]


async def test_delete_page_asks_to_type_the_slug(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession],
                                                 settings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    await sign_in(client, db, user, settings)
    wrong = await client.post(f"/orgs/{org.slug}/delete", headers=HTML, data={"confirm": "nope"})
    assert wrong.status_code == 422 and f"Type {org.slug} to confirm" in wrong.text
    done = await client.post(f"/orgs/{org.slug}/delete", headers=HTML, data={"confirm": org.slug})
    assert done.status_code == 303
    assert (await client.get(f"/orgs/{org.slug}", headers=HTML)).status_code == 404


async def test_a_deleted_org_cannot_be_restored_after_30_days(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    async with unscoped_session(db, reason="test ages the deletion") as s:
        await s.execute(update(Org).where(Org.id == org.id).values(deleted_at=utcnow() - timedelta(days=31)))
    await sign_in(client, db, user, settings)
    assert (await client.post(f"/api/v1/orgs/{org.slug}/restore")).status_code == 404
    assert (await client.get("/api/v1/orgs?include_deleted=true")).json() == []


async def test_only_owners_may_delete(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession],
                                      settings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "admin"})
    await sign_in(client, db, user, settings)
    assert (await client.delete(f"/api/v1/orgs/{org.slug}")).status_code == 403
