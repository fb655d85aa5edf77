"""``/api/v1/orgs/{org}/audit-events``: the org's audit log, newest first, with filters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.params import FromPath, QueryParameter

from gateway.auth import require
from gateway.deps import Sessions, Tenant
from tenants import audit_query
from tenants.db import tenant_session
from tenants.permissions import Permission

__all__ = ["AuditEventRead", "AuditPageRead", "list_audit_events"]


class AuditEventRead(msgspec.Struct, kw_only=True):
    id: int
    created_at: datetime
    action: str
    actor_kind: str
    actor_id: str | None
    actor_display: str
    target_kind: str | None
    target_id: str | None
    target_display: str
    ip: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, v: audit_query.AuditView) -> AuditEventRead:
        return cls(id=v.id, created_at=v.created_at, action=v.action, actor_kind=v.actor_kind, actor_id=v.actor_id,
                   actor_display=v.actor_display, target_kind=v.target_kind, target_id=v.target_id,
                   target_display=v.target_display, ip=v.ip, details=v.details)


class AuditPageRead(msgspec.Struct, kw_only=True):
    events: list[AuditEventRead]
    next_before: int | None  # pass as ?before= for the next (older) page; null on the last page


@get("/api/v1/orgs/{org:str}/audit-events", guards=[require(Permission.AUDIT_READ)], tags=["audit"],
     summary="The org's audit log, newest first",
     description="Filters combine with AND. Page with ?before=<next_before>&limit=<1..200>.")
async def list_audit_events(
    org: FromPath[str],
    tenant: Tenant,
    sessions: Sessions,
    action: Annotated[str, QueryParameter(description="action prefix, e.g. 'member.' or 'api_key.revoked'")] = "",
    actor: Annotated[str, QueryParameter(description="actor id or display (email, key prefix)")] = "",
    target: Annotated[str, QueryParameter(description="target id or display")] = "",
    since: Annotated[datetime | None, QueryParameter(name="from", description="from this time (inclusive)")] = None,
    until: Annotated[datetime | None, QueryParameter(name="to", description="until this time (exclusive)")] = None,
    before: Annotated[int | None, QueryParameter(description="only events with a smaller id", ge=1)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=audit_query.MAX_LIMIT)] = 50,
) -> AuditPageRead:
    flt = audit_query.AuditFilter(action_prefix=action, actor=actor, target=target, since=since, until=until,
                                  before=before, limit=limit)
    async with tenant_session(sessions, tenant) as s:
        page = await audit_query.list_audit_events(s, tenant, flt)
    return AuditPageRead(events=[AuditEventRead.of(e) for e in page.events], next_before=page.next_before)
