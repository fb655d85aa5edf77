"""Reading an org's audit log: filters and keyset pagination, newest first.

Pages are cut by id (``before=<id of the last event seen>``), not by offset, so a page never
repeats or skips events while new ones are being written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenants.errors import InvalidInput
from tenants.models import AuditEvent
from tenants.permissions import Permission
from tenants.scope import TenantScope

__all__ = ["MAX_LIMIT", "AuditFilter", "AuditPage", "AuditView", "list_audit_events"]

MAX_LIMIT = 200


@dataclass(frozen=True, slots=True)
class AuditFilter:
    action_prefix: str = ""  # "member." matches member.removed, member.left, ...
    actor: str = ""  # an actor id or display (email, key prefix)
    target: str = ""  # a target id or display
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    before: int | None = None  # keyset cursor: events with a smaller id
    limit: int = 50


@dataclass(frozen=True, slots=True)
class AuditView:
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
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditView]
    next_before: int | None  # pass as ``before`` for the next (older) page; None on the last page


def _check(f: AuditFilter) -> None:
    errors: dict[str, str] = {}
    if not 1 <= f.limit <= MAX_LIMIT:
        errors["limit"] = f"Between 1 and {MAX_LIMIT}."
    if f.since and f.until and f.since >= f.until:
        errors["to"] = "Must be after 'from'."
    if f.before is not None and f.before < 1:
        errors["before"] = "An event id (a positive number)."
    if errors:
        raise InvalidInput("Check the filters.", field_errors=errors)


async def list_audit_events(session: AsyncSession, scope: TenantScope, f: AuditFilter) -> AuditPage:
    scope.require(Permission.AUDIT_READ)
    _check(f)
    query = select(AuditEvent).where(AuditEvent.org_id == scope.org_id)
    if f.action_prefix.strip():
        query = query.where(AuditEvent.action.startswith(f.action_prefix.strip(), autoescape=True))
    if f.actor.strip():
        actor = f.actor.strip()
        query = query.where(or_(AuditEvent.actor_id == actor, func.lower(AuditEvent.actor_display) == actor.lower()))
    if f.target.strip():
        target = f.target.strip()
        query = query.where(or_(AuditEvent.target_id == target,
                                func.lower(AuditEvent.target_display) == target.lower()))
    if f.since is not None:
        query = query.where(AuditEvent.created_at >= f.since)
    if f.until is not None:
        query = query.where(AuditEvent.created_at < f.until)
    if f.before is not None:
        query = query.where(AuditEvent.id < f.before)
    rows = list((await session.execute(query.order_by(AuditEvent.id.desc()).limit(f.limit + 1))).scalars())
    more = len(rows) > f.limit
    rows = rows[: f.limit]
    return AuditPage(events=[_view(e) for e in rows], next_before=rows[-1].id if more and rows else None)


def _view(e: AuditEvent) -> AuditView:
    return AuditView(
        id=e.id, created_at=e.created_at, action=e.action, actor_kind=e.actor_kind, actor_id=e.actor_id,
        actor_display=e.actor_display, target_kind=e.target_kind, target_id=e.target_id,
        target_display=e.target_display, ip=e.ip, details=dict(e.details or {}),
    )

