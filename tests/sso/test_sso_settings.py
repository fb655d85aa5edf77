"""Admins set up SSO through the API and the settings page; the issuer is checked, the secret never shown."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants import sso
from tenants.db import unscoped_session
from tenants.models import AuditEvent, SsoConfig
from tenants.settings import Settings
from tests.factories import ensure_csrf, make_org, make_user, sign_in
from tests.sso.conftest import CLIENT_ID, CLIENT_SECRET, IDP_WARNINGS

pytestmark = IDP_WARNINGS


def _body(issuer: str, **changes: object) -> dict[str, object]:
    return {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "allowed_domains": ["Acme.test", "@acme.example"], **changes}


async def _admin(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings,
                 role: str = "admin") -> str:
    admin = await make_user(db)
    org = await make_org(db, members={admin.id: role})
    await sign_in(client, db, admin, settings)
    return org.slug


async def _stored(db: async_sessionmaker[AsyncSession]) -> SsoConfig | None:
    async with unscoped_session(db, reason="test") as s:
        return (await s.execute(select(SsoConfig))).scalar_one_or_none()


async def test_admin_saves_sso_and_reads_it_back_without_the_secret(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    slug = await _admin(client, db, settings)

    saved = await client.put(f"/api/v1/orgs/{slug}/sso", json=_body(idp, default_role="viewer"))

    assert saved.status_code == 200, saved.text
    read = await client.get(f"/api/v1/orgs/{slug}/sso")
    body = read.json()
    assert body["client_secret"] == "set" and CLIENT_SECRET not in read.text and CLIENT_SECRET not in saved.text
    assert body["issuer"] == idp and body["allowed_domains"] == ["acme.example", "acme.test"]
    assert body["redirect_uri"] == f"{settings.public_url}/orgs/{slug}/sso/callback"
    assert body["default_role"] == "viewer" and body["enabled"] is True and body["sso_required"] is False
    row = await _stored(db)
    assert row is not None and CLIENT_SECRET not in row.client_secret_encrypted
    assert sso.client_secret_box(settings.secret_key).open(row.client_secret_encrypted) == CLIENT_SECRET
    async with unscoped_session(db, reason="test") as s:
        [event] = (await s.execute(select(AuditEvent).where(AuditEvent.action == "sso.updated"))).scalars()
    assert event.details["created"] is True and event.details["client_secret_changed"] is True
    assert CLIENT_SECRET not in str(event.details)


async def test_updating_without_a_secret_keeps_the_stored_one(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    slug = await _admin(client, db, settings)
    await client.put(f"/api/v1/orgs/{slug}/sso", json=_body(idp))
    before = await _stored(db)

    resp = await client.put(f"/api/v1/orgs/{slug}/sso", json=_body(idp, client_secret=None, enabled=False))

    assert resp.status_code == 200 and resp.json()["enabled"] is False
    after = await _stored(db)
    assert before is not None and after is not None
    assert after.client_secret_encrypted == before.client_secret_encrypted


async def test_first_save_needs_a_secret_and_valid_fields(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    slug = await _admin(client, db, settings)

    resp = await client.put(f"/api/v1/orgs/{slug}/sso", json=_body(
        "ftp://nope", client_secret=None, allowed_domains=["not a domain"], default_role="owner"))

    assert resp.status_code == 422
    fields = {e["field"] for e in resp.json()["errors"]}
    assert fields == {"issuer", "client_secret", "allowed_domains", "default_role"}
    assert await _stored(db) is None


async def test_unreachable_issuer_is_a_clear_422(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    slug = await _admin(client, db, settings)

    resp = await client.put(f"/api/v1/orgs/{slug}/sso", json=_body("http://127.0.0.1:9"))

    assert resp.status_code == 422
    assert resp.json()["code"] == "sso_issuer_invalid"
    assert "Could not reach the identity provider" in resp.json()["detail"]
    assert await _stored(db) is None


async def test_issuer_that_is_not_an_oidc_provider_is_a_clear_422(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    slug = await _admin(client, db, settings)

    resp = await client.put(f"/api/v1/orgs/{slug}/sso", json=_body(f"{idp}/jwks"))  # a real server, not an issuer

    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "issuer"
    assert "404" in resp.json()["detail"]


async def test_requiring_sso_needs_a_sign_in_through_it_first(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    slug = await _admin(client, db, settings)  # signed in with a password

    resp = await client.put(f"/api/v1/orgs/{slug}/sso", json=_body(idp, sso_required=True))

    assert resp.status_code == 422
    assert resp.json()["errors"] == [{"field": "sso_required", "message": resp.json()["errors"][0]["message"]}]
    assert "Sign in through single sign-on once" in resp.json()["errors"][0]["message"]


async def test_member_cannot_change_sso(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    slug = await _admin(client, db, settings, role="member")
    assert (await client.put(f"/api/v1/orgs/{slug}/sso", json=_body(idp))).status_code == 403
    assert (await client.get(f"/api/v1/orgs/{slug}/sso")).status_code == 403


async def test_delete_turns_sso_off_and_is_audited(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    slug = await _admin(client, db, settings)
    await client.put(f"/api/v1/orgs/{slug}/sso", json=_body(idp))

    assert (await client.delete(f"/api/v1/orgs/{slug}/sso")).status_code == 204

    gone = await client.get(f"/api/v1/orgs/{slug}/sso")
    assert gone.status_code == 404 and gone.json()["code"] == "sso_not_configured"
    assert (await client.get(f"/orgs/{slug}/sso/login", headers={"accept": "text/html"})).status_code == 404
    async with unscoped_session(db, reason="test") as s:
        actions = (await s.execute(select(AuditEvent.action).order_by(AuditEvent.id))).scalars().all()
    assert actions == ["sso.updated", "sso.deleted"]


async def test_settings_page_shows_the_redirect_uri_and_errors_in_place(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, idp: str
) -> None:
    slug = await _admin(client, db, settings)
    html = {"accept": "text/html"}
    token = await ensure_csrf(client)

    page = await client.get(f"/orgs/{slug}/sso", headers=html)
    assert page.status_code == 200
    assert f"{settings.public_url}/orgs/{slug}/sso/callback" in page.text

    form = {"_csrf_token": token, "issuer": idp, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "allowed_domains": "bad domain!", "default_role": "member", "enabled": "on"}
    bad = await client.post(f"/orgs/{slug}/sso", data=form, headers=html)
    assert bad.status_code == 422
    assert "Not a domain name" in bad.text and f'value="{CLIENT_ID}"' in bad.text
    assert CLIENT_SECRET not in bad.text

    good = await client.post(f"/orgs/{slug}/sso", data={**form, "allowed_domains": "acme.test, acme.example"},
                             headers=html)
    assert good.status_code == 303
    shown = await client.get(good.headers["location"], headers=html)
    assert "Single sign-on settings saved." in shown.text and "acme.example, acme.test" in shown.text
    assert CLIENT_SECRET not in shown.text
