"""Inventory from raw Kubernetes objects (JSON dicts as the API sends them): pure functions.

Raw dicts rather than the client's models: listing every pod of a large cluster every 15 s through
the generated models costs far more CPU than ``json.loads``, and the dicts are what tests build.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

from connectors.protocol import GpuCapacity, NodeInventory, Taint
from connectors.runtimes.base import Volume

__all__ = [
    "GPU_PRODUCT_LABEL",
    "bound_volumes",
    "gpu_resources",
    "is_gpu_resource",
    "node_inventory",
    "pod_requests",
    "quantity",
    "requests_by_node",
]

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
_GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
_MIG_PREFIX = "nvidia.com/mig-"
_TERMINATED = frozenset({"Succeeded", "Failed"})


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("500m", "64Gi", "8") as a number; garbage counts as 0."""
    if value is None:
        return Decimal(0)
    try:
        parsed: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    except (ValueError, InvalidOperation, TypeError):
        return Decimal(0)
    return parsed


def is_gpu_resource(name: str) -> bool:
    return name in _GPU_RESOURCES or name.startswith(_MIG_PREFIX)


def _millis(value: Decimal) -> int:
    return math.ceil(value * 1000)


def _container_requests(container: Mapping[str, Any]) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    # Kubernetes defaults a missing request to the limit (always so for extended resources like GPUs).
    merged: dict[str, Any] = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: quantity(value) for name, value in merged.items()}


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """What the scheduler reserves for a pod: max(sum of containers, largest init container) + overhead."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = defaultdict(Decimal)
    for container in spec.get("containers") or []:
        for name, value in _container_requests(container).items():
            total[name] += value
    init_peak: dict[str, Decimal] = defaultdict(Decimal)
    for container in spec.get("initContainers") or []:
        requests = _container_requests(container)
        if container.get("restartPolicy") == "Always":  # a sidecar runs beside the main containers
            for name, value in requests.items():
                total[name] += value
        else:
            for name, value in requests.items():
                init_peak[name] = max(init_peak[name], value)
    for name, value in init_peak.items():
        total[name] = max(total[name], value)
    for name, value in (spec.get("overhead") or {}).items():
        total[name] += quantity(value)
    return dict(total)


def requests_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Decimal]]:
    """Sum of requests of the non-terminated pods bound to each node."""
    allocated: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in _TERMINATED:
            continue
        for name, value in pod_requests(pod).items():
            allocated[node][name] += value
    return allocated


def gpu_resources(allocatable: Mapping[str, Any]) -> dict[str, int]:
    return {
        name: int(quantity(value))
        for name, value in allocatable.items()
        if is_gpu_resource(name) and quantity(value) > 0
    }


def _gpu_model(resource: str, labels: Mapping[str, str]) -> str:
    if resource.startswith(_MIG_PREFIX):
        # GPU feature discovery labels MIG devices per profile ("mixed" strategy); else name it after the card.
        own = labels.get(f"{resource}.product")
        if own:
            return own
        card = labels.get(GPU_PRODUCT_LABEL, "")
        return f"{card} MIG {resource.removeprefix(_MIG_PREFIX)}" if card else ""
    if resource == "amd.com/gpu":
        return labels.get("amd.com/gpu.product-name", "")
    return labels.get(GPU_PRODUCT_LABEL, "")


def _ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    # No conditions at all: a node object nobody reported on yet (or a test double); trust it unless cordoned.
    return not (node.get("spec") or {}).get("unschedulable", False)


def node_inventory(node: Mapping[str, Any], allocated: Mapping[str, Decimal]) -> NodeInventory:
    meta = node.get("metadata") or {}
    labels: dict[str, str] = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    gpus = [
        GpuCapacity(
            resource=resource,
            model=_gpu_model(resource, labels),
            allocatable=count,
            allocated=int(allocated.get(resource, Decimal(0))),
        )
        for resource, count in sorted(gpu_resources(allocatable).items())
    ]
    taints = [
        Taint(key=str(t.get("key", "")), effect=str(t.get("effect", "")), value=t.get("value") or None)
        for t in (node.get("spec") or {}).get("taints") or []
    ]
    return NodeInventory(
        name=str(meta.get("name", "")),
        ready=_ready(node),
        cpu_allocatable_millis=_millis(quantity(allocatable.get("cpu"))),
        cpu_allocated_millis=_millis(allocated.get("cpu", Decimal(0))),
        memory_allocatable_bytes=int(quantity(allocatable.get("memory"))),
        memory_allocated_bytes=int(allocated.get("memory", Decimal(0))),
        gpus=gpus,
        taints=taints,
        labels=labels,
    )


def bound_volumes(claims: Iterable[Mapping[str, Any]]) -> list[Volume]:
    """The Bound PersistentVolumeClaims as volumes, sized by ``status.capacity.storage``.

    The capacity is what the cluster provisioned (it can exceed the request, and grows on expansion),
    so it is what the org holds. A claim still Pending holds no storage yet; one without a uid or a
    capacity cannot be metered honestly, so it is left out rather than guessed.
    """
    out: list[Volume] = []
    for claim in claims:
        meta = claim.get("metadata") or {}
        status = claim.get("status") or {}
        size = int(quantity((status.get("capacity") or {}).get("storage")))
        if status.get("phase") != "Bound" or not meta.get("uid") or size <= 0:
            continue
        out.append(Volume(id=str(meta["uid"]), size_bytes=size, name=f"{meta.get('namespace', '')}/{meta.get('name', '')}"))
    return out
