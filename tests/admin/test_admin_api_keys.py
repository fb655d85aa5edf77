"""API keys: made through the API or the page, shown once, usable as a Bearer credential, revocable;
no higher than their creator's role; members revoke only their own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.db import unscoped_session
from tenants.models import ApiKey
from tenants.security import hash_token
from tenants.settings import Settings
from tests.admin.helpers import actions, browser, csrf_form, json_headers
from tests.factories import add_member, make_org, make_user, sign_in


async def test_key_created_through_the_api_works_until_revoked(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    admin = await make_user(db)
    org = await make_org(db, members={admin.id: "admin"})
    await sign_in(client, db, admin, settings)
    resp = await client.post(f"/api/v1/orgs/{org.slug}/api-keys", json={"name": "CI", "role": "viewer"})
    assert resp.status_code == 201, resp.text
    assert "no-store" in resp.headers["cache-control"]
    made = resp.json()
    key = made["key"]
    assert key.startswith(made["prefix"] + "_") and len(made["prefix"]) == len("mc_") + 8
    # only the hash is stored
    async with unscoped_session(db, reason="test") as s:
        row = (await s.execute(select(ApiKey).where(ApiKey.prefix == made["prefix"]))).scalar_one()
    assert row.secret_hash == hash_token(key) and key not in row.secret_hash

    async with browser(app) as bot:
        auth = {"Authorization": f"Bearer {key}"}
        listed = await bot.get(f"/api/v1/orgs/{org.slug}/members", headers=auth)
        assert listed.status_code == 200
        assert [m["email"] for m in listed.json()] == [admin.email]
        # the key's role is viewer: it may read, not manage
        assert (await bot.post(f"/api/v1/orgs/{org.slug}/invites", headers=auth,
                               json={"email": "x@example.com", "role": "viewer"})).status_code == 403

        keys = await client.get(f"/api/v1/orgs/{org.slug}/api-keys")
        [listed_key] = keys.json()
        assert key not in keys.text and "key" not in listed_key
        assert listed_key["last_used_at"] is not None and listed_key["last_used_ip"] == "127.0.0.1"

        assert (await client.delete(f"/api/v1/orgs/{org.slug}/api-keys/{made['id']}")).status_code == 204
        after = await bot.get(f"/api/v1/orgs/{org.slug}/members", headers=auth)
        assert after.status_code == 401
    assert await actions(db, org_id=org.id) == ["api_key.created", "api_key.revoked"]


async def test_key_role_cannot_exceed_the_creators(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "member"})
    await sign_in(client, db, user, settings)
    refused = await client.post(f"/api/v1/orgs/{org.slug}/api-keys", json={"name": "x", "role": "admin"})
    assert refused.status_code == 403
    assert "admin" in refused.json()["detail"]
    billing = await client.post(f"/api/v1/orgs/{org.slug}/api-keys", json={"name": "x", "role": "billing"})
    assert billing.status_code == 403  # billing has permissions a member lacks
    ok = await client.post(f"/api/v1/orgs/{org.slug}/api-keys", json={"name": "x", "role": "member"})
    assert ok.status_code == 201


async def test_members_revoke_only_their_own_keys_admins_any(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    alice, bob, admin = await make_user(db), await make_user(db), await make_user(db)
    org = await make_org(db, members={alice.id: "member", bob.id: "member", admin.id: "admin"})
    await sign_in(client, db, alice, settings)
    alices = (await client.post(f"/api/v1/orgs/{org.slug}/api-keys", json={"name": "a", "role": "member"})).json()
    await sign_in(client, db, bob, settings)
    bobs = (await client.post(f"/api/v1/orgs/{org.slug}/api-keys", json={"name": "b", "role": "member"})).json()
    refused = await client.delete(f"/api/v1/orgs/{org.slug}/api-keys/{alices['id']}")
    assert refused.status_code == 403
    assert "only the API keys you created" in refused.json()["detail"]
    assert (await client.delete(f"/api/v1/orgs/{org.slug}/api-keys/{bobs['id']}")).status_code == 204
    await sign_in(client, db, admin, settings)
    assert (await client.delete(f"/api/v1/orgs/{org.slug}/api-keys/{alices['id']}")).status_code == 204
    statuses = {k["name"]: k["status"] for k in (await client.get(f"/api/v1/orgs/{org.slug}/api-keys")).json()}
    assert statuses == {"a": "revoked", "b": "revoked"}


async def test_expiry_in_days_or_as_a_date_and_expired_keys_stop_working(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "admin"})
    await sign_in(client, db, user, settings)
    url = f"/api/v1/orgs/{org.slug}/api-keys"
    in_days = (await client.post(url, json={"name": "d", "role": "viewer", "expires_in_days": 30})).json()
    expires = datetime.fromisoformat(in_days["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    at = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    dated = (await client.post(url, json={"name": "t", "role": "viewer", "expires_at": at.isoformat()})).json()
    assert datetime.fromisoformat(dated["expires_at"]) == at
    past = await client.post(url, json={"name": "p", "role": "viewer",
                                        "expires_at": (datetime.now(UTC) - timedelta(days=1)).isoformat()})
    assert past.status_code == 422
    assert past.json()["errors"] == [{"field": "expires_at", "message": "Pick a future time."}]

    async with unscoped_session(db, reason="test: let the key expire") as s:
        row = await s.get(ApiKey, uuid.UUID(in_days["id"]))
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    resp = await client.get(f"/api/v1/orgs/{org.slug}/members",
                            headers={"Authorization": f"Bearer {in_days['key']}", **json_headers})
    assert resp.status_code == 401
    statuses = {k["name"]: k["status"] for k in (await client.get(url)).json()}
    assert statuses["d"] == "expired"


async def test_api_key_page_shows_the_secret_once_with_a_warning(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "admin"})
    await sign_in(client, db, user, settings)
    page = await client.post(f"/orgs/{org.slug}/api-keys",
                             data={"name": "Notebook", "role": "member", **await csrf_form(client)})
    assert page.status_code == 201
    assert page.headers["cache-control"] == "no-store"
    secret = page.text.split('<code class="secret">')[1].split("</code>")[0]
    assert secret.startswith("mc_")
    assert "will not be shown again" in page.text
    again = await client.get(f"/orgs/{org.slug}/api-keys")
    assert secret not in again.text and "Notebook" in again.text and secret[:11] in again.text


async def test_api_key_form_shows_errors_next_to_fields(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "member"})
    await sign_in(client, db, user, settings)
    page = await client.post(f"/orgs/{org.slug}/api-keys",
                             data={"name": "", "role": "member", "expires_in_days": "soon", **await csrf_form(client)})
    assert page.status_code == 422
    assert 'id="expires_in_days-error">A whole number of days.' in page.text
    assert 'value="soon"' in page.text  # what was typed stays
    too_high = await client.post(f"/orgs/{org.slug}/api-keys",
                                 data={"name": "k", "role": "admin", **await csrf_form(client)})
    assert too_high.status_code == 403
    assert 'id="role-error"' in too_high.text


async def test_removing_a_member_revokes_the_keys_they_created(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    owner, leaver = await make_user(db), await make_user(db)
    org = await make_org(db, members={owner.id: "owner"})
    await add_member(db, org, leaver, "member")
    await sign_in(client, db, leaver, settings)
    made = (await client.post(f"/api/v1/orgs/{org.slug}/api-keys", json={"name": "mine", "role": "member"})).json()
    assert (await client.post(f"/api/v1/orgs/{org.slug}/leave")).status_code == 204
    resp = await client.get(f"/api/v1/orgs/{org.slug}/members", headers={"Authorization": f"Bearer {made['key']}"})
    assert resp.status_code == 401
    assert await actions(db, org_id=org.id) == ["api_key.created", "member.left", "api_key.revoked"]


async def test_admin_api_is_in_the_openapi_schema_with_typed_responses(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    paths = spec["paths"]
    for path, method in [("/api/v1/orgs/{org}/members", "get"), ("/api/v1/orgs/{org}/members/{member_id}", "patch"),
                         ("/api/v1/orgs/{org}/invites", "post"), ("/api/v1/invites/accept", "post"),
                         ("/api/v1/orgs/{org}/api-keys", "post"), ("/api/v1/orgs/{org}/audit-events", "get")]:
        assert method in paths[path], path
    created = paths["/api/v1/orgs/{org}/api-keys"]["post"]["responses"]["201"]["content"]["application/json"]
    assert created["schema"]["$ref"].endswith("ApiKeyCreated")
    audit_params = {p["name"] for p in paths["/api/v1/orgs/{org}/audit-events"]["get"]["parameters"]}
    assert {"action", "actor", "target", "from", "to", "before", "limit"} <= audit_params
    assert not any(p.startswith("/orgs/") or p.startswith("/invites/") for p in paths)  # pages stay out
