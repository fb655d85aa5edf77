"""Why a job waits, in words: pure formatting over numbers the placement pass already has."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CandidateStats",
    "cap_reason",
    "capacity_reason",
    "eligibility_reason",
    "fmt_cpu",
    "fmt_memory",
    "gpu_matches",
    "policy_job_reason",
]

GIB = 1 << 30
MIB = 1 << 20


def fmt_cpu(millis: int) -> str:
    """``8000`` -> ``"8"``, ``500`` -> ``"0.5"``."""
    return f"{millis / 1000:g}"


def fmt_memory(size: int) -> str:
    if size >= GIB or size == 0:
        return f"{size / GIB:.3g} GiB"
    return f"{size / MIB:.4g} MiB"


def _norm(text: str) -> str:
    text = text.lower().replace(" ", "-").replace("_", "-")
    for prefix in ("nvidia-", "tesla-"):
        text = text.removeprefix(prefix)
    return text


@functools.lru_cache(maxsize=4096)  # pure, and asked for every GPU slot of every candidate node
def gpu_matches(resource: str, model: str, wanted: str | None) -> bool:
    """Does a node's GPU (``resource``, ``model``) satisfy a job's ``gpu_type``?

    ``None`` takes any full GPU (not a MIG slice); ``"A100"`` matches models ``A100``, ``A100-SXM4-80GB``,
    ``NVIDIA-A100-PCIE-40GB``; a resource name (``"nvidia.com/mig-1g.5gb"``) matches that resource.
    """
    if wanted is None or wanted == "":
        return "/mig-" not in resource
    if "/" in wanted:
        return resource == wanted
    want, have = _norm(wanted), _norm(model)
    return bool(have) and (have == want or have.startswith(want + "-") or want in have.split("-"))


def _gpu_words(gpus: int, gpu_type: str | None) -> str:
    return f"{gpus} x {gpu_type or 'GPU'}"


def policy_job_reason(policy: Any, cpu: int, memory: int, gpus: int) -> str | None:
    """A job the submitter's policy does not allow at all (the policy changed after submission)."""
    if gpus and not policy.gpus_allowed:
        return f"{policy.source} does not allow GPU jobs"
    if policy.max_cpu_millis is not None and cpu > policy.max_cpu_millis:
        return f"{policy.source} allows at most {fmt_cpu(policy.max_cpu_millis)} vCPU per job; it asks {fmt_cpu(cpu)}"
    if policy.max_memory_bytes is not None and memory > policy.max_memory_bytes:
        return (f"{policy.source} allows at most {fmt_memory(policy.max_memory_bytes)} memory per job; "
                f"it asks {fmt_memory(memory)}")
    if policy.max_gpus is not None and gpus > policy.max_gpus:
        return f"{policy.source} allows at most {policy.max_gpus} GPUs per job; it asks {gpus}"
    return None


def eligibility_reason(slug: str, any_cluster: bool, mode: str, cluster: str | None, region: str | None,
                       labels: dict[str, str], any_wanted: bool, policy: Any) -> str:
    if not any_cluster:
        return f"no attached cluster: connect one at /orgs/{slug}/clusters"
    if not any_wanted:
        if mode == "cluster":
            return f"no attached cluster named {cluster!r}"
        if mode == "region":
            return f"no attached cluster in region {region!r}"
        return "no attached cluster with labels " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    parts = []
    if policy.allowed_clusters is not None:
        parts.append("clusters " + (", ".join(sorted(policy.allowed_clusters)) or "(none)"))
    if policy.allowed_regions is not None:
        parts.append("regions " + (", ".join(sorted(policy.allowed_regions)) or "(none)"))
    where = " and ".join(parts)
    return f"{policy.source} allows only {where}; no attached cluster there matches the job's placement"


def cap_reason(caps: Any, used_cpu: int, used_memory: int, used_gpus: int, cpu: int, memory: int, gpus: int,
               *, behind: str | None = None) -> str:
    """E.g. ``"Free plan: 8 vCPU in use of 8 — upgrade at /orgs/acme/billing"``."""
    plan, link = caps.plan_title, f"upgrade at {caps.upgrade_url}"
    if gpus and caps.gpus == 0:
        return f"{plan} plan includes no GPUs — {link}"
    too_big: list[tuple[str, str]] = []
    if caps.cpu_millis is not None and cpu > caps.cpu_millis:
        too_big.append((f"{fmt_cpu(caps.cpu_millis)} vCPU", f"{fmt_cpu(cpu)} vCPU"))
    if caps.memory_bytes is not None and memory > caps.memory_bytes:
        too_big.append((f"{fmt_memory(caps.memory_bytes)} memory", fmt_memory(memory)))
    if caps.gpus is not None and gpus > caps.gpus:
        too_big.append((f"{caps.gpus} GPUs", f"{gpus} GPUs"))
    if too_big:
        cap, asks = too_big[0]
        return f"{plan} plan allows {cap} at once; this job asks {asks} — {link}"
    if caps.cpu_millis is not None and used_cpu + cpu > caps.cpu_millis:
        status = f"{fmt_cpu(used_cpu)} vCPU in use of {fmt_cpu(caps.cpu_millis)}"
    elif caps.memory_bytes is not None and used_memory + memory > caps.memory_bytes:
        status = f"{fmt_memory(used_memory)} memory in use of {fmt_memory(caps.memory_bytes)}"
    elif caps.gpus is not None and used_gpus + gpus > caps.gpus:
        status = f"{used_gpus} GPUs in use of {caps.gpus}"
    else:
        status = f"{fmt_cpu(used_cpu)} vCPU in use of {fmt_cpu(caps.cpu_millis or 0)}"
    tail = f"; the older job {behind!r} gets the freed capacity first" if behind else ""
    return f"{plan} plan: {status}{tail} — {link}"


@dataclass(frozen=True, slots=True)
class CandidateStats:
    """Aggregates over a job kind's candidate nodes after the pass (one scan per kind, not per job)."""

    nodes: int
    max_cpu_free: int
    max_memory_free: int
    max_cpu_allocatable: int
    max_memory_allocatable: int
    gpu_free: int  # of the wanted type, over every node
    gpu_max_free_one_node: int
    gpu_max_allocatable_one_node: int
    reserved_nodes: int
    max_cpu_free_with_reserved: int
    max_memory_free_with_reserved: int
    gpu_max_free_with_reserved: int

    @classmethod
    def of(cls, nodes: Sequence[tuple[int, int, int, int, list[tuple[str, str, int, int]], bool]],
           gpu_type: str | None, *, gpu_job: bool) -> CandidateStats:
        mcf = mmf = mca = mma = gf = gmax = galloc = res = wcf = wmf = wg = 0
        for cpu_free, mem_free, cpu_alloc, mem_alloc, slots, reserved in nodes:
            mca, mma = max(mca, cpu_alloc), max(mma, mem_alloc)
            free_here = sum(f for r, m, f, _ in slots if gpu_job and gpu_matches(r, m, gpu_type))
            alloc_here = max((a for r, m, _, a in slots if gpu_job and gpu_matches(r, m, gpu_type)), default=0)
            galloc = max(galloc, alloc_here)
            wcf, wmf, wg = max(wcf, cpu_free), max(wmf, mem_free), max(wg, free_here)
            if reserved:
                res += 1
                continue
            mcf, mmf = max(mcf, cpu_free), max(mmf, mem_free)
            gf += max(0, free_here)
            gmax = max(gmax, free_here)
        return cls(nodes=len(nodes), max_cpu_free=max(0, mcf), max_memory_free=max(0, mmf), max_cpu_allocatable=mca,
                   max_memory_allocatable=mma, gpu_free=gf, gpu_max_free_one_node=max(0, gmax),
                   gpu_max_allocatable_one_node=galloc, reserved_nodes=res, max_cpu_free_with_reserved=max(0, wcf),
                   max_memory_free_with_reserved=max(0, wmf), gpu_max_free_with_reserved=max(0, wg))


def capacity_reason(st: CandidateStats, cpu: int, memory: int, gpus: int, gpu_type: str | None) -> str:
    need = f"{fmt_cpu(cpu)} vCPU and {fmt_memory(memory)}"
    if gpus:
        words = _gpu_words(gpus, gpu_type)
        if st.nodes == 0:
            return f"needs {words}; no allowed cluster has {gpu_type or 'GPU'} nodes"
        if st.gpu_max_allocatable_one_node < gpus:
            return (f"needs {words} on one node; the allowed clusters' largest {gpu_type or 'GPU'} node has "
                    f"{st.gpu_max_allocatable_one_node}")
        if st.gpu_max_free_one_node < gpus:
            if st.gpu_max_free_with_reserved >= gpus:
                return f"needs {words}; the free ones are reserved for an older job that waited longer"
            if st.gpu_free < gpus:
                return f"needs {words}; allowed clusters have {st.gpu_free} free"
            return f"needs {words} on one node; allowed clusters have {st.gpu_free} free, at most " \
                   f"{st.gpu_max_free_one_node} on one node"
        return f"needs {words} with {need} on one node; no allowed {gpu_type or 'GPU'} node has that free now"
    if st.nodes == 0:
        return "no allowed node for CPU jobs: every node of the allowed clusters is a tainted GPU node"
    if st.max_cpu_allocatable < cpu or st.max_memory_allocatable < memory:
        return (f"needs {need} on one node; the largest allowed node has {fmt_cpu(st.max_cpu_allocatable)} vCPU "
                f"and {fmt_memory(st.max_memory_allocatable)}")
    if st.max_cpu_free < cpu or st.max_memory_free < memory:
        if st.max_cpu_free_with_reserved >= cpu and st.max_memory_free_with_reserved >= memory:
            return f"needs {need} on one node; the free capacity is reserved for an older job that waited longer"
        return (f"needs {need} on one node; allowed clusters have at most {fmt_cpu(st.max_cpu_free)} vCPU and "
                f"{fmt_memory(st.max_memory_free)} free on a node")
    return f"needs {need} on one node; no allowed node has both free now"
