"""The audit log: append-only records of security- and admin-relevant actions."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tenants.db import utcnow
from tenants.models import AuditEvent
from tenants.scope import Principal

__all__ = ["record"]


async def record(
    session: AsyncSession,
    *,
    action: str,
    actor: Principal | None,
    org_id: uuid.UUID | None = None,
    target_kind: str | None = None,
    target_id: str | uuid.UUID | None = None,
    target_display: str = "",
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add one event in the caller's transaction (it is kept only if the change it describes is)."""
    session.add(
        AuditEvent(
            org_id=org_id,
            created_at=utcnow(),
            actor_kind=actor.kind if actor else "anonymous",
            actor_id=actor.id if actor else None,
            actor_display=actor.display if actor else "",
            action=action,
            target_kind=target_kind,
            target_id=str(target_id) if target_id is not None else None,
            target_display=target_display,
            ip=ip,
            details=details or {},
        )
    )
    await session.flush()
