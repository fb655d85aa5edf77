"""``/api/v1/orgs/{org}/members``: list members, change a role, remove a member, leave."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, delete, get, patch, post
from litestar.params import FromPath, JSONBody

from gateway.auth import client_ip, require
from gateway.deps import Sessions, Tenant
from tenants import members
from tenants.db import tenant_session
from tenants.permissions import Permission

__all__ = ["MemberRead", "MemberRoleChange", "change_member_role", "leave_org", "list_members", "remove_member"]

_PATH = "/api/v1/orgs/{org:str}/members"
_TAGS = ["members"]


class MemberRoleChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: str  # owner | admin | billing | member | viewer


class MemberRead(msgspec.Struct, kw_only=True):
    id: uuid.UUID  # the membership id: address the member with it
    user_id: uuid.UUID
    email: str
    name: str
    role: str
    joined_at: datetime

    @classmethod
    def of(cls, m: members.MemberView) -> MemberRead:
        return cls(id=m.id, user_id=m.user_id, email=m.email, name=m.name, role=m.role, joined_at=m.joined_at)


@get(_PATH, guards=[require(Permission.MEMBERS_READ)], tags=_TAGS, summary="Members of the org and their roles")
async def list_members(org: FromPath[str], tenant: Tenant, sessions: Sessions) -> list[MemberRead]:
    async with tenant_session(sessions, tenant) as s:
        return [MemberRead.of(m) for m in await members.list_members(s, tenant)]


@patch(_PATH + "/{member_id:uuid}", guards=[require(Permission.MEMBERS_MANAGE)], tags=_TAGS,
       summary="Change a member's role",
       description="The new role must be within your own; granting or taking away 'owner' needs owners:manage. "
                   "Demoting the last owner answers 409.")
async def change_member_role(
    org: FromPath[str], member_id: FromPath[uuid.UUID], data: JSONBody[MemberRoleChange], tenant: Tenant, sessions: Sessions,
    request: Request[Any, Any, Any],
) -> MemberRead:
    async with tenant_session(sessions, tenant) as s:
        return MemberRead.of(await members.change_role(s, tenant, member_id, data.role, ip=client_ip(request)))


@delete(_PATH + "/{member_id:uuid}", guards=[require(Permission.MEMBERS_MANAGE)], tags=_TAGS,
        summary="Remove a member", description="Their API keys in this org are revoked. The last owner stays (409).")
async def remove_member(
    org: FromPath[str], member_id: FromPath[uuid.UUID], tenant: Tenant, sessions: Sessions,
    request: Request[Any, Any, Any],
) -> None:
    async with tenant_session(sessions, tenant) as s:
        await members.remove_member(s, tenant, member_id, ip=client_ip(request))


@post("/api/v1/orgs/{org:str}/leave", guards=[require(Permission.ORG_READ)], tags=_TAGS, status_code=204,
      summary="Leave the org yourself", description="The last owner cannot leave (409): make someone else owner first.")
async def leave_org(org: FromPath[str], tenant: Tenant, sessions: Sessions, request: Request[Any, Any, Any]) -> None:
    async with tenant_session(sessions, tenant) as s:
        await members.leave_org(s, tenant, ip=client_ip(request))
