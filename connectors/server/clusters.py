"""Cluster records of an org: create, list, read with capacity and history, state changes, detach, delete.

Every state change goes through ``transition``: a compare-and-set on ``clusters.state`` plus one
``cluster_events`` row with the reason, in the caller's transaction. Callers that race (two workflow
attempts, a heartbeat and the health sweep) cannot both win, so each change is recorded exactly once.

    pending --registered--> attaching --provisioned+validated--> attached <--> disconnected
       |                        |                                    |
       +--token expired--> failed <--provision/validation failed ----+
    any (but detached) --detach--> detaching --> detached --> (deleted)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.server.capacity import Capacity, capacity_of
from connectors.server.models import Cluster, ClusterEvent, ClusterInventory
from tenants import audit
from tenants.db import utcnow
from tenants.errors import Conflict, InvalidInput, NotFound
from tenants.members import acting_user_id
from tenants.permissions import Permission
from tenants.scope import TenantScope

__all__ = [
    "PROVIDERS",
    "ClusterState",
    "ClusterView",
    "EventView",
    "create_cluster",
    "delete_cluster",
    "get_cluster",
    "history",
    "list_clusters",
    "request_detach",
    "transition",
]

PROVIDERS = ("eks", "aks", "gke", "openshift", "rancher", "kubernetes", "bare_host")
PROVIDER_NAMES = {
    "eks": "Amazon EKS", "aks": "Azure AKS", "gke": "Google GKE", "openshift": "OpenShift",
    "rancher": "Rancher", "kubernetes": "Other Kubernetes", "bare_host": "Bare host (no Kubernetes)",
}
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
_MAX_LABELS = 32


class ClusterState(StrEnum):
    PENDING = "pending"
    ATTACHING = "attaching"
    ATTACHED = "attached"
    DISCONNECTED = "disconnected"
    DETACHING = "detaching"
    DETACHED = "detached"
    FAILED = "failed"


S = ClusterState


@dataclass(frozen=True, slots=True)
class ClusterView:
    id: uuid.UUID
    name: str
    provider: str
    region: str
    labels: dict[str, str]
    state: str
    state_reason: str
    state_changed_at: datetime
    created_at: datetime
    runtime: str | None
    agent_version: str | None
    kubernetes_version: str | None
    registered_at: datetime | None
    last_heartbeat_at: datetime | None
    capacity: Capacity | None


@dataclass(frozen=True, slots=True)
class EventView:
    at: datetime
    from_state: str | None
    to_state: str
    reason: str


def _view(c: Cluster, inv: ClusterInventory | None) -> ClusterView:
    return ClusterView(
        id=c.id, name=c.name, provider=c.provider, region=c.region, labels=dict(c.labels or {}), state=c.state,
        state_reason=c.state_reason, state_changed_at=c.state_changed_at, created_at=c.created_at, runtime=c.runtime,
        agent_version=c.agent_version, kubernetes_version=c.kubernetes_version, registered_at=c.registered_at,
        last_heartbeat_at=c.last_heartbeat_at, capacity=capacity_of(inv),
    )


def _check(name: str, provider: str, region: str, labels: dict[str, str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not _NAME.match(name):
        errors["name"] = ("Use 1-63 lower-case letters, digits and hyphens, starting and ending with a letter "
                          "or digit, e.g. 'gpu-prod-eu'.")
    if provider not in PROVIDERS:
        errors["provider"] = "Choose one of: " + ", ".join(PROVIDERS) + "."
    if len(region) > 64:
        errors["region"] = "Use at most 64 characters."
    if len(labels) > _MAX_LABELS:
        errors["labels"] = f"Use at most {_MAX_LABELS} labels."
    elif any(not _LABEL_KEY.match(k) or len(v) > 63 for k, v in labels.items()):
        errors["labels"] = "Label keys are 1-63 letters, digits, '.', '_', '-', '/'; values at most 63 characters."
    return errors


async def transition(
    session: AsyncSession,
    cluster_id: uuid.UUID,
    *,
    to: str,
    reason: str,
    allowed_from: Collection[str],
    now: datetime | None = None,
) -> str | None:
    """Compare-and-set the state; returns the previous state when this call changed it, else ``None``.

    The row is locked first, so of two concurrent callers exactly one sees an allowed state.
    """
    now = now or utcnow()
    row = (
        await session.execute(
            select(Cluster.state, Cluster.org_id).where(Cluster.id == cluster_id).with_for_update()
        )
    ).first()
    if row is None or row.state not in allowed_from or row.state == to:
        return None
    await session.execute(
        update(Cluster).where(Cluster.id == cluster_id).values(state=to, state_reason=reason, state_changed_at=now)
    )
    session.add(ClusterEvent(org_id=row.org_id, cluster_id=cluster_id, at=now, from_state=row.state, to_state=to,
                             reason=reason))
    await session.flush()
    return str(row.state)


async def create_cluster(
    scope: TenantScope,
    session: AsyncSession,
    *,
    name: str,
    provider: str,
    region: str = "",
    labels: dict[str, str] | None = None,
    ip: str | None = None,
) -> Cluster:
    """A new cluster record in state ``pending``; the caller issues its registration token."""
    scope.require(Permission.CLUSTERS_MANAGE)
    name, provider, region, labels = name.strip(), provider.strip(), region.strip(), dict(labels or {})
    errors = _check(name, provider, region, labels)
    if errors:
        raise InvalidInput("Check the highlighted fields.", field_errors=errors)
    now = utcnow()
    cluster = Cluster(org_id=scope.org_id, name=name, provider=provider, region=region, labels=labels,
                      state=S.PENDING.value, state_reason="waiting for the agent to register",
                      state_changed_at=now, created_by=await acting_user_id(session, scope), created_at=now)
    try:
        async with session.begin_nested():
            session.add(cluster)
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"This organization already has a cluster named {name!r}; choose another name.",
                       field="name") from exc
    session.add(ClusterEvent(org_id=scope.org_id, cluster_id=cluster.id, at=now, from_state=None,
                             to_state=S.PENDING.value, reason=f"created by {scope.principal.display or 'API'}"))
    await audit.record(session, action="cluster.created", actor=scope.principal, org_id=scope.org_id,
                       target_kind="cluster", target_id=cluster.id, target_display=name, ip=ip,
                       details={"provider": provider, "region": region})
    return cluster


async def _get_row(scope: TenantScope, session: AsyncSession, cluster_id: uuid.UUID) -> Cluster:
    cluster = (
        await session.execute(select(Cluster).where(Cluster.org_id == scope.org_id, Cluster.id == cluster_id))
    ).scalar_one_or_none()
    if cluster is None:
        raise NotFound("No such cluster in this organization.")
    return cluster


async def list_clusters(scope: TenantScope, session: AsyncSession) -> list[ClusterView]:
    scope.require(Permission.CLUSTERS_READ)
    rows = await session.execute(
        select(Cluster, ClusterInventory)
        .outerjoin(ClusterInventory, ClusterInventory.cluster_id == Cluster.id)
        .where(Cluster.org_id == scope.org_id)
        .order_by(Cluster.name)
    )
    return [_view(c, inv) for c, inv in rows]


async def get_cluster(scope: TenantScope, session: AsyncSession, cluster_id: uuid.UUID) -> ClusterView:
    scope.require(Permission.CLUSTERS_READ)
    row = (
        await session.execute(
            select(Cluster, ClusterInventory)
            .outerjoin(ClusterInventory, ClusterInventory.cluster_id == Cluster.id)
            .where(Cluster.org_id == scope.org_id, Cluster.id == cluster_id)
        )
    ).first()
    if row is None:
        raise NotFound("No such cluster in this organization.")
    return _view(*row)


async def history(
    scope: TenantScope, session: AsyncSession, cluster_id: uuid.UUID, *, limit: int = 200
) -> list[EventView]:
    """State changes, newest first."""
    scope.require(Permission.CLUSTERS_READ)
    await _get_row(scope, session, cluster_id)
    rows = await session.execute(
        select(ClusterEvent).where(ClusterEvent.org_id == scope.org_id, ClusterEvent.cluster_id == cluster_id)
        .order_by(ClusterEvent.at.desc(), ClusterEvent.id.desc()).limit(limit)
    )
    return [EventView(at=e.at, from_state=e.from_state, to_state=e.to_state, reason=e.reason) for e in rows.scalars()]


async def request_detach(
    scope: TenantScope, session: AsyncSession, cluster_id: uuid.UUID, *, jobs: str, ip: str | None = None
) -> bool:
    """Move the cluster to ``detaching`` (the detach workflow does the rest). Returns False when it was
    already detaching (asking again restarts nothing but is harmless)."""
    scope.require(Permission.CLUSTERS_MANAGE)
    if jobs not in ("drain", "cancel"):
        raise InvalidInput("Say what happens to running jobs.", field_errors={"jobs": "Use 'drain' or 'cancel'."})
    cluster = await _get_row(scope, session, cluster_id)
    if cluster.state == S.DETACHED:
        raise Conflict("This cluster is already detached.")
    if cluster.state == S.DETACHING:
        return False
    who = scope.principal.display or "API"
    previous = await transition(session, cluster_id, to=S.DETACHING.value,
                                reason=f"detach requested by {who} (running jobs: {jobs})",
                                allowed_from=[s.value for s in S if s not in (S.DETACHING, S.DETACHED)])
    if previous is None:  # pragma: no cover - lost a race with another detach
        return False
    await audit.record(session, action="cluster.detached", actor=scope.principal, org_id=scope.org_id,
                       target_kind="cluster", target_id=cluster_id, target_display=cluster.name, ip=ip,
                       details={"jobs": jobs, "previous_state": previous})
    return True


async def delete_cluster(scope: TenantScope, session: AsyncSession, cluster_id: uuid.UUID, *,
                         ip: str | None = None) -> None:
    """Only a detached cluster can be deleted (its history and inventory go with it)."""
    scope.require(Permission.CLUSTERS_MANAGE)
    cluster = await _get_row(scope, session, cluster_id)
    if cluster.state != S.DETACHED:
        raise Conflict(f"Detach the cluster first: it is {cluster.state}. A cluster is deleted only once detached.")
    await session.execute(delete(Cluster).where(Cluster.id == cluster_id))
    await audit.record(session, action="cluster.deleted", actor=scope.principal, org_id=scope.org_id,
                       target_kind="cluster", target_id=cluster_id, target_display=cluster.name, ip=ip)

