"""``/api/v1/operator/...``: the platform operator's API. Everyone else gets 404: it does not exist for them.

Orgs are addressed by id here (``{org_id}``), never by the ``{org}`` slug that member routes resolve.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from gateway.auth import client_ip, require_operator
from gateway.deps import CurrentIdentity, Sessions
from tenants import operators
from tenants.db import unscoped_session

__all__ = ["list_orgs", "list_users", "restore_org", "suspend_org"]

_TAGS = ["operator"]
Limit = Annotated[int, QueryParameter(ge=1, le=operators.MAX_PAGE)]
# A bound keeps absurd offsets (past int64) from reaching PostgreSQL as a 500.
Offset = Annotated[int, QueryParameter(ge=0, le=1_000_000)]


class OperatorOrg(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    slug: str
    name: str
    plan: str
    status: str  # active | suspended
    suspended_reason: str | None
    members: int
    created_at: datetime
    deleted_at: datetime | None


class OperatorOrgPage(msgspec.Struct, kw_only=True):
    items: list[OperatorOrg]
    total: int
    limit: int
    offset: int


class OperatorUser(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    email: str
    name: str
    is_operator: bool
    email_verified: bool
    orgs: int
    created_at: datetime
    last_login_at: datetime | None


class OperatorUserPage(msgspec.Struct, kw_only=True):
    items: list[OperatorUser]
    total: int
    limit: int
    offset: int


class SuspendRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str


class RestoreRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    note: str = ""


def _org(o: operators.OrgSummary) -> OperatorOrg:
    return OperatorOrg(**asdict(o))


@get("/api/v1/operator/orgs", guards=[require_operator], tags=_TAGS, summary="Every organization")
async def list_orgs(
    identity: CurrentIdentity, sessions: Sessions, q: FromQuery[str] = "", limit: Limit = 50, offset: Offset = 0
) -> OperatorOrgPage:
    actor = operators.operator_principal(identity)
    async with unscoped_session(sessions, reason="operator console lists every org") as s:
        page = await operators.list_orgs(s, actor, q=q, limit=limit, offset=offset)
    return OperatorOrgPage(items=[_org(o) for o in page.items], total=page.total, limit=page.limit,
                           offset=page.offset)


@get("/api/v1/operator/users", guards=[require_operator], tags=_TAGS, summary="Every user")
async def list_users(
    identity: CurrentIdentity, sessions: Sessions, q: FromQuery[str] = "", limit: Limit = 50, offset: Offset = 0
) -> OperatorUserPage:
    actor = operators.operator_principal(identity)
    async with unscoped_session(sessions, reason="operator console lists every user") as s:
        page = await operators.list_users(s, actor, q=q, limit=limit, offset=offset)
    return OperatorUserPage(items=[OperatorUser(**asdict(u)) for u in page.items], total=page.total,
                            limit=page.limit, offset=page.offset)


@post("/api/v1/operator/orgs/{org_id:uuid}/suspend", guards=[require_operator], tags=_TAGS, status_code=200,
      summary="Suspend an organization", description="Its members get 403 `org_suspended` until it is restored.")
async def suspend_org(
    org_id: FromPath[uuid.UUID], data: JSONBody[SuspendRequest], identity: CurrentIdentity, sessions: Sessions,
    request: Request[Any, Any, Any],
) -> OperatorOrg:
    actor = operators.operator_principal(identity)
    async with unscoped_session(sessions, reason="operator suspends an org") as s:
        return _org(await operators.suspend_org(s, actor, org_id, reason=data.reason, ip=client_ip(request)))


@post("/api/v1/operator/orgs/{org_id:uuid}/restore", guards=[require_operator], tags=_TAGS, status_code=200,
      summary="Restore a suspended organization")
async def restore_org(
    org_id: FromPath[uuid.UUID], identity: CurrentIdentity, sessions: Sessions, request: Request[Any, Any, Any],
    data: JSONBody[RestoreRequest | None] = None,
) -> OperatorOrg:
    actor = operators.operator_principal(identity)
    async with unscoped_session(sessions, reason="operator restores an org") as s:
        summary = await operators.restore_org(s, actor, org_id, note=data.note if data else "", ip=client_ip(request))
        return _org(summary)
