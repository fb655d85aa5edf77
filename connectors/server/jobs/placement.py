"""The placement core of the metascheduler: pure functions over in-memory structures, no I/O.

One pass takes every org's attached clusters (nodes with *free* CPU, memory and GPUs, already net of
capacity claimed by jobs placed but not yet visible in inventory), the org's plan caps and usage, and
its queued jobs; it returns placements and, for every job that still waits, a reason in words.

Rules, in the order a job meets them:

* **Order.** Jobs of one org compete only with each other (clusters belong to one org). They are
  taken by *effective priority* (priority + 1 per ``age_step_s`` waited, at most 100), then: jobs that
  waited past ``reserve_after_s`` first (oldest first), then round-robin by submitter (everyone's
  oldest job, then everyone's second...), lighter current users first within a round, then age.
* **Policy and placement request** choose the eligible clusters (a cluster outside the allowed set is
  never chosen; the reason says so).
* **Plan caps**: the org's active jobs plus this one must stay within the caps (Free: 8 vCPU, 16 GiB,
  no GPUs). The excess waits with the plan's name and the upgrade link.
* **Fit on one node**: enough free CPU and memory, and for a GPU job enough free GPUs of the requested
  type. A CPU job never lands on a node with a GPU taint; a GPU job gets a toleration for that taint
  and a node selector for the GPU product label.
* **No starvation**: a job that waited past ``reserve_after_s`` and does not fit reserves the node
  closest to fitting it (later jobs in the pass may not use that node), and if the plan cap stops it,
  it holds the org's cap headroom (later jobs of the org wait behind it).

Speed: next-fit from a cursor per candidate list (O(1) amortised when capacity is plentiful), an exact
upper bound of free CPU/memory refreshed on every failed scan, and a memo of failed shapes (capacity
only shrinks during a pass, so a job needing at least as much as a failed one fails too).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.server.jobs.reasons import (
    CandidateStats,
    cap_reason,
    capacity_reason,
    eligibility_reason,
    fmt_cpu,
    gpu_matches,
    policy_job_reason,
)

__all__ = [
    "GPU_PRODUCT_LABEL",
    "ClusterCap",
    "GpuSlot",
    "Node",
    "OrgState",
    "PassOptions",
    "PassResult",
    "PendingJob",
    "Placement",
    "PlanCaps",
    "PolicyRules",
    "order_queue",
    "place_all",
    "place_org",
]

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_TAINT_KEYS = frozenset({"nvidia.com/gpu", "amd.com/gpu"})


@dataclass(slots=True)
class GpuSlot:
    resource: str  # "nvidia.com/gpu", "nvidia.com/mig-1g.5gb"
    model: str  # "A100-SXM4-80GB", "" when unknown
    allocatable: int
    free: int


@dataclass(slots=True)
class Node:
    name: str
    cpu_allocatable: int
    memory_allocatable: int
    cpu_free: int
    memory_free: int
    gpus: list[GpuSlot] = field(default_factory=list)
    gpu_tainted: bool = False  # a NoSchedule/NoExecute taint with a GPU key
    foreign_taint: bool = False  # another NoSchedule/NoExecute taint: jobs carry no toleration for it
    labels: dict[str, str] = field(default_factory=dict)
    reserved_by: str | None = None  # job id holding this node for the rest of the pass

    @property
    def has_gpus(self) -> bool:
        return any(s.allocatable > 0 for s in self.gpus)


@dataclass(slots=True)
class ClusterCap:
    id: str
    name: str
    region: str
    labels: dict[str, str]
    nodes: list[Node]


@dataclass(frozen=True, slots=True)
class PolicyRules:
    """The governance policy that applies to a job's submitter; ``None`` fields mean "any"."""

    source: str  # for reasons: "policy for role member", "policy for alice@example.com", "org policy"
    allowed_clusters: frozenset[str] | None = None  # ids or names
    allowed_regions: frozenset[str] | None = None
    gpus_allowed: bool = True
    max_cpu_millis: int | None = None
    max_memory_bytes: int | None = None
    max_gpus: int | None = None


@dataclass(frozen=True, slots=True)
class PlanCaps:
    plan_title: str
    cpu_millis: int | None
    memory_bytes: int | None
    gpus: int | None
    upgrade_url: str


@dataclass(frozen=True, slots=True)
class PendingJob:
    id: str
    org_id: str
    name: str
    submitter: str
    priority: int
    queued_at: float  # epoch seconds
    cpu_millis: int
    memory_bytes: int
    gpus: int = 0
    gpu_type: str | None = None
    mode: str = "auto"  # auto | cluster | region | labels
    cluster: str | None = None
    region: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    policy: PolicyRules | None = None
    version: int = 0


@dataclass(slots=True)
class OrgState:
    slug: str
    clusters: list[ClusterCap]
    caps: PlanCaps | None = None
    used_cpu: int = 0  # what the org's active jobs hold (job records), for the caps
    used_memory: int = 0
    used_gpus: int = 0
    submitter_cpu: dict[str, int] = field(default_factory=dict)  # fairness: CPU each submitter holds now


@dataclass(frozen=True, slots=True)
class Placement:
    job_id: str
    version: int
    cluster_id: str
    node: str
    gpu_resource: str | None = None
    gpu_model: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[tuple[str, str], ...] = ()  # (key, effect), operator Exists

    def assignment(self) -> dict[str, Any]:
        return {"node": self.node, "gpu_resource": self.gpu_resource, "gpu_model": self.gpu_model,
                "node_selector": dict(self.node_selector),
                "tolerations": [{"key": k, "effect": e} for k, e in self.tolerations]}


@dataclass(slots=True)
class PassResult:
    placements: list[Placement] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # job id -> why it waits

    def merge(self, other: PassResult) -> None:
        self.placements.extend(other.placements)
        self.waiting.update(other.waiting)


@dataclass(frozen=True, slots=True)
class PassOptions:
    reserve_after_s: float = 600.0  # a job waiting longer reserves capacity
    age_step_s: float = 60.0  # +1 effective priority per this many seconds waited


def order_queue(jobs: Sequence[PendingJob], submitter_cpu: dict[str, int], now: float,
                opts: PassOptions = PassOptions()) -> list[PendingJob]:
    """The order of one org's queue (see the module docstring)."""
    step = opts.age_step_s
    eff = {j.id: min(100, j.priority + int(max(0.0, now - j.queued_at) // step)) if step else j.priority
           for j in jobs}
    rank: dict[str, int] = {}
    seen: dict[tuple[str, int], int] = defaultdict(int)
    for j in sorted(jobs, key=lambda j: (j.queued_at, j.id)):
        key = (j.submitter, eff[j.id])
        rank[j.id] = seen[key]
        seen[key] += 1
    return sorted(jobs, key=lambda j: (
        -eff[j.id],
        0 if now - j.queued_at >= opts.reserve_after_s else 1,
        0 if now - j.queued_at >= opts.reserve_after_s else rank[j.id],
        submitter_cpu.get(j.submitter, 0),
        j.queued_at, j.id,
    ))


# ---- eligibility ----------------------------------------------------------------------------------


def _eligible(org: OrgState, job: PendingJob) -> tuple[list[ClusterCap], str | None]:
    """The clusters a job may use, or none and why."""
    wanted = org.clusters
    if job.mode == "cluster" and job.cluster:
        wanted = [c for c in wanted if job.cluster in (c.id, c.name)]
    elif job.mode == "region" and job.region:
        wanted = [c for c in wanted if c.region == job.region]
    elif job.mode == "labels" and job.labels:
        wanted = [c for c in wanted if all(c.labels.get(k) == v for k, v in job.labels)]
    allowed = wanted
    policy = job.policy
    if policy is not None and policy.allowed_clusters is not None:
        allowed = [c for c in allowed if c.id in policy.allowed_clusters or c.name in policy.allowed_clusters]
    if policy is not None and policy.allowed_regions is not None:
        allowed = [c for c in allowed if c.region in policy.allowed_regions]
    if allowed:
        return allowed, None
    return [], eligibility_reason(org.slug, bool(org.clusters), job.mode, job.cluster, job.region,
                                  dict(job.labels), bool(wanted), policy)


def _key(job: PendingJob) -> tuple[Any, ...]:
    p = job.policy
    return (job.mode, job.cluster, job.region, job.labels,
            None if p is None else (p.allowed_clusters, p.allowed_regions),
            ("gpu", (job.gpu_type or "").lower()) if job.gpus else ("cpu",))


@dataclass(slots=True)
class _Candidates:
    """The nodes one kind of job may use, with a next-fit cursor, a bound and a failure memo."""

    nodes: list[tuple[ClusterCap, Node]]
    cursor: int = 0
    cpu_bound: int = 1 << 62
    memory_bound: int = 1 << 62
    failed: list[tuple[int, int, int]] = field(default_factory=list)
    stats: CandidateStats | None = None


def _candidates(clusters: Iterable[ClusterCap], job: PendingJob) -> _Candidates:
    pairs: list[tuple[ClusterCap, Node]] = []
    if job.gpus:
        for c in clusters:
            pairs.extend((c, n) for n in c.nodes if not n.foreign_taint
                         and any(gpu_matches(s.resource, s.model, job.gpu_type) for s in n.gpus))
    else:
        plain: list[tuple[ClusterCap, Node]] = []
        gpu_untainted: list[tuple[ClusterCap, Node]] = []
        for c in clusters:
            for n in c.nodes:
                if n.foreign_taint or n.gpu_tainted:
                    continue
                (gpu_untainted if n.has_gpus else plain).append((c, n))
        pairs = plain + gpu_untainted  # keep GPU nodes for GPU jobs while others have room
    return _Candidates(nodes=pairs)


def _gpu_slot(node: Node, job: PendingJob) -> GpuSlot | None:
    best: GpuSlot | None = None
    for s in node.gpus:
        if s.free >= job.gpus and gpu_matches(s.resource, s.model, job.gpu_type) and (best is None or s.free < best.free):
            best = s
    return best


def _fits(node: Node, job: PendingJob) -> bool:
    if node.reserved_by is not None and node.reserved_by != job.id:
        return False
    if node.cpu_free < job.cpu_millis or node.memory_free < job.memory_bytes:
        return False
    return not job.gpus or _gpu_slot(node, job) is not None


def _find(cands: _Candidates, job: PendingJob) -> tuple[ClusterCap, Node] | None:
    shape = (job.cpu_millis, job.memory_bytes, job.gpus)
    if job.cpu_millis > cands.cpu_bound or job.memory_bytes > cands.memory_bound:
        return None
    if any(shape[0] >= f[0] and shape[1] >= f[1] and shape[2] >= f[2] for f in cands.failed):
        return None
    count = len(cands.nodes)
    max_cpu = max_mem = 0
    for step in range(count):
        i = (cands.cursor + step) % count
        cluster, node = cands.nodes[i]
        if _fits(node, job):
            cands.cursor = i
            return cluster, node
        if node.reserved_by is None:
            max_cpu, max_mem = max(max_cpu, node.cpu_free), max(max_mem, node.memory_free)
    cands.cpu_bound, cands.memory_bound = min(cands.cpu_bound, max_cpu), min(cands.memory_bound, max_mem)
    cands.failed.append(shape)
    return None


def _reserve(cands: _Candidates, job: PendingJob) -> Node | None:
    """The node that could hold the job once running work ends and is closest to fitting it now."""
    best: tuple[float, Node] | None = None
    for _, node in cands.nodes:
        if node.reserved_by is not None or node.cpu_allocatable < job.cpu_millis \
                or node.memory_allocatable < job.memory_bytes:
            continue
        if job.gpus and not any(gpu_matches(s.resource, s.model, job.gpu_type) and s.allocatable >= job.gpus
                                for s in node.gpus):
            continue
        short = max(0, job.cpu_millis - node.cpu_free) / max(1, job.cpu_millis) \
            + max(0, job.memory_bytes - node.memory_free) / max(1, job.memory_bytes)
        if best is None or short < best[0]:
            best = (short, node)
    if best is None:
        return None
    best[1].reserved_by = job.id
    return best[1]


def _commit(org: OrgState, cluster: ClusterCap, node: Node, job: PendingJob) -> Placement:
    node.cpu_free -= job.cpu_millis
    node.memory_free -= job.memory_bytes
    org.used_cpu += job.cpu_millis
    org.used_memory += job.memory_bytes
    org.used_gpus += job.gpus
    if not job.gpus:
        return Placement(job_id=job.id, version=job.version, cluster_id=cluster.id, node=node.name)
    slot = _gpu_slot(node, job)
    assert slot is not None  # _fits checked it
    slot.free -= job.gpus
    product = node.labels.get(GPU_PRODUCT_LABEL) or slot.model
    # GPU pools are tainted with the resource name; MIG slices sit on nodes tainted "nvidia.com/gpu".
    keys = {slot.resource} | ({"nvidia.com/gpu"} if slot.resource.startswith("nvidia.com/") else set())
    taints = sorted((k, "NoSchedule") for k in keys)
    return Placement(job_id=job.id, version=job.version, cluster_id=cluster.id, node=node.name,
                     gpu_resource=slot.resource, gpu_model=slot.model or None,
                     node_selector={GPU_PRODUCT_LABEL: product} if product else {}, tolerations=tuple(taints))


def _over_cap(org: OrgState, job: PendingJob) -> bool:
    caps = org.caps
    if caps is None:
        return False
    return any(cap is not None and used + need > cap for cap, used, need in (
        (caps.cpu_millis, org.used_cpu, job.cpu_millis), (caps.memory_bytes, org.used_memory, job.memory_bytes),
        (caps.gpus, org.used_gpus, job.gpus)))


def _cap_possible(caps: PlanCaps, job: PendingJob) -> bool:
    return all(cap is None or need <= cap for cap, need in (
        (caps.cpu_millis, job.cpu_millis), (caps.memory_bytes, job.memory_bytes), (caps.gpus, job.gpus)))


def place_org(org: OrgState, jobs: Sequence[PendingJob], now: float, opts: PassOptions = PassOptions()) -> PassResult:
    """Place one org's queued jobs on its clusters; mutates ``org`` (capacity taken, usage)."""
    result = PassResult()
    by_key: dict[tuple[Any, ...], _Candidates] = {}
    pending: list[tuple[PendingJob, _Candidates]] = []
    cap_holder: PendingJob | None = None
    for job in order_queue(jobs, org.submitter_cpu, now, opts):
        if job.policy is not None and (why := policy_job_reason(job.policy, job.cpu_millis, job.memory_bytes,
                                                                 job.gpus)):
            result.waiting[job.id] = why
            continue
        clusters, why = _eligible(org, job)
        if why is not None:
            result.waiting[job.id] = why
            continue
        if org.caps is not None and (cap_holder is not None or _over_cap(org, job)):
            result.waiting[job.id] = cap_reason(org.caps, org.used_cpu, org.used_memory, org.used_gpus,
                                                job.cpu_millis, job.memory_bytes, job.gpus,
                                                behind=cap_holder.name if cap_holder else None)
            if cap_holder is None and now - job.queued_at >= opts.reserve_after_s and _cap_possible(org.caps, job):
                cap_holder = job  # later jobs of the org may not take the headroom it waits for
            continue
        key = _key(job)
        cands = by_key.get(key)
        if cands is None:
            cands = by_key[key] = _candidates(clusters, job)
        found = _find(cands, job)
        if found is not None:
            result.placements.append(_commit(org, found[0], found[1], job))
            org.submitter_cpu[job.submitter] = org.submitter_cpu.get(job.submitter, 0) + job.cpu_millis
            continue
        if now - job.queued_at >= opts.reserve_after_s and (held := _reserve(cands, job)) is not None:
            # Reservations only shrink capacity, so the memo and bounds stay valid.
            result.waiting[job.id] = (f"reserved node {held.name} and waits for it to free up "
                                      f"({fmt_cpu(job.cpu_millis)} vCPU"
                                      + (f", {job.gpus} GPU" if job.gpus else "") + "); smaller jobs may not take it")
            continue
        pending.append((job, cands))
    for job, cands in pending:
        if cands.stats is None:
            cands.stats = CandidateStats.of([(n.cpu_free, n.memory_free, n.cpu_allocatable, n.memory_allocatable,
                                              [(s.resource, s.model, s.free, s.allocatable) for s in n.gpus],
                                              n.reserved_by is not None) for _, n in cands.nodes],
                                            job.gpu_type if job.gpus else None, gpu_job=bool(job.gpus))
        result.waiting[job.id] = capacity_reason(cands.stats, job.cpu_millis, job.memory_bytes, job.gpus,
                                                 job.gpu_type)
    return result


def place_all(orgs: dict[str, OrgState], jobs: Iterable[PendingJob], now: float,
              opts: PassOptions = PassOptions()) -> PassResult:
    """One pass over every org with queued jobs."""
    by_org: dict[str, list[PendingJob]] = defaultdict(list)
    for job in jobs:
        by_org[job.org_id].append(job)
    result = PassResult()
    for org_id, queue in by_org.items():
        org = orgs.get(org_id)
        if org is None:
            result.waiting.update({j.id: "the organization is not active" for j in queue})
            continue
        result.merge(place_org(org, queue, now, opts))
    return result
