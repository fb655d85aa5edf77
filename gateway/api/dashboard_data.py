"""The numbers behind the monitoring dashboards (org and operator), read in a few aggregate queries.

What "assigned" means, per cluster and resource: the larger of what the cluster reported allocated at
its last heartbeat and what Metacloud jobs hold on it (jobs in ``placed``, ``dispatched`` or
``running``). The inventory lags a fresh placement by up to one heartbeat (15 s), and the cluster also
runs work that is not ours; the larger of the two never double counts and never shows a just-placed
job's capacity as free. Storage is only what the cluster reports. "total" is the allocatable capacity
from the inventory. The org-wide and platform-wide totals add up attached clusters only: a
disconnected cluster's capacity cannot take work.

The plan's "in use" is what the org's jobs hold (the same job states), which is what plan caps limit.
Reads only; the caller owns the transaction (a tenant session for one org, an unscoped one for the
operator).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.entitlements import caps_for
from connectors.server.jobs.models import ACTIVE_STATES, JOB_STATES, Job
from connectors.server.models import Cluster, ClusterInventory
from tenants.models import Org

__all__ = [
    "Amount",
    "ClusterFigures",
    "JobCounts",
    "JobLine",
    "OrgUsage",
    "PlanFigures",
    "Totals",
    "cluster_figures",
    "gpu_type_of",
    "job_counts",
    "job_lines",
    "org_slugs",
    "org_usage_now",
    "plan_figures",
    "totals",
]

RUNNING = ("running", "dispatched")  # "active" on the dashboard
WAITING = ("queued", "placed")  # "pending": queued, or placed and initializing
HIDDEN_CLUSTER_STATES = ("detached",)


@dataclass(slots=True)
class Amount:
    assigned: int = 0  # millis for CPU, bytes for memory and storage, a count for GPUs
    total: int = 0


@dataclass(slots=True)
class ClusterFigures:
    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    state: str
    state_reason: str
    last_heartbeat_at: datetime | None
    reported: bool  # an inventory has arrived
    cpu_millis: Amount = field(default_factory=Amount)
    memory_bytes: Amount = field(default_factory=Amount)
    gpus: Amount = field(default_factory=Amount)
    storage_bytes: Amount = field(default_factory=Amount)
    gpus_by_type: dict[str, Amount] = field(default_factory=dict)


@dataclass(slots=True)
class Totals:
    cpu_millis: Amount = field(default_factory=Amount)
    memory_bytes: Amount = field(default_factory=Amount)
    gpus: Amount = field(default_factory=Amount)
    storage_bytes: Amount = field(default_factory=Amount)
    gpus_by_type: dict[str, Amount] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobCounts:
    active: int
    pending: int
    by_state: dict[str, int]


@dataclass(frozen=True, slots=True)
class PlanFigures:
    name: str  # orgs.plan: free | payg | enterprise
    title: str  # "Free"
    cpu_cap_millis: int | None  # None: unlimited
    memory_cap_bytes: int | None
    gpu_cap: int | None
    cpu_millis_in_use: int
    memory_bytes_in_use: int
    gpus_in_use: int
    upgrade_url: str


@dataclass(frozen=True, slots=True)
class OrgUsage:
    org_id: uuid.UUID
    slug: str
    name: str
    plan: str
    cpu_millis: int
    memory_bytes: int
    gpus: int
    active_jobs: int
    pending_jobs: int


def gpu_type_of(key: str) -> str:
    """Inventory keys are ``resource|model``: ``nvidia.com/gpu|A100`` -> ``A100``; a MIG slice keeps
    its profile (``A100 mig-1g.5gb``); without a model the resource name stays."""
    resource, _, model = key.partition("|")
    if not model:
        return resource
    return model if resource == "nvidia.com/gpu" else f"{model} {resource.rsplit('/', 1)[-1]}"


def _held_by_jobs(org_id: uuid.UUID | None) -> Select[uuid.UUID | None, str | None, int, int, int]:
    q = (select(Job.cluster_id, Job.gpu_type, func.sum(Job.cpu_millis), func.sum(Job.memory_bytes),
                func.sum(Job.gpus))
         .where(Job.state.in_(ACTIVE_STATES), Job.cluster_id.is_not(None))
         .group_by(Job.cluster_id, Job.gpu_type))
    return q if org_id is None else q.where(Job.org_id == org_id)


async def cluster_figures(session: AsyncSession, *, org_id: uuid.UUID | None = None) -> list[ClusterFigures]:
    """Every (not detached) cluster with its capacity; one org's with ``org_id``, else the platform's."""
    q = (select(Cluster, ClusterInventory).outerjoin(ClusterInventory, ClusterInventory.cluster_id == Cluster.id)
         .where(Cluster.state.not_in(HIDDEN_CLUSTER_STATES)).order_by(Cluster.name, Cluster.id))
    if org_id is not None:
        q = q.where(Cluster.org_id == org_id)
    held: dict[uuid.UUID, tuple[int, int, int, dict[str, int]]] = {}
    for cluster_id, gpu_type, cpu, mem, gpus in (await session.execute(_held_by_jobs(org_id))).all():
        assert cluster_id is not None
        c0, m0, g0, by_type = held.get(cluster_id, (0, 0, 0, {}))
        if gpu_type and gpus:
            by_type[gpu_type] = by_type.get(gpu_type, 0) + int(gpus)
        held[cluster_id] = (c0 + int(cpu or 0), m0 + int(mem or 0), g0 + int(gpus or 0), by_type)
    out: list[ClusterFigures] = []
    for cluster, inv in (await session.execute(q)).all():
        jobs_cpu, jobs_mem, jobs_gpus, jobs_by_type = held.get(cluster.id, (0, 0, 0, {}))
        f = ClusterFigures(id=cluster.id, org_id=cluster.org_id, name=cluster.name, state=cluster.state,
                           state_reason=cluster.state_reason, last_heartbeat_at=cluster.last_heartbeat_at,
                           reported=inv is not None)
        f.cpu_millis = Amount(max(inv.cpu_allocated_millis if inv else 0, jobs_cpu), inv.cpu_total_millis if inv else 0)
        f.memory_bytes = Amount(max(inv.memory_allocated_bytes if inv else 0, jobs_mem),
                                inv.memory_total_bytes if inv else 0)
        f.gpus = Amount(max(inv.gpu_allocated if inv else 0, jobs_gpus), inv.gpu_total if inv else 0)
        f.storage_bytes = Amount(inv.storage_allocated_bytes if inv else 0, inv.storage_total_bytes if inv else 0)
        for key, slot in sorted(((inv.gpus_by_type or {}) if inv else {}).items()):
            if not isinstance(slot, dict):
                continue
            a = f.gpus_by_type.setdefault(gpu_type_of(key), Amount())
            a.assigned += int(slot.get("allocated", 0))
            a.total += int(slot.get("total", 0))
        for gpu_type, count in jobs_by_type.items():
            a = f.gpus_by_type.setdefault(gpu_type, Amount())
            a.assigned = max(a.assigned, count)
        out.append(f)
    return out


def totals(clusters: Iterable[ClusterFigures]) -> Totals:
    """Sums over attached clusters (the capacity that can take work now)."""
    t = Totals()
    for c in clusters:
        if c.state != "attached":
            continue
        for mine, theirs in ((t.cpu_millis, c.cpu_millis), (t.memory_bytes, c.memory_bytes), (t.gpus, c.gpus),
                             (t.storage_bytes, c.storage_bytes)):
            mine.assigned += theirs.assigned
            mine.total += theirs.total
        for gpu_type, a in c.gpus_by_type.items():
            slot = t.gpus_by_type.setdefault(gpu_type, Amount())
            slot.assigned += a.assigned
            slot.total += a.total
    return t


async def job_counts(session: AsyncSession, *, org_id: uuid.UUID | None = None) -> JobCounts:
    q = select(Job.state, func.count()).group_by(Job.state)
    if org_id is not None:
        q = q.where(Job.org_id == org_id)
    counted = {state: int(n) for state, n in (await session.execute(q)).all()}
    by_state = {state: counted.get(state, 0) for state in JOB_STATES}
    return JobCounts(active=sum(by_state[s] for s in RUNNING), pending=sum(by_state[s] for s in WAITING),
                     by_state=by_state)


async def plan_figures(session: AsyncSession, org: Org) -> PlanFigures:
    """The org's plan caps (``billing.entitlements``: a per-org override wins) and what its jobs hold now."""
    caps = await caps_for(session, org.id)
    used = (await session.execute(
        select(func.coalesce(func.sum(Job.cpu_millis), 0), func.coalesce(func.sum(Job.memory_bytes), 0),
               func.coalesce(func.sum(Job.gpus), 0))
        .where(Job.org_id == org.id, Job.state.in_(ACTIVE_STATES)))).one()
    return PlanFigures(name=caps.plan, title=caps.plan_title, cpu_cap_millis=caps.cpu_millis,
                       memory_cap_bytes=caps.memory_bytes, gpu_cap=caps.gpus, cpu_millis_in_use=int(used[0]),
                       memory_bytes_in_use=int(used[1]), gpus_in_use=int(used[2]),
                       upgrade_url=caps.upgrade_url)


async def org_usage_now(session: AsyncSession, *, limit: int = 10, by: str = "cpu") -> list[OrgUsage]:
    """The orgs holding the most CPU (``by="cpu"``) or GPUs (``by="gpu"``) with their jobs right now."""
    cpu = func.coalesce(func.sum(Job.cpu_millis).filter(Job.state.in_(ACTIVE_STATES)), 0)
    mem = func.coalesce(func.sum(Job.memory_bytes).filter(Job.state.in_(ACTIVE_STATES)), 0)
    gpus = func.coalesce(func.sum(Job.gpus).filter(Job.state.in_(ACTIVE_STATES)), 0)
    active = func.count().filter(Job.state.in_(RUNNING))
    pending = func.count().filter(Job.state.in_(WAITING))
    order = (gpus.desc(), cpu.desc()) if by == "gpu" else (cpu.desc(), gpus.desc())
    q = (select(Org.id, Org.slug, Org.name, Org.plan, cpu, mem, gpus, active, pending)
         .join(Job, Job.org_id == Org.id)
         .where(Job.state.in_((*ACTIVE_STATES, *WAITING)))
         .group_by(Org.id).having((gpus if by == "gpu" else cpu) > 0)
         .order_by(*order, Org.slug).limit(limit))
    return [OrgUsage(org_id=r[0], slug=r[1], name=r[2], plan=r[3], cpu_millis=int(r[4]), memory_bytes=int(r[5]),
                     gpus=int(r[6]), active_jobs=int(r[7]), pending_jobs=int(r[8]))
            for r in (await session.execute(q)).all()]


async def org_slugs(session: AsyncSession, org_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    if not org_ids:
        return {}
    rows = await session.execute(select(Org.id, Org.slug).where(Org.id.in_(org_ids)))
    return dict(rows.all())


@dataclass(frozen=True, slots=True)
class JobLine:
    """A job as the dashboard lists it."""

    id: uuid.UUID
    name: str
    state: str
    reason: str
    cluster_name: str | None
    cpu_millis: int
    memory_bytes: int
    gpus: int
    gpu_type: str | None
    priority: int
    created_at: datetime
    started_at: datetime | None


async def job_lines(session: AsyncSession, org_id: uuid.UUID, states: Iterable[str], *,
                    limit: int = 20) -> list[JobLine]:
    """Jobs in ``states``: waiting ones in queue order (priority, then age), others newest first."""
    states = tuple(states)
    order = ((Job.priority.desc(), Job.queued_at, Job.id) if set(states) <= set(WAITING)
             else (Job.started_at.desc().nulls_last(), Job.created_at.desc(), Job.id))
    q = (select(Job, Cluster.name).outerjoin(Cluster, Cluster.id == Job.cluster_id)
         .where(Job.org_id == org_id, Job.state.in_(states)).order_by(*order).limit(limit))
    return [JobLine(id=j.id, name=j.name, state=j.state, reason=j.reason, cluster_name=cname, cpu_millis=j.cpu_millis,
                    memory_bytes=j.memory_bytes, gpus=j.gpus, gpu_type=j.gpu_type, priority=j.priority,
                    created_at=j.created_at, started_at=j.started_at)
            for j, cname in (await session.execute(q)).all()]
