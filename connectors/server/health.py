"""The heartbeat sweep: attached clusters whose last heartbeat is older than the cutoff become
``disconnected`` with a reason a person can act on, in one statement across every org.

Rows a heartbeat holds right now are skipped (``SKIP LOCKED``): that heartbeat proves the agent is
alive, and the next sweep sees its fresh timestamp.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.db import unscoped_session

__all__ = ["STALE_REASON_TAIL", "Disconnected", "disconnect_stale"]

STALE_REASON_TAIL = "(agent stopped, or network/proxy blocks outbound HTTPS)"

_SWEEP = text(
    f"""
    WITH stale AS (
        SELECT id FROM clusters
         WHERE state = 'attached' AND coalesce(last_heartbeat_at, registered_at, state_changed_at) < :cutoff
           FOR UPDATE SKIP LOCKED
    ), upd AS (
        UPDATE clusters c SET state = 'disconnected', state_changed_at = :now,
               state_reason = 'no heartbeat since '
                   || coalesce(to_char(c.last_heartbeat_at AT TIME ZONE 'UTC', 'HH24:MI:SS') || ' UTC',
                               'the agent registered')
                   || ' {STALE_REASON_TAIL}'
          FROM stale WHERE c.id = stale.id
     RETURNING c.id, c.org_id, c.state_reason
    )
    INSERT INTO cluster_events (cluster_id, org_id, at, from_state, to_state, reason)
    SELECT id, org_id, :now, 'attached', 'disconnected', state_reason FROM upd
    RETURNING cluster_id, org_id, reason
    """  # noqa: S608 - a constant, not input
)


@dataclass(frozen=True, slots=True)
class Disconnected:
    org_id: uuid.UUID
    cluster_id: uuid.UUID
    reason: str


async def disconnect_stale(
    sessions: async_sessionmaker[AsyncSession], *, cutoff: datetime, now: datetime
) -> list[Disconnected]:
    async with unscoped_session(sessions, reason="the heartbeat sweep covers every org's clusters") as s:
        rows = (await s.execute(_SWEEP, {"cutoff": cutoff, "now": now})).all()
    return [Disconnected(org_id=r.org_id, cluster_id=r.cluster_id, reason=r.reason) for r in rows]
