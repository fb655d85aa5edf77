"""An org that requires SSO refuses password sessions (and other orgs' SSO sessions), and sends browsers to its IdP."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.db import unscoped_session
from tenants.models import WebSession
from tenants.settings import Settings
from tests.factories import make_org, make_user, sign_in
from tests.sso.conftest import DOMAIN, IDP_WARNINGS, configure_sso, sso_sign_in

pytestmark = IDP_WARNINGS
HTML = {"accept": "text/html"}


async def test_password_session_is_refused_with_sso_required_then_sso_lets_the_admin_in(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    admin = await make_user(db, f"admin@{DOMAIN}")
    org = await make_org(db, members={admin.id: "admin"})
    await configure_sso(db, org, idp, sso_required=True, settings=settings)
    await sign_in(client, db, admin, settings)  # a password session

    api = await client.get(f"/api/v1/orgs/{org.slug}/sso")
    assert api.status_code == 403 and api.json()["code"] == "sso_required"

    page = await client.get(f"/orgs/{org.slug}/sso", headers=HTML)
    assert page.status_code in (302, 303)
    target = urlsplit(page.headers["location"])
    assert target.path == f"/orgs/{org.slug}/sso/login"
    assert parse_qs(target.query)["next"] == [f"/orgs/{org.slug}/sso"]
    login_page = await client.get(page.headers["location"], headers=HTML)
    assert "Continue with single sign-on" in login_page.text

    walk = await sso_sign_in(client, org.slug, "admin", next_path=f"/orgs/{org.slug}/sso")
    assert walk.response.headers["location"] == f"/orgs/{org.slug}/sso"
    assert (await client.get(f"/api/v1/orgs/{org.slug}/sso")).status_code == 200
    assert (await client.get(f"/orgs/{org.slug}/sso", headers=HTML)).status_code == 200
    async with unscoped_session(db, reason="test") as s:
        sessions = (await s.execute(select(WebSession.auth_method, WebSession.revoked_at)
                                    .where(WebSession.user_id == admin.id))).all()
    # the browser's password session ended when the SSO one began
    assert sorted((m, r is None) for m, r in sessions) == [("password", False), ("sso", True)]


async def test_sso_session_of_one_org_does_not_satisfy_another_org_requiring_sso(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    admin = await make_user(db, f"admin@{DOMAIN}")
    first = await make_org(db, members={admin.id: "admin"})
    second = await make_org(db, members={admin.id: "admin"})
    await configure_sso(db, first, idp, settings=settings)
    await configure_sso(db, second, idp, sso_required=True, settings=settings)

    await sso_sign_in(client, first.slug, "admin")

    assert (await client.get(f"/api/v1/orgs/{first.slug}/sso")).status_code == 200
    refused = await client.get(f"/api/v1/orgs/{second.slug}/sso")
    assert refused.status_code == 403 and refused.json()["code"] == "sso_required"


async def test_org_not_requiring_sso_still_accepts_passwords(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    admin = await make_user(db, f"admin@{DOMAIN}")
    org = await make_org(db, members={admin.id: "admin"})
    await configure_sso(db, org, idp, settings=settings)
    await sign_in(client, db, admin, settings)

    assert (await client.get(f"/api/v1/orgs/{org.slug}/sso")).status_code == 200
