"""The operator console: invisible to everyone else, lists every org and user, suspends and restores orgs."""

from __future__ import annotations

import uuid
from typing import Any, cast

import httpx
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.db import unscoped_session
from tenants.models import AuditEvent, Org
from tenants.settings import Settings
from tests.factories import add_member, ensure_csrf, make_api_key, make_org, make_user, sign_in

HTML = {"accept": "text/html"}


def _another_browser(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=cast(Any, app)), base_url="http://testserver")


async def _operator(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    op = await make_user(db, f"op-{uuid.uuid4().hex[:6]}@metacloud.test", operator=True)
    await sign_in(client, db, op, settings)


async def test_console_does_not_exist_for_non_operators(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    owner = await make_user(db)
    org = await make_org(db, members={owner.id: "owner"})
    await sign_in(client, db, owner, settings)
    for path in ("/api/v1/operator/orgs", "/api/v1/operator/users", "/operator", "/operator/users"):
        assert (await client.get(path)).status_code == 404, path
    resp = await client.post(f"/api/v1/operator/orgs/{org.id}/suspend", json={"reason": "x"})
    assert resp.status_code == 404
    key = await make_api_key(db, org, role="admin")
    resp = await _another_browser(app).get("/api/v1/operator/orgs", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 404


async def test_operator_lists_orgs_with_member_counts_and_searches_them(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    a, b = await make_user(db), await make_user(db)
    busy = await make_org(db, members={a.id: "owner", b.id: "member"}, slug="busy-lab")
    await make_org(db, slug="quiet-lab")
    await _operator(client, db, settings)

    everything = (await client.get("/api/v1/operator/orgs")).json()
    assert everything["total"] == 2
    found = (await client.get("/api/v1/operator/orgs", params={"q": "busy"})).json()
    assert found["total"] == 1
    [row] = found["items"]
    assert (row["id"], row["slug"], row["members"], row["plan"], row["status"]) == (
        str(busy.id), "busy-lab", 2, "free", "active")
    paged = (await client.get("/api/v1/operator/orgs", params={"limit": 1, "offset": 1})).json()
    assert (paged["total"], len(paged["items"]), paged["offset"]) == (2, 1, 1)
    assert (await client.get("/api/v1/operator/orgs", params={"q": "100%_"})).json()["total"] == 0


async def test_operator_searches_users_by_email(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    findme = await make_user(db, "find.me@customer.test")
    org = await make_org(db, members={findme.id: "member"})
    await make_user(db, "someone@else.test")
    await _operator(client, db, settings)

    resp = (await client.get("/api/v1/operator/users", params={"q": "FIND.ME"})).json()

    assert resp["total"] == 1
    [row] = resp["items"]
    assert (row["email"], row["orgs"], row["is_operator"], row["email_verified"]) == (
        "find.me@customer.test", 1, False, True)
    assert org.slug not in str(resp)


async def test_suspended_orgs_members_get_org_suspended_until_restored(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    admin = await make_user(db)
    org = await make_org(db, members={admin.id: "admin"})
    member_client = _another_browser(app)
    await sign_in(member_client, db, admin, settings)
    assert (await member_client.get(f"/api/v1/orgs/{org.slug}/sso")).status_code == 404  # reachable: no SSO yet
    await _operator(client, db, settings)

    resp = await client.post(f"/api/v1/operator/orgs/{org.id}/suspend", json={"reason": "unpaid invoices"})
    assert resp.status_code == 200
    assert (resp.json()["status"], resp.json()["suspended_reason"]) == ("suspended", "unpaid invoices")

    refused = await member_client.get(f"/api/v1/orgs/{org.slug}/sso")
    assert refused.status_code == 403 and refused.json()["code"] == "org_suspended"

    again = await client.post(f"/api/v1/operator/orgs/{org.id}/suspend", json={"reason": "again"})
    assert again.status_code == 409
    restored = await client.post(f"/api/v1/operator/orgs/{org.id}/restore")
    assert restored.status_code == 200 and restored.json()["status"] == "active"
    assert (await member_client.get(f"/api/v1/orgs/{org.slug}/sso")).status_code == 404  # back in

    async with unscoped_session(db, reason="test") as s:
        events = (await s.execute(select(AuditEvent).where(AuditEvent.action.like("org.%"))
                                  .order_by(AuditEvent.id))).scalars().all()
    assert [(e.action, e.org_id, e.actor_kind, e.target_id) for e in events] == [
        ("org.suspended", org.id, "operator", str(org.id)),
        ("org.restored", org.id, "operator", str(org.id)),
    ]
    assert events[0].details == {"reason": "unpaid invoices"}


async def test_suspending_needs_a_reason_and_an_existing_org(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(db)
    await _operator(client, db, settings)

    blank = await client.post(f"/api/v1/operator/orgs/{org.id}/suspend", json={"reason": "  "})
    assert blank.status_code == 422
    assert blank.json()["errors"][0]["field"] == "reason"
    missing = await client.post(f"/api/v1/operator/orgs/{uuid.uuid4()}/suspend", json={"reason": "x"})
    assert missing.status_code == 404
    async with unscoped_session(db, reason="test") as s:
        assert (await s.get(Org, org.id)).status == "active"  # type: ignore[union-attr]


async def test_console_page_suspends_with_a_reason_and_restores(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    owner = await make_user(db)
    org = await make_org(db, members={owner.id: "owner"}, slug="page-lab")
    await _operator(client, db, settings)
    token = await ensure_csrf(client)

    page = await client.get("/operator", params={"q": "page-lab"}, headers=HTML)
    assert page.status_code == 200 and "page-lab" in page.text and "Suspend" in page.text

    no_reason = await client.post(f"/operator/orgs/{org.id}/suspend", data={"_csrf_token": token, "reason": ""},
                                  headers=HTML)
    assert no_reason.status_code == 422
    assert "Say why" in no_reason.text and "page-lab" in no_reason.text

    done = await client.post(f"/operator/orgs/{org.id}/suspend",
                             data={"_csrf_token": token, "reason": "abuse report #12", "q": "page-lab"}, headers=HTML)
    assert done.status_code == 303
    shown = await client.get(done.headers["location"], headers=HTML)
    assert "page-lab is suspended." in shown.text and "abuse report #12" in shown.text and "Restore" in shown.text

    back = await client.post(f"/operator/orgs/{org.id}/restore", data={"_csrf_token": token}, headers=HTML)
    assert back.status_code == 303
    async with unscoped_session(db, reason="test") as s:
        row = await s.get(Org, org.id)
    assert row is not None and (row.status, row.suspended_reason) == ("active", None)


async def test_users_page_lists_people(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    person = await make_user(db, "listed@customer.test")
    org = await make_org(db)
    await add_member(db, org, person, "viewer")
    await _operator(client, db, settings)

    page = await client.get("/operator/users", params={"q": "listed"}, headers=HTML)

    assert page.status_code == 200
    assert "listed@customer.test" in page.text and "1 user" in page.text
