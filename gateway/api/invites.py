"""``/api/v1/orgs/{org}/invites``: invite by email, list, revoke; ``/api/v1/invites/accept``: join."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.params import FromPath, JSONBody

from gateway.auth import client_ip, require, require_user
from gateway.deps import AppSettings, CurrentIdentity, Sessions, Tenant
from tenants import invites
from tenants.db import tenant_session, unscoped_session
from tenants.permissions import Permission

__all__ = ["InviteAccept", "InviteAccepted", "InviteCreate", "InviteRead", "accept_invite", "create_invite",
           "list_invites", "revoke_invite"]

_PATH = "/api/v1/orgs/{org:str}/invites"
_TAGS = ["invites"]


class InviteCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: str
    role: str = "member"


class InviteRead(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    email: str
    role: str
    status: str  # pending | expired | accepted | revoked
    invited_by: str
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, v: invites.InviteView) -> InviteRead:
        return cls(id=v.id, email=v.email, role=v.role, status=v.status, invited_by=v.invited_by,
                   created_at=v.created_at, expires_at=v.expires_at, accepted_at=v.accepted_at,
                   revoked_at=v.revoked_at)


class InviteAccept(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: str


class InviteAccepted(msgspec.Struct, kw_only=True):
    org: str  # the org's slug
    org_name: str
    role: str


@get(_PATH, guards=[require(Permission.INVITES_MANAGE)], tags=_TAGS, summary="Invitations, newest first")
async def list_invites(org: FromPath[str], tenant: Tenant, sessions: Sessions) -> list[InviteRead]:
    async with tenant_session(sessions, tenant) as s:
        return [InviteRead.of(v) for v in await invites.list_invites(s, tenant)]


@post(_PATH, guards=[require(Permission.INVITES_MANAGE)], tags=_TAGS, summary="Invite someone by email",
      description="Emails a single-use link valid for 7 days. The role must be within yours; inviting a "
                  "member, or an address with a pending invitation, answers 409.")
async def create_invite(
    org: FromPath[str], data: JSONBody[InviteCreate], tenant: Tenant, sessions: Sessions, settings: AppSettings,
    request: Request[Any, Any, Any],
) -> InviteRead:
    async with tenant_session(sessions, tenant) as s:
        created = await invites.create_invite(s, tenant, email=data.email, role=data.role,
                                              public_url=settings.public_url, ip=client_ip(request))
        return InviteRead.of(created.invite)


@delete(_PATH + "/{invite_id:uuid}", guards=[require(Permission.INVITES_MANAGE)], tags=_TAGS,
        summary="Revoke an invitation", description="Its link stops working. Revoking twice is harmless.")
async def revoke_invite(
    org: FromPath[str], invite_id: FromPath[uuid.UUID], tenant: Tenant, sessions: Sessions,
    request: Request[Any, Any, Any],
) -> None:
    async with tenant_session(sessions, tenant) as s:
        await invites.revoke_invite(s, tenant, invite_id, ip=client_ip(request))


@post("/api/v1/invites/accept", guards=[require_user], tags=_TAGS, status_code=200,
      summary="Accept an invitation as the signed-in user",
      description="The invitation must be for your email address. A used, revoked or expired one answers 409.")
async def accept_invite(
    data: JSONBody[InviteAccept], identity: CurrentIdentity, sessions: Sessions, request: Request[Any, Any, Any]
) -> InviteAccepted:
    assert identity.user_id is not None  # require_user
    async with unscoped_session(sessions, reason="invite acceptance: the token names the org") as s:
        done = await invites.accept_invite(s, data.token, user_id=identity.user_id, ip=client_ip(request))
        return InviteAccepted(org=done.org_slug, org_name=done.org_name, role=done.role)
