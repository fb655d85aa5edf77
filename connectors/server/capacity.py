"""A cluster's capacity: the one shape for what a heartbeat reports (``summarize``), what is stored in
``cluster_inventories`` and what the clusters service shows (``capacity_of``). The API's
``CapacityRead`` is its wire schema, built from this field by field."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from connectors.protocol import Inventory
from connectors.server.models import ClusterInventory

__all__ = ["Capacity", "capacity_of", "summarize"]


@dataclass(frozen=True, slots=True)
class Capacity:
    """Totals over the ready nodes and what is allocated on them (by anyone, not only our jobs)."""

    node_count: int
    cpu_total_millis: int
    cpu_allocated_millis: int
    memory_total_bytes: int
    memory_allocated_bytes: int
    gpu_total: int
    gpu_allocated: int
    storage_total_bytes: int
    storage_allocated_bytes: int
    gpus_by_type: dict[str, dict[str, int]]  # {"nvidia.com/gpu|A100": {"total": 8, "allocated": 2}}
    reported_at: datetime | None = None  # when the heartbeat that carried it arrived (None before it is stored)


def summarize(inv: Inventory) -> Capacity:
    """Totals over ready nodes; GPUs keyed ``resource|model`` (``nvidia.com/gpu|A100``, MIG profiles apart)."""
    cpu = cpu_used = mem = mem_used = gpus = gpus_used = 0
    by_type: dict[str, dict[str, int]] = {}
    for node in inv.nodes:
        if not node.ready:
            continue
        cpu += node.cpu_allocatable_millis
        cpu_used += node.cpu_allocated_millis
        mem += node.memory_allocatable_bytes
        mem_used += node.memory_allocated_bytes
        for g in node.gpus:
            key = f"{g.resource}|{g.model}" if g.model else g.resource
            slot = by_type.setdefault(key, {"total": 0, "allocated": 0})
            slot["total"] += g.allocatable
            slot["allocated"] += g.allocated
            gpus += g.allocatable
            gpus_used += g.allocated
    return Capacity(
        node_count=sum(1 for n in inv.nodes if n.ready), cpu_total_millis=cpu, cpu_allocated_millis=cpu_used,
        memory_total_bytes=mem, memory_allocated_bytes=mem_used, gpu_total=gpus, gpu_allocated=gpus_used,
        storage_total_bytes=inv.storage_total_bytes, storage_allocated_bytes=inv.storage_allocated_bytes,
        gpus_by_type=by_type,
    )


def capacity_of(inv: ClusterInventory | None) -> Capacity | None:
    """The stored capacity of a cluster (None before its first heartbeat)."""
    if inv is None:
        return None
    return Capacity(
        node_count=inv.node_count, cpu_total_millis=inv.cpu_total_millis,
        cpu_allocated_millis=inv.cpu_allocated_millis, memory_total_bytes=inv.memory_total_bytes,
        memory_allocated_bytes=inv.memory_allocated_bytes, gpu_total=inv.gpu_total, gpu_allocated=inv.gpu_allocated,
        storage_total_bytes=inv.storage_total_bytes, storage_allocated_bytes=inv.storage_allocated_bytes,
        gpus_by_type={k: {"total": int(v.get("total", 0)), "allocated": int(v.get("allocated", 0))}
                      for k, v in (inv.gpus_by_type or {}).items() if isinstance(v, dict)},
        reported_at=inv.reported_at,
    )
