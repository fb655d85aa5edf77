"""The edge's promise: non-members get 404, members without the permission 403, anonymous 401;
API keys act only in their own org; cookie-authenticated writes need the CSRF token."""

from __future__ import annotations

import httpx
import pytest
from litestar import get, post
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.auth import require
from gateway.deps import Tenant
from gateway.runtime import TemporalHandle
from tenants.db import unscoped_session
from tenants.models import Org
from tenants.permissions import Permission
from tenants.settings import Settings
from tests.factories import ensure_csrf, make_api_key, make_org, make_user, sign_in


@get("/test/orgs/{org:str}/thing", guards=[require(Permission.MEMBERS_READ)])
async def read_thing(org: FromPath[str], tenant: Tenant) -> dict[str, str]:
    return {"org": tenant.org_slug, "role": tenant.role or "", "by": tenant.principal.kind}


@post("/test/orgs/{org:str}/thing", guards=[require(Permission.MEMBERS_MANAGE)], status_code=200)
async def write_thing(org: FromPath[str], tenant: Tenant) -> dict[str, str]:
    return {"written": tenant.org_slug}


@pytest.fixture
def tclient(settings: Settings, engine: AsyncEngine, temporal_client: Client,
            db: async_sessionmaker[AsyncSession]) -> httpx.AsyncClient:
    app = create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client),
                     extra_route_handlers=[read_thing, write_thing])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_anonymous_gets_401(tclient: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]) -> None:
    org = await make_org(db)
    resp = await tclient.get(f"/test/orgs/{org.slug}/thing")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"


async def test_member_reads_with_their_role(tclient: httpx.AsyncClient, db: async_sessionmaker[AsyncSession],
                                            settings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "viewer"})
    await sign_in(tclient, db, user, settings)
    resp = await tclient.get(f"/test/orgs/{org.slug}/thing")
    assert resp.json() == {"org": org.slug, "role": "viewer", "by": "user"}


async def test_non_member_gets_404_same_as_missing_org(tclient: httpx.AsyncClient,
                                                       db: async_sessionmaker[AsyncSession],
                                                       settings: Settings) -> None:
    user = await make_user(db)
    other = await make_org(db)
    await sign_in(tclient, db, user, settings)
    hidden = await tclient.get(f"/test/orgs/{other.slug}/thing")
    missing = await tclient.get("/test/orgs/no-such-org/thing")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"] == missing.json()["detail"]


async def test_member_lacking_permission_gets_403(tclient: httpx.AsyncClient,
                                                  db: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "viewer"})
    await sign_in(tclient, db, user, settings)
    resp = await tclient.post(f"/test/orgs/{org.slug}/thing")
    assert resp.status_code == 403
    assert "members:manage" in resp.json()["detail"]


async def test_cookie_write_without_csrf_token_is_refused(tclient: httpx.AsyncClient,
                                                          db: async_sessionmaker[AsyncSession],
                                                          settings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "admin"})
    await sign_in(tclient, db, user, settings)
    token = tclient.headers.pop("x-csrftoken")
    refused = await tclient.post(f"/test/orgs/{org.slug}/thing")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "csrf_token_missing"
    assert "'csrftoken' cookie" in refused.json()["detail"] and "'x-csrftoken' header" in refused.json()["detail"]
    allowed = await tclient.post(f"/test/orgs/{org.slug}/thing", headers={"x-csrftoken": token})
    assert allowed.status_code == 200


async def test_api_key_acts_in_its_own_org_only(tclient: httpx.AsyncClient,
                                                db: async_sessionmaker[AsyncSession]) -> None:
    mine, theirs = await make_org(db), await make_org(db)
    key = await make_api_key(db, mine, role="admin")
    auth = {"Authorization": f"Bearer {key}"}
    ok = await tclient.post(f"/test/orgs/{mine.slug}/thing", headers=auth)  # no CSRF needed: not a cookie
    assert ok.status_code == 200
    assert (await tclient.get(f"/test/orgs/{theirs.slug}/thing", headers=auth)).status_code == 404


async def test_wrong_or_revoked_api_key_is_401(tclient: httpx.AsyncClient,
                                               db: async_sessionmaker[AsyncSession]) -> None:
    org = await make_org(db)
    key = await make_api_key(db, org)
    tampered = key[:-4] + "AAAA"
    assert (await tclient.get(f"/test/orgs/{org.slug}/thing",
                              headers={"Authorization": f"Bearer {tampered}"})).status_code == 401


async def test_suspended_org_is_refused_with_reason(tclient: httpx.AsyncClient,
                                                    db: async_sessionmaker[AsyncSession],
                                                    settings: Settings) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    async with unscoped_session(db, reason="test") as s:
        row = await s.get(Org, org.id)
        assert row is not None
        row.status = "suspended"
    await sign_in(tclient, db, user, settings)
    resp = await tclient.get(f"/test/orgs/{org.slug}/thing")
    assert resp.status_code == 403
    assert resp.json()["code"] == "org_suspended"


async def test_csrf_cookie_is_issued(tclient: httpx.AsyncClient) -> None:
    assert await ensure_csrf(tclient)


async def test_an_sso_session_opens_only_the_org_whose_idp_issued_it(
    tclient: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    from gateway.auth import session_cookie_name
    from tenants.credentials import SessionPolicy, create_web_session
    from tenants.models import User

    user = await make_user(db)
    home = await make_org(db, members={user.id: "owner"})
    sso_org = await make_org(db, members={user.id: "member"})
    async with unscoped_session(db, reason="test") as s:
        row = await s.get(User, user.id)
        assert row is not None
        token = await create_web_session(s, row, policy=SessionPolicy(), ip=None, user_agent=None,
                                         auth_method="sso", sso_org_id=sso_org.id)
    tclient.cookies.set(session_cookie_name(settings), token)
    assert (await tclient.get(f"/test/orgs/{sso_org.slug}/thing")).status_code == 200
    elsewhere = await tclient.get(f"/test/orgs/{home.slug}/thing")
    assert elsewhere.status_code == 403
    assert elsewhere.json()["code"] == "sso_session_elsewhere"
