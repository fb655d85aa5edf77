"""``/api/v1/orgs``: the caller's orgs, creating one, and soft delete / restore of one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from gateway.auth import client_ip, require, require_user
from gateway.deps import CurrentIdentity, Sessions, Tenant
from tenants import orgs
from tenants.accounts import ensure_verified
from tenants.db import tenant_session, unscoped_session, utcnow
from tenants.models import Org
from tenants.permissions import Permission

__all__ = ["OrgCreate", "OrgRead", "create_org", "delete_org", "get_org", "list_orgs", "restore_org"]

_TAGS = ["orgs"]


class OrgCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str


class OrgRead(msgspec.Struct, kw_only=True):
    slug: str
    name: str
    plan: str
    status: str
    role: str | None  # the caller's role in it
    deleted_at: datetime | None = None
    restorable_until: datetime | None = None  # set while a deleted org can still be restored

    @classmethod
    def of_view(cls, view: orgs.OrgMembershipView) -> OrgRead:
        return cls(slug=view.slug, name=view.name, plan=view.plan, status=view.status, role=view.role,
                   deleted_at=view.deleted_at, restorable_until=view.restorable_until)

    @classmethod
    def of(cls, org: Org, role: str | None) -> OrgRead:
        until = org.deleted_at + orgs.RESTORE_WINDOW if org.deleted_at else None
        return cls(slug=org.slug, name=org.name, plan=org.plan, status=org.status, role=role,
                   deleted_at=org.deleted_at, restorable_until=until)


@get("/api/v1/orgs", guards=[require_user], tags=_TAGS, summary="The organizations you belong to",
     description="Deleted orgs you may still restore are listed only with `include_deleted=true`.")
async def list_orgs(identity: CurrentIdentity, sessions: Sessions,
                    include_deleted: FromQuery[bool] = False) -> list[OrgRead]:
    assert identity.user_id is not None
    async with unscoped_session(sessions, reason="a person's memberships span orgs") as s:
        views = await orgs.memberships_of(s, identity.user_id, include_deleted=include_deleted)
    now = utcnow()
    # past the restore window an org is only waiting for the purge: not listed
    return [OrgRead.of_view(v) for v in views if v.restorable_until is None or v.restorable_until > now]


@post("/api/v1/orgs", guards=[require_user], tags=_TAGS, summary="Create an organization (you become its owner)",
      description="New orgs start on the Free plan. Needs a verified email.")
async def create_org(request: Request[Any, Any, Any], data: JSONBody[OrgCreate], identity: CurrentIdentity,
                     sessions: Sessions) -> OrgRead:
    assert identity.user_id is not None
    async with unscoped_session(sessions, reason="a new org's slug must be unique across all orgs") as s:
        await ensure_verified(s, identity.user_id)
        org = await orgs.create_org(s, owner_id=identity.user_id, name=data.name, actor=identity.principal,
                                    ip=client_ip(request))
        return OrgRead.of(org, "owner")


@get("/api/v1/orgs/{org:str}", guards=[require(Permission.ORG_READ)], tags=_TAGS, summary="One organization")
async def get_org(org: FromPath[str], tenant: Tenant, sessions: Sessions) -> OrgRead:
    async with tenant_session(sessions, tenant) as s:
        return OrgRead.of(await orgs.get_org(tenant, s), tenant.role)


@delete("/api/v1/orgs/{org:str}", guards=[require(Permission.ORG_DELETE)], tags=_TAGS, status_code=200,
        summary="Delete an organization (restorable for 30 days)",
        description="The org disappears at once for everyone; an owner can restore it for 30 days.")
async def delete_org(request: Request[Any, Any, Any], org: FromPath[str], tenant: Tenant,
                     sessions: Sessions) -> OrgRead:
    async with tenant_session(sessions, tenant) as s:
        return OrgRead.of(await orgs.delete_org(tenant, s, ip=client_ip(request)), tenant.role)


@post("/api/v1/orgs/{org:str}/restore", guards=[require(Permission.ORG_DELETE, allow_deleted=True)], tags=_TAGS,
      status_code=200, summary="Restore a deleted organization (within 30 days)")
async def restore_org(request: Request[Any, Any, Any], org: FromPath[str], tenant: Tenant,
                      sessions: Sessions) -> OrgRead:
    async with tenant_session(sessions, tenant) as s:
        return OrgRead.of(await orgs.restore_org(tenant, s, ip=client_ip(request)), tenant.role)
