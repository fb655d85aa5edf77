"""The audit log: filtered and paged newest first through the API and the page; append-only for the app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants import audit
from tenants.db import tenant_session, unscoped_session
from tenants.models import AuditEvent
from tenants.scope import Principal, TenantScope
from tenants.settings import Settings
from tests.factories import MadeOrg, add_member, make_org, make_user, sign_in

ADA = Principal(kind="user", id="11111111-1111-1111-1111-111111111111", display="ada@example.com")
BOB = Principal(kind="user", id="22222222-2222-2222-2222-222222222222", display="bob@example.com")


@pytest.fixture
async def org_with_events(db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection) -> MadeOrg:
    """Five events an hour apart from 2030-01-01 09:00 UTC, oldest first, by Ada and Bob in turn."""
    org = await make_org(db)
    rows = [("member.role_changed", ADA, "carol@example.com"), ("invite.created", BOB, "dan@example.com"),
            ("member.removed", ADA, "carol@example.com"), ("api_key.created", BOB, "mc_0000aaaa"),
            ("api_key.revoked", ADA, "mc_0000aaaa")]
    async with tenant_session(db, TenantScope.for_system(org.id, "test")) as s:
        for action, actor, target in rows:
            await audit.record(s, action=action, actor=actor, org_id=org.id, target_kind="x",
                               target_display=target, ip="10.0.0.1")
    # Known times; the app role may not UPDATE the log, the owner (superuser) connection may.
    await owner_conn.execute(
        "UPDATE audit_events SET created_at = $1::timestamptz + (id - (SELECT min(id) FROM audit_events)) "
        "* interval '1 hour' WHERE org_id = $2", datetime(2030, 1, 1, 9, tzinfo=UTC), org.id)
    return org


async def _reader(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings,
                  org: MadeOrg, role: str = "admin") -> None:
    user = await make_user(db)
    await add_member(db, org, user, role)
    await sign_in(client, db, user, settings)


async def test_filters_combine_and_pages_go_back_in_time_without_repeats(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, org_with_events: MadeOrg
) -> None:
    org = org_with_events
    await _reader(client, db, settings, org)
    url = f"/api/v1/orgs/{org.slug}/audit-events"
    everything = (await client.get(url)).json()
    assert [e["action"] for e in everything["events"]] == [
        "api_key.revoked", "api_key.created", "member.removed", "invite.created", "member.role_changed"]
    assert everything["next_before"] is None

    member = (await client.get(url, params={"action": "member."})).json()["events"]
    assert [e["action"] for e in member] == ["member.removed", "member.role_changed"]
    by_bob = (await client.get(url, params={"actor": "BOB@example.com"})).json()["events"]
    assert {e["actor_display"] for e in by_bob} == {"bob@example.com"} and len(by_bob) == 2
    about_key = (await client.get(url, params={"target": "mc_0000aaaa", "actor": ADA.id})).json()["events"]
    assert [e["action"] for e in about_key] == ["api_key.revoked"]
    window = (await client.get(url, params={"from": "2030-01-01T10:00:00Z", "to": "2030-01-01T12:00:00Z"})).json()
    assert [e["action"] for e in window["events"]] == ["member.removed", "invite.created"]

    seen: list[int] = []
    page = (await client.get(url, params={"limit": 2})).json()
    while True:
        seen += [e["id"] for e in page["events"]]
        if page["next_before"] is None:
            break
        page = (await client.get(url, params={"limit": 2, "before": page["next_before"]})).json()
    assert seen == [e["id"] for e in everything["events"]]


async def test_bad_filters_are_refused_with_reasons(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, org_with_events: MadeOrg
) -> None:
    await _reader(client, db, settings, org_with_events)
    url = f"/api/v1/orgs/{org_with_events.slug}/audit-events"
    assert (await client.get(url, params={"limit": 500})).status_code == 400
    backwards = await client.get(url, params={"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"})
    assert backwards.status_code == 422 and backwards.json()["errors"][0]["field"] == "to"


async def test_members_may_not_read_the_audit_log(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, org_with_events: MadeOrg
) -> None:
    await _reader(client, db, settings, org_with_events, role="member")
    assert (await client.get(f"/api/v1/orgs/{org_with_events.slug}/audit-events")).status_code == 403
    assert (await client.get(f"/orgs/{org_with_events.slug}/audit",
                             headers={"accept": "text/html"})).status_code == 403


async def test_audit_page_filters_and_links_to_older_events(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings, org_with_events: MadeOrg
) -> None:
    org = org_with_events
    await _reader(client, db, settings, org)
    page = await client.get(f"/orgs/{org.slug}/audit", params={"action": "api_key."})
    assert page.status_code == 200
    assert "<code>api_key.revoked</code>" in page.text and "member.removed" not in page.text
    assert 'value="api_key."' in page.text
    first = await client.get(f"/orgs/{org.slug}/audit", params={"actor": "ada@example.com"})
    assert first.text.count("ada@example.com</td>") + first.text.count("ada@example.com<br>") == 3
    bad = await client.get(f"/orgs/{org.slug}/audit", params={"from": "yesterday"})
    assert bad.status_code == 422 and 'id="from-error"' in bad.text and 'value="yesterday"' in bad.text


async def test_the_app_role_cannot_change_or_delete_audit_events(
    db: async_sessionmaker[AsyncSession], org_with_events: MadeOrg
) -> None:
    scope = TenantScope.for_system(org_with_events.id, "test")
    with pytest.raises(DBAPIError, match="permission denied for table audit_events"):
        async with tenant_session(db, scope) as s:
            await s.execute(update(AuditEvent).values(action="nothing.happened"))
    with pytest.raises(DBAPIError, match="permission denied for table audit_events"):
        async with unscoped_session(db, reason="test: even unscoped") as s:
            await s.execute(delete(AuditEvent).where(AuditEvent.created_at < datetime.now(UTC) + timedelta(days=9999)))
    async with unscoped_session(db, reason="test") as s:
        assert (await s.execute(select(func.count()).select_from(AuditEvent)
                                .where(AuditEvent.action == "nothing.happened"))).scalar_one() == 0
