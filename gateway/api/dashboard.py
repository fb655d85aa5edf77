"""The monitoring dashboards as JSON: ``GET /api/v1/orgs/{org}/dashboard`` (members with ``jobs:read``)
and ``GET /api/v1/operator/dashboard`` (platform operators; 404 for everyone else).

CPU is in vCPU (a number), memory and storage in bytes, GPUs as counts. How "assigned" and "total"
are counted is in ``gateway.api.dashboard_data``. The pages (``gateway.web.dashboard``) render the same
numbers and ``/static/dashboard.js`` polls these endpoints to keep them current.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
from litestar import get
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath

from gateway.api import dashboard_data as d
from gateway.auth import require, require_operator
from gateway.deps import CurrentIdentity, Runtime, Sessions, Tenant
from gateway.runtime import GatewayRuntime
from tenants import operators, orgs
from tenants.db import tenant_session, unscoped_session
from tenants.permissions import Permission
from tenants.scope import TenantScope

__all__ = [
    "DASHBOARD_API_ROUTES",
    "OperatorDashboard",
    "OrgDashboard",
    "load_operator_dashboard",
    "load_org_dashboard",
    "operator_dashboard",
    "org_dashboard",
]

_NO_CACHE = CacheControlHeader(no_store=True)


class DashboardCpu(msgspec.Struct, kw_only=True):
    assigned: float  # vCPU
    total: float


class DashboardAmount(msgspec.Struct, kw_only=True):
    assigned: int
    total: int


class DashboardJobs(msgspec.Struct, kw_only=True):
    active: int  # running or dispatched
    pending: int  # queued, or placed and initializing
    by_state: dict[str, int]


class DashboardTotals(msgspec.Struct, kw_only=True):
    cpu: DashboardCpu
    memory_bytes: DashboardAmount
    gpus: DashboardAmount
    storage_bytes: DashboardAmount


class ClusterResources(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    state: str
    last_heartbeat_at: datetime | None
    cpu: DashboardCpu
    memory_bytes: DashboardAmount
    gpus: DashboardAmount
    gpus_by_type: dict[str, DashboardAmount]  # "A100" -> {assigned, total}
    storage_bytes: DashboardAmount


class DashboardResources(msgspec.Struct, kw_only=True):
    total: DashboardTotals  # attached clusters only
    clusters: list[ClusterResources]


class PlanCaps(msgspec.Struct, kw_only=True):
    cpu: float | None  # vCPU; null: unlimited
    memory_bytes: int | None
    gpus: int | None


class PlanInUse(msgspec.Struct, kw_only=True):
    cpu: float
    memory_bytes: int
    gpus: int


class PlanRead(msgspec.Struct, kw_only=True):
    name: str  # free | payg | enterprise
    caps: PlanCaps
    in_use: PlanInUse


class OrgDashboard(msgspec.Struct, kw_only=True):
    jobs: DashboardJobs
    resources: DashboardResources
    plan: PlanRead


class ClusterHealth(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    org_slug: str
    name: str
    state: str
    state_reason: str
    last_heartbeat_at: datetime | None


class OrgUsageRead(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    slug: str
    name: str
    plan: str
    cpu: float  # vCPU its jobs hold now
    memory_bytes: int
    gpus: int
    active_jobs: int
    pending_jobs: int


class OperatorDashboard(msgspec.Struct, kw_only=True):
    jobs: DashboardJobs
    resources: DashboardTotals  # every org's attached clusters
    clusters_by_state: dict[str, int]
    clusters_needing_attention: list[ClusterHealth]  # not attached (and not detached), most recent change first
    top_orgs_by_cpu: list[OrgUsageRead]
    top_orgs_by_gpu: list[OrgUsageRead]


def _cpu(a: d.Amount) -> DashboardCpu:
    return DashboardCpu(assigned=a.assigned / 1000, total=a.total / 1000)


def _amt(a: d.Amount) -> DashboardAmount:
    return DashboardAmount(assigned=a.assigned, total=a.total)


def _jobs(c: d.JobCounts) -> DashboardJobs:
    return DashboardJobs(active=c.active, pending=c.pending, by_state=c.by_state)


def _total(t: d.Totals) -> DashboardTotals:
    return DashboardTotals(cpu=_cpu(t.cpu_millis), memory_bytes=_amt(t.memory_bytes), gpus=_amt(t.gpus),
                          storage_bytes=_amt(t.storage_bytes))


def _cluster(c: d.ClusterFigures) -> ClusterResources:
    return ClusterResources(id=c.id, name=c.name, state=c.state, last_heartbeat_at=c.last_heartbeat_at,
                            cpu=_cpu(c.cpu_millis), memory_bytes=_amt(c.memory_bytes), gpus=_amt(c.gpus),
                            gpus_by_type={k: _amt(v) for k, v in c.gpus_by_type.items()},
                            storage_bytes=_amt(c.storage_bytes))


def _plan(p: d.PlanFigures) -> PlanRead:
    return PlanRead(
        name=p.name,
        caps=PlanCaps(cpu=None if p.cpu_cap_millis is None else p.cpu_cap_millis / 1000,
                      memory_bytes=p.memory_cap_bytes, gpus=p.gpu_cap),
        in_use=PlanInUse(cpu=p.cpu_millis_in_use / 1000, memory_bytes=p.memory_bytes_in_use, gpus=p.gpus_in_use),
    )


def _usage(u: d.OrgUsage) -> OrgUsageRead:
    return OrgUsageRead(id=u.org_id, slug=u.slug, name=u.name, plan=u.plan, cpu=u.cpu_millis / 1000,
                        memory_bytes=u.memory_bytes, gpus=u.gpus, active_jobs=u.active_jobs,
                        pending_jobs=u.pending_jobs)


# --- shared with the pages -----------------------------------------------------------------------------


async def load_org_dashboard(runtime: GatewayRuntime, tenant: TenantScope) -> tuple[OrgDashboard, d.PlanFigures]:
    """The org's dashboard, and its plan's figures with the title (for "Free plan: 6 of 8 vCPU")."""
    tenant.require(Permission.JOBS_READ)
    async with tenant_session(runtime.sessions, tenant) as s:
        org = await orgs.get_org(tenant, s)
        clusters = await d.cluster_figures(s, org_id=tenant.org_id)
        counts = await d.job_counts(s, org_id=tenant.org_id)
        plan = await d.plan_figures(s, org)
    board = OrgDashboard(jobs=_jobs(counts),
                         resources=DashboardResources(total=_total(d.totals(clusters)),
                                                 clusters=[_cluster(c) for c in clusters]),
                         plan=_plan(plan))
    return board, plan


async def load_operator_dashboard(sessions: Sessions, identity: CurrentIdentity) -> OperatorDashboard:
    operators.operator_principal(identity)  # raises unless a platform operator
    async with unscoped_session(sessions, reason="the operator dashboard adds up every org") as s:
        clusters = await d.cluster_figures(s)
        counts = await d.job_counts(s)
        by_cpu = await d.org_usage_now(s, by="cpu")
        by_gpu = await d.org_usage_now(s, by="gpu")
        slugs = await d.org_slugs(s, {c.org_id for c in clusters if c.state != "attached"})
    by_state: dict[str, int] = {}
    for c in clusters:
        by_state[c.state] = by_state.get(c.state, 0) + 1
    attention = sorted((c for c in clusters if c.state != "attached"),
                       key=lambda c: (c.last_heartbeat_at is None, c.last_heartbeat_at), reverse=True)
    return OperatorDashboard(
        jobs=_jobs(counts), resources=_total(d.totals(clusters)), clusters_by_state=dict(sorted(by_state.items())),
        clusters_needing_attention=[
            ClusterHealth(id=c.id, org_slug=slugs.get(c.org_id, ""), name=c.name, state=c.state,
                          state_reason=c.state_reason, last_heartbeat_at=c.last_heartbeat_at)
            for c in attention[:50]],
        top_orgs_by_cpu=[_usage(u) for u in by_cpu], top_orgs_by_gpu=[_usage(u) for u in by_gpu],
    )


# --- routes --------------------------------------------------------------------------------------------


@get("/api/v1/orgs/{org:str}/dashboard", guards=[require(Permission.JOBS_READ)], tags=["dashboard"],
     cache_control=_NO_CACHE, summary="Active and pending jobs, capacity assigned vs total, plan caps in use",
     description="`assigned` = the larger of what the cluster reported allocated at its last heartbeat and what "
                 "Metacloud jobs hold on it (placed, dispatched, running); `total` = allocatable from the "
                 "inventory. `resources.total` adds up attached clusters only.")
async def org_dashboard(org: FromPath[str], tenant: Tenant, runtime: Runtime) -> OrgDashboard:
    board, _ = await load_org_dashboard(runtime, tenant)
    return board


@get("/api/v1/operator/dashboard", guards=[require_operator], tags=["operator"], cache_control=_NO_CACHE,
     summary="Platform-wide jobs and capacity, clusters by state, the orgs using most now")
async def operator_dashboard(identity: CurrentIdentity, sessions: Sessions) -> OperatorDashboard:
    return await load_operator_dashboard(sessions, identity)


DASHBOARD_API_ROUTES = [org_dashboard, operator_dashboard]
