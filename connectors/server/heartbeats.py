"""Heartbeats: the hot path (every agent, every 15 s). One statement per heartbeat: a data-modifying
CTE stamps ``clusters.last_heartbeat_at`` and upserts ``cluster_inventories``, returning the state.
Only a real change (``disconnected`` -> ``attached``) writes more; nothing here calls Temporal.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.protocol import Heartbeat
from connectors.server.capacity import summarize
from connectors.server.clusters import ClusterState, transition

__all__ = ["HeartbeatOutcome", "record_heartbeat"]

RECONNECT_REASON = "heartbeats arrive again: the agent is back online"


@dataclass(frozen=True, slots=True)
class HeartbeatOutcome:
    state: str  # the cluster's state after this heartbeat
    registered: bool
    reconnected: bool  # this heartbeat moved the cluster from disconnected back to attached


_HEARTBEAT = text(
    """
    WITH c AS (
        UPDATE clusters SET last_heartbeat_at = :now, agent_version = :agent_version,
               kubernetes_version = coalesce(:k8s, kubernetes_version)
         WHERE id = :cluster_id
     RETURNING state, registered_at
    ), inv AS (
        INSERT INTO cluster_inventories AS i (cluster_id, org_id, reported_at, node_count, cpu_total_millis,
               cpu_allocated_millis, memory_total_bytes, memory_allocated_bytes, gpu_total, gpu_allocated,
               storage_total_bytes, storage_allocated_bytes, gpus_by_type, inventory)
        VALUES (:cluster_id, :org_id, :now, :node_count, :cpu_total, :cpu_used, :mem_total, :mem_used, :gpu_total,
               :gpu_used, :storage_total, :storage_used, CAST(:gpus_by_type AS JSONB), CAST(:inventory AS JSONB))
        ON CONFLICT (cluster_id) DO UPDATE SET reported_at = EXCLUDED.reported_at,
               node_count = EXCLUDED.node_count, cpu_total_millis = EXCLUDED.cpu_total_millis,
               cpu_allocated_millis = EXCLUDED.cpu_allocated_millis, memory_total_bytes = EXCLUDED.memory_total_bytes,
               memory_allocated_bytes = EXCLUDED.memory_allocated_bytes, gpu_total = EXCLUDED.gpu_total,
               gpu_allocated = EXCLUDED.gpu_allocated, storage_total_bytes = EXCLUDED.storage_total_bytes,
               storage_allocated_bytes = EXCLUDED.storage_allocated_bytes, gpus_by_type = EXCLUDED.gpus_by_type,
               inventory = EXCLUDED.inventory
    )
    SELECT state, registered_at FROM c
    """
)

_json = msgspec.json.Encoder()


def _params(org_id: uuid.UUID, cluster_id: uuid.UUID, hb: Heartbeat, now: datetime) -> dict[str, Any]:
    s = summarize(hb.inventory)
    return {
        "now": now, "cluster_id": cluster_id, "org_id": org_id, "agent_version": hb.agent_version[:32],
        "k8s": (hb.inventory.kubernetes_version or "")[:32] or None,
        "node_count": s.node_count, "cpu_total": s.cpu_total_millis, "cpu_used": s.cpu_allocated_millis,
        "mem_total": s.memory_total_bytes, "mem_used": s.memory_allocated_bytes, "gpu_total": s.gpu_total,
        "gpu_used": s.gpu_allocated, "storage_total": s.storage_total_bytes, "storage_used": s.storage_allocated_bytes,
        "gpus_by_type": _json.encode(s.gpus_by_type).decode(), "inventory": _json.encode(hb.inventory).decode(),
    }


async def record_heartbeat(
    session: AsyncSession, *, org_id: uuid.UUID, cluster_id: uuid.UUID, heartbeat: Heartbeat, now: datetime
) -> HeartbeatOutcome:
    row = (await session.execute(_HEARTBEAT, _params(org_id, cluster_id, heartbeat, now))).first()
    if row is None:  # pragma: no cover - the credential's cluster row is gone (deleted mid-call)
        return HeartbeatOutcome(state=ClusterState.DETACHED.value, registered=False, reconnected=False)
    state = str(row.state)
    reconnected = False
    if state == ClusterState.DISCONNECTED:
        previous = await transition(session, cluster_id, to=ClusterState.ATTACHED.value, reason=RECONNECT_REASON,
                                    allowed_from=[ClusterState.DISCONNECTED.value], now=now)
        if previous is not None:
            state, reconnected = ClusterState.ATTACHED.value, True
    return HeartbeatOutcome(state=state, registered=row.registered_at is not None, reconnected=reconnected)
