"""Signing in through an org's identity provider: the whole round trip against a real OIDC provider."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth import session_cookie_name
from tenants.db import unscoped_session
from tenants.models import AuditEvent, Membership, User, WebSession
from tenants.settings import Settings
from tests.factories import add_member, make_org, make_user
from tests.sso.conftest import DOMAIN, IDP_WARNINGS, configure_sso, sso_sign_in

pytestmark = IDP_WARNINGS


async def _audit(db: async_sessionmaker[AsyncSession], action: str) -> list[AuditEvent]:
    async with unscoped_session(db, reason="test") as s:
        return list((await s.execute(select(AuditEvent).where(AuditEvent.action == action))).scalars())


async def _user(db: async_sessionmaker[AsyncSession], email: str) -> User | None:
    async with unscoped_session(db, reason="test") as s:
        return (await s.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def test_new_person_signs_in_through_the_idp_and_lands_in_the_org_as_a_member(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    org = await make_org(db)
    await configure_sso(db, org, idp, settings=settings)

    walk = await sso_sign_in(client, org.slug, "alice")

    assert walk.response.status_code == 303, walk.response.text
    assert walk.response.headers["location"] == f"/orgs/{org.slug}"
    assert client.cookies.get(session_cookie_name(settings))
    query = parse_qs(urlsplit(walk.authorize_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    assert query["redirect_uri"] == [f"{settings.public_url}/orgs/{org.slug}/sso/callback"]
    user = await _user(db, f"alice@{DOMAIN}")
    assert user is not None and user.password_hash is None and user.email_verified_at is not None
    assert user.name == "Alice Example"
    async with unscoped_session(db, reason="test") as s:
        role = (await s.execute(select(Membership.role).where(Membership.user_id == user.id))).scalar_one()
        ws = (await s.execute(select(WebSession).where(WebSession.user_id == user.id))).scalar_one()
    assert role == "member"
    assert (ws.auth_method, ws.sso_org_id) == ("sso", org.id)
    [login] = await _audit(db, "user.login")
    assert login.details == {"method": "sso"} and login.org_id == org.id and login.actor_id == str(user.id)


async def test_known_user_who_is_not_a_member_joins_with_the_default_role(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    known = await make_user(db, f"known@{DOMAIN}")
    org = await make_org(db)
    await configure_sso(db, org, idp, default_role="viewer", settings=settings)

    walk = await sso_sign_in(client, org.slug, "known", next_path=f"/orgs/{org.slug}/jobs")

    assert walk.response.headers["location"] == f"/orgs/{org.slug}/jobs"
    async with unscoped_session(db, reason="test") as s:
        users = (await s.execute(select(User).where(User.email == known.email))).scalars().all()
        role = (await s.execute(select(Membership.role).where(Membership.user_id == known.id))).scalar_one()
    assert len(users) == 1 and users[0].password_hash is not None  # same account, password kept
    assert role == "viewer"


async def test_existing_member_keeps_their_role(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    admin = await make_user(db, f"admin@{DOMAIN}")
    org = await make_org(db, members={admin.id: "admin"})
    await configure_sso(db, org, idp, settings=settings)

    walk = await sso_sign_in(client, org.slug, "admin")

    assert walk.response.status_code == 303
    assert (await client.get(f"/api/v1/orgs/{org.slug}/sso")).status_code == 200  # still an admin
    assert await _audit(db, "member.added") == []


async def test_unverified_registration_is_taken_over_by_the_verified_owner(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    squatter = await make_user(db, f"squatted@{DOMAIN}", verified=False)
    org = await make_org(db)
    await configure_sso(db, org, idp, settings=settings)

    walk = await sso_sign_in(client, org.slug, "squatted")

    assert walk.response.status_code == 303
    user = await _user(db, squatter.email)
    assert user is not None and user.email_verified_at is not None
    assert user.password_hash is None  # whoever set the unproven password can no longer use it


async def test_email_outside_the_allowed_domains_is_refused_and_audited(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    org = await make_org(db)
    await configure_sso(db, org, idp, settings=settings)

    walk = await sso_sign_in(client, org.slug, "outsider")

    assert walk.response.status_code == 403
    assert "elsewhere.test may not sign in" in walk.response.text
    assert await _user(db, "eve@elsewhere.test") is None
    [failed] = await _audit(db, "sso.login_failed")
    assert failed.details == {"reason": "domain_not_allowed"} and failed.org_id == org.id
    assert not client.cookies.get(session_cookie_name(settings))


async def test_email_the_idp_has_not_verified_is_refused(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    org = await make_org(db)
    await configure_sso(db, org, idp, settings=settings)

    walk = await sso_sign_in(client, org.slug, "unverified")

    assert walk.response.status_code == 403
    assert "not verified your email" in walk.response.text
    assert await _user(db, f"carol@{DOMAIN}") is None
    [failed] = await _audit(db, "sso.login_failed")
    assert failed.details == {"reason": "email_not_verified"}


async def test_callback_without_the_browsers_state_cookie_is_refused(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    org = await make_org(db)
    await configure_sso(db, org, idp, settings=settings)

    walk = await sso_sign_in(client, org.slug, "alice", keep_state_cookie=False)

    assert walk.response.status_code == 403
    assert "started in another browser" in walk.response.text
    assert await _user(db, f"alice@{DOMAIN}") is None
    [failed] = await _audit(db, "sso.login_failed")
    assert failed.details == {"reason": "state_mismatch"}


async def test_sign_in_page_of_an_org_without_sso_is_404(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(db)
    resp = await client.get(f"/orgs/{org.slug}/sso/login", headers={"accept": "text/html"})
    assert resp.status_code == 404
    assert "not set up" in resp.text


async def test_redirect_after_sign_in_never_leaves_the_site(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    member = await make_user(db, f"alice@{DOMAIN}")
    org = await make_org(db)
    await add_member(db, org, member, "member")
    await configure_sso(db, org, idp, settings=settings)

    walk = await sso_sign_in(client, org.slug, "alice", next_path="//evil.example/steal")

    assert walk.response.headers["location"] == f"/orgs/{org.slug}"
