"""What one scheduler pass reads: queued jobs, and for the orgs that have them: attached clusters with
their latest inventory, the jobs already holding capacity, policies, and (from the caller) plan caps.

Capacity claimed but not yet in inventory: a job that is ``placed`` or ``dispatched``, or ``running``
but seen running only after the cluster's last heartbeat, is not in that heartbeat's ``allocated``
numbers yet; its request is subtracted from the node it was placed on. A job seen running before the
heartbeat is counted by the inventory itself (its pod's requests), so it is not subtracted twice.
Plan caps count every active job from the job records, inventory or not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.protocol import Inventory
from connectors.server.jobs.placement import (
    GPU_TAINT_KEYS,
    ClusterCap,
    GpuSlot,
    Node,
    OrgState,
    PendingJob,
    PlanCaps,
    PolicyRules,
)
from connectors.server.jobs.policies import member_emails, policies_for_orgs, resolve

__all__ = ["CapsProvider", "Snapshot", "build_nodes", "read_snapshot"]

CapsProvider = Callable[[AsyncSession, list[uuid.UUID]], Awaitable[dict[uuid.UUID, PlanCaps]]]
_BLOCKING = frozenset({"NoSchedule", "NoExecute"})

_QUEUED = text(
    """SELECT id, org_id, name, submitted_by, submitted_role, priority, extract(epoch FROM queued_at) AS queued,
              cpu_millis, memory_bytes, gpus, gpu_type, placement::text AS placement, placement_version
         FROM jobs WHERE state = 'queued' ORDER BY queued_at LIMIT :limit"""
)
_CLUSTERS = text(
    """SELECT c.id, c.org_id, c.name, c.region, c.labels::text AS labels, extract(epoch FROM i.reported_at) AS reported,
              i.inventory::text AS inventory
         FROM clusters c JOIN cluster_inventories i ON i.cluster_id = c.id
        WHERE c.state = 'attached' AND c.org_id = ANY(:orgs)"""
)
_ACTIVE = text(
    """SELECT org_id, submitted_by, cluster_id, node_name, state, cpu_millis, memory_bytes, gpus,
              assignment::text AS assignment, extract(epoch FROM started_at) AS started
         FROM jobs WHERE state IN ('placed', 'dispatched', 'running') AND org_id = ANY(:orgs)"""
)
_ORGS = text("SELECT id, slug FROM orgs WHERE id = ANY(:orgs) AND status = 'active' AND deleted_at IS NULL")

_inventory = msgspec.json.Decoder(Inventory)
_json = msgspec.json.Decoder()


@dataclass(slots=True)
class Snapshot:
    orgs: dict[str, OrgState]
    jobs: list[PendingJob]
    read_s: float


def build_nodes(inv: Inventory) -> list[Node]:
    nodes: list[Node] = []
    for n in inv.nodes:
        if not n.ready:
            continue
        blocking = [t.key for t in n.taints if t.effect in _BLOCKING]
        nodes.append(Node(
            name=n.name, cpu_allocatable=n.cpu_allocatable_millis, memory_allocatable=n.memory_allocatable_bytes,
            cpu_free=n.cpu_allocatable_millis - n.cpu_allocated_millis,
            memory_free=n.memory_allocatable_bytes - n.memory_allocated_bytes,
            gpus=[GpuSlot(resource=g.resource, model=g.model, allocatable=g.allocatable,
                          free=g.allocatable - g.allocated) for g in n.gpus],
            gpu_tainted=any(k in GPU_TAINT_KEYS for k in blocking),
            foreign_taint=any(k not in GPU_TAINT_KEYS for k in blocking), labels=dict(n.labels)))
    return nodes


def _claim(node: Node, cpu: int, memory: int, gpus: int, assignment: dict[str, Any]) -> None:
    node.cpu_free -= cpu
    node.memory_free -= memory
    if gpus:
        for slot in node.gpus:
            if slot.resource == assignment.get("gpu_resource") and slot.model == (assignment.get("gpu_model") or ""):
                slot.free -= gpus
                return


async def _policies(session: AsyncSession, org_ids: list[uuid.UUID]) -> tuple[dict[uuid.UUID, list[Any]],
                                                                              dict[str, str]]:
    by_org = await policies_for_orgs(session, org_ids)
    members = [p.subject for ps in by_org.values() for p in ps if p.subject_kind == "member"]
    return by_org, await member_emails(session, members)


async def read_snapshot(session: AsyncSession, caps_provider: CapsProvider | None = None, *,
                        limit: int = 100_000) -> Snapshot:
    started = time.perf_counter()
    queued = (await session.execute(_QUEUED, {"limit": limit})).all()
    org_ids = sorted({r.org_id for r in queued})
    if not org_ids:
        return Snapshot(orgs={}, jobs=[], read_s=time.perf_counter() - started)
    slugs = {r.id: r.slug for r in (await session.execute(_ORGS, {"orgs": org_ids})).all()}
    caps = await caps_provider(session, org_ids) if caps_provider else {}
    policies, emails = await _policies(session, org_ids)
    orgs: dict[str, OrgState] = {str(o): OrgState(slug=slug, clusters=[], caps=caps.get(o)) for o, slug in slugs.items()}
    nodes_of: dict[uuid.UUID, tuple[float, dict[str, Node]]] = {}
    for r in (await session.execute(_CLUSTERS, {"orgs": org_ids})).all():
        org = orgs.get(str(r.org_id))
        if org is None:
            continue
        nodes = build_nodes(_inventory.decode(r.inventory))
        org.clusters.append(ClusterCap(id=str(r.id), name=r.name, region=r.region or "",
                                       labels=_json.decode(r.labels) if r.labels else {}, nodes=nodes))
        nodes_of[r.id] = (float(r.reported), {n.name: n for n in nodes})
    for r in (await session.execute(_ACTIVE, {"orgs": org_ids})).all():
        org = orgs.get(str(r.org_id))
        if org is None:
            continue
        org.used_cpu += r.cpu_millis
        org.used_memory += r.memory_bytes
        org.used_gpus += r.gpus
        who = str(r.submitted_by or "")
        org.submitter_cpu[who] = org.submitter_cpu.get(who, 0) + r.cpu_millis
        cluster = nodes_of.get(r.cluster_id)
        if cluster is None or r.node_name is None:
            continue
        reported, by_name = cluster
        visible = r.state == "running" and r.started is not None and float(r.started) <= reported
        node = by_name.get(r.node_name)
        if node is not None and not visible:
            _claim(node, r.cpu_millis, r.memory_bytes, r.gpus, _json.decode(r.assignment) if r.assignment else {})
    jobs: list[PendingJob] = []
    for r in queued:
        placement = _json.decode(r.placement) if r.placement else {}
        rules: PolicyRules | None = resolve(policies.get(r.org_id, ()), r.submitted_by, r.submitted_role, emails)
        jobs.append(PendingJob(
            id=str(r.id), org_id=str(r.org_id), name=r.name, submitter=str(r.submitted_by or ""),
            priority=r.priority, queued_at=float(r.queued), cpu_millis=r.cpu_millis, memory_bytes=r.memory_bytes,
            gpus=r.gpus, gpu_type=r.gpu_type, mode=placement.get("mode") or "auto", cluster=placement.get("cluster"),
            region=placement.get("region"), labels=tuple(sorted((placement.get("labels") or {}).items())),
            policy=rules, version=r.placement_version))
    return Snapshot(orgs=orgs, jobs=jobs, read_s=time.perf_counter() - started)
