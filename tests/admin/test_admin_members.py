"""Members and roles: list, change a role within your own, remove, leave; an org always keeps an owner."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants import members
from tenants.db import tenant_session, unscoped_session
from tenants.errors import Conflict
from tenants.models import Membership
from tenants.permissions import permissions_for
from tenants.scope import Principal, TenantScope
from tenants.settings import Settings
from tests.admin.helpers import actions, csrf_form
from tests.factories import MadeOrg, MadeUser, make_org, make_user, sign_in


async def _member_ids(client: httpx.AsyncClient, org: MadeOrg) -> dict[str, str]:
    resp = await client.get(f"/api/v1/orgs/{org.slug}/members")
    assert resp.status_code == 200, resp.text
    return {m["email"]: m["id"] for m in resp.json()}


async def _roles(db: async_sessionmaker[AsyncSession], org: MadeOrg) -> dict[uuid.UUID, str]:
    async with unscoped_session(db, reason="test") as s:
        rows = await s.execute(select(Membership.user_id, Membership.role).where(Membership.org_id == org.id))
        return {user_id: role for user_id, role in rows}


async def test_admin_lists_members_and_changes_a_role_which_is_audited(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    admin, dev = await make_user(db), await make_user(db)
    org = await make_org(db, members={admin.id: "admin", dev.id: "viewer"})
    await sign_in(client, db, admin, settings)
    ids = await _member_ids(client, org)
    assert set(ids) == {admin.email, dev.email}
    resp = await client.patch(f"/api/v1/orgs/{org.slug}/members/{ids[dev.email]}", json={"role": "member"})
    assert resp.status_code == 200
    assert resp.json()["role"] == "member"
    assert (await _roles(db, org))[dev.id] == "member"
    assert await actions(db, org_id=org.id) == ["member.role_changed"]


async def test_a_role_above_your_own_cannot_be_granted(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    admin, dev = await make_user(db), await make_user(db)
    owner = await make_user(db)
    org = await make_org(db, members={owner.id: "owner", admin.id: "admin", dev.id: "member"})
    await sign_in(client, db, admin, settings)
    ids = await _member_ids(client, org)
    to_owner = await client.patch(f"/api/v1/orgs/{org.slug}/members/{ids[dev.email]}", json={"role": "owner"})
    assert to_owner.status_code == 403
    assert "owners:manage" in to_owner.json()["detail"]
    demote_owner = await client.patch(f"/api/v1/orgs/{org.slug}/members/{ids[owner.email]}", json={"role": "viewer"})
    assert demote_owner.status_code == 403
    remove_owner = await client.delete(f"/api/v1/orgs/{org.slug}/members/{ids[owner.email]}")
    assert remove_owner.status_code == 403
    assert (await _roles(db, org)) == {owner.id: "owner", admin.id: "admin", dev.id: "member"}
    assert await actions(db, org_id=org.id) == []


async def test_unknown_role_is_a_field_error(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    owner, dev = await make_user(db), await make_user(db)
    org = await make_org(db, members={owner.id: "owner", dev.id: "member"})
    await sign_in(client, db, owner, settings)
    ids = await _member_ids(client, org)
    resp = await client.patch(f"/api/v1/orgs/{org.slug}/members/{ids[dev.email]}", json={"role": "god"})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "role"


async def test_the_last_owner_can_be_neither_demoted_nor_removed_nor_leave(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    owner = await make_user(db)
    org = await make_org(db, members={owner.id: "owner"})
    await sign_in(client, db, owner, settings)
    me = (await _member_ids(client, org))[owner.email]
    for resp in (
        await client.patch(f"/api/v1/orgs/{org.slug}/members/{me}", json={"role": "admin"}),
        await client.delete(f"/api/v1/orgs/{org.slug}/members/{me}"),
        await client.post(f"/api/v1/orgs/{org.slug}/leave"),
    ):
        assert resp.status_code == 409
        assert resp.json()["detail"] == members.LAST_OWNER_MESSAGE
    assert (await _roles(db, org)) == {owner.id: "owner"}


async def test_an_owner_hands_over_then_leaves(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    founder, successor = await make_user(db), await make_user(db)
    org = await make_org(db, members={founder.id: "owner", successor.id: "admin"})
    await sign_in(client, db, founder, settings)
    ids = await _member_ids(client, org)
    assert (await client.patch(f"/api/v1/orgs/{org.slug}/members/{ids[successor.email]}",
                               json={"role": "owner"})).status_code == 200
    assert (await client.post(f"/api/v1/orgs/{org.slug}/leave")).status_code == 204
    assert await _roles(db, org) == {successor.id: "owner"}
    # gone: the org is now invisible to them
    assert (await client.get(f"/api/v1/orgs/{org.slug}/members")).status_code == 404
    assert await actions(db, org_id=org.id) == ["member.role_changed", "member.left"]


async def test_admin_removes_a_member_who_then_loses_access(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    admin, dev = await make_user(db), await make_user(db)
    org = await make_org(db, members={admin.id: "admin", dev.id: "member"})
    await sign_in(client, db, admin, settings)
    ids = await _member_ids(client, org)
    assert (await client.delete(f"/api/v1/orgs/{org.slug}/members/{ids[dev.email]}")).status_code == 204
    assert set(await _member_ids(client, org)) == {admin.email}
    await sign_in(client, db, dev, settings)
    assert (await client.get(f"/api/v1/orgs/{org.slug}/members")).status_code == 404
    assert await actions(db, org_id=org.id) == ["member.removed"]


def _owner_scope(org: MadeOrg, user: MadeUser) -> TenantScope:
    return TenantScope(org_id=org.id, principal=Principal(kind="user", id=str(user.id), display=user.email),
                       org_slug=org.slug, role="owner", permissions=permissions_for("owner"))


async def test_two_owners_demoting_each_other_at_once_leave_one_owner(db: async_sessionmaker[AsyncSession]) -> None:
    a, b = await make_user(db), await make_user(db)
    for _ in range(5):  # races are timing-dependent: try a few times
        org = await make_org(db, members={a.id: "owner", b.id: "owner"})
        async with unscoped_session(db, reason="test") as s:
            ids = dict((await s.execute(
                select(Membership.user_id, Membership.id).where(Membership.org_id == org.id)
            )).all())

        async def demote(actor: MadeUser, target: uuid.UUID, org: MadeOrg = org) -> str:
            try:
                async with tenant_session(db, _owner_scope(org, actor)) as s:
                    await members.change_role(s, _owner_scope(org, actor), target, "admin")
                    await asyncio.sleep(0.05)  # hold the transaction open so the other one overlaps
                return "ok"
            except Conflict:
                return "conflict"

        results = await asyncio.gather(demote(a, ids[b.id]), demote(b, ids[a.id]))
        assert sorted(results) == ["conflict", "ok"]
        assert sorted((await _roles(db, org)).values()) == ["admin", "owner"]


async def test_members_page_changes_a_role_and_shows_refusals_in_place(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    owner, dev = await make_user(db), await make_user(db)
    org = await make_org(db, members={owner.id: "owner", dev.id: "viewer"})
    await sign_in(client, db, owner, settings)
    page = await client.get(f"/orgs/{org.slug}/members")
    assert page.status_code == 200 and dev.email in page.text
    ids = await _member_ids(client, org)
    done = await client.post(f"/orgs/{org.slug}/members/{ids[dev.email]}/role",
                             data={"role": "admin", **await csrf_form(client)})
    assert done.status_code == 303
    shown = await client.get(done.headers["location"])
    assert f"{dev.email} is now admin." in shown.text
    refused = await client.post(f"/orgs/{org.slug}/members/{ids[owner.email]}/role",
                                data={"role": "viewer", **await csrf_form(client)})
    assert refused.status_code == 409
    assert f'id="row-{ids[owner.email]}-error"' in refused.text
    assert "at least one owner" in refused.text
    removed = await client.post(f"/orgs/{org.slug}/members/{ids[dev.email]}/remove", data=await csrf_form(client))
    assert removed.status_code == 303
    assert dev.email not in (await client.get(f"/orgs/{org.slug}/members")).text


async def test_viewer_sees_members_without_manage_controls_and_can_leave(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    owner, viewer = await make_user(db), await make_user(db)
    org = await make_org(db, members={owner.id: "owner", viewer.id: "viewer"})
    await sign_in(client, db, viewer, settings)
    page = await client.get(f"/orgs/{org.slug}/members")
    assert page.status_code == 200 and owner.email in page.text
    assert "/remove" not in page.text and "/role" not in page.text
    assert "/invites" not in page.text  # no tab to a page the role may not open
    left = await client.post(f"/orgs/{org.slug}/leave", data=await csrf_form(client))
    assert left.status_code == 303 and left.headers["location"].startswith("/orgs?")
    assert await _roles(db, org) == {owner.id: "owner"}
