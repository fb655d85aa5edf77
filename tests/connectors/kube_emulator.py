"""The Kubernetes API emulator (kmock) served over HTTP on 127.0.0.1, ready for the official client.

``async with kube_emulator() as kube:`` gives ``kube.url`` (point ``make_runtime("kubernetes", host=kube.url)``
at it), the emulator (``kube.k8s``) and helpers to seed nodes and pods and to set pod status. Two GPU
nodes (8x ``nvidia.com/gpu`` A100-SXM4-80GB, tainted ``nvidia.com/gpu=present:NoSchedule``) and one
CPU-only node are there unless ``nodes=False``.

Works around the emulator's gaps (RECIPES.md): ``/api/v1/namespaces`` is parsed as a namespace
prefix (patched below); every resource is declared up front; SelfSubjectAccessReviews answer
``allowed`` unless listed in ``kube.denied``; pod logs come from ``kube.logs[(namespace, pod)]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kmock
from kmock._internal import parsing

RESOURCES: dict[str, tuple[str, bool]] = {
    "v1/nodes": ("Node", False),
    "v1/namespaces": ("Namespace", False),
    "v1/pods": ("Pod", True),
    "v1/serviceaccounts": ("ServiceAccount", True),
    "v1/resourcequotas": ("ResourceQuota", True),
    "v1/secrets": ("Secret", True),
    "v1/events": ("Event", True),
    "batch/v1/jobs": ("Job", True),
    "apps/v1/deployments": ("Deployment", True),
    "storage.k8s.io/v1/storageclasses": ("StorageClass", False),
    "scheduling.k8s.io/v1/priorityclasses": ("PriorityClass", False),
    "authorization.k8s.io/v1/selfsubjectaccessreviews": ("SelfSubjectAccessReview", False),
    "rbac.authorization.k8s.io/v1/clusterroles": ("ClusterRole", False),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": ("ClusterRoleBinding", False),
    "rbac.authorization.k8s.io/v1/roles": ("Role", True),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True),
}

GPU_MODEL = "A100-SXM4-80GB"

_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    # kmock reads /api/v1/namespaces[/NAME] as "namespace prefix, no resource"; it is the resource itself.
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
    return _original_parse_path(path)


parsing.parse_path = _parse_path


def gpu_node(name: str, *, gpus: int = 8, model: str = GPU_MODEL, cpu: str = "96", memory: str = "1000Gi",
             extra: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "nvidia.com/gpu.product": model}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus), **(extra or {})},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def cpu_node(name: str, *, cpu: str = "16", memory: str = "64Gi", ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


class KubeEmulator:
    def __init__(self, k8s: kmock.KubernetesEmulator, url: str) -> None:
        self.k8s = k8s
        self.url = url
        self.denied: set[tuple[str, str]] = set()  # (verb, resource) that SelfSubjectAccessReviews refuse
        self.logs: dict[tuple[str, str], str] = {}

    def add(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.k8s.objects[resource, meta.get("namespace"), meta["name"]] = obj

    def add_node(self, node: dict[str, Any]) -> None:
        self.add("v1/nodes", node)

    def add_pod(self, namespace: str, name: str, *, node: str | None = None, labels: dict[str, str] | None = None,
                requests: dict[str, str] | None = None, phase: str = "Running") -> None:
        spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox",
                                                "resources": {"requests": requests or {}}}]}
        if node:
            spec["nodeName"] = node
        self.add("v1/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": spec, "status": {"phase": phase},
        })

    def patch(self, resource: str, namespace: str | None, name: str, changes: dict[str, Any]) -> None:
        self.k8s.objects[resource, namespace, name].patch(changes)

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            obj = self.k8s.objects[resource, namespace, name]
        except KeyError:
            return None
        if obj.deleted:
            return None
        raw: dict[str, Any] = obj.raw
        return raw

    def names(self, resource: str, namespace: str | None = None) -> set[str]:
        wanted = kmock.resource(resource)
        return {
            name for (res, ns, name), obj in self.k8s.objects.items()
            if res == wanted and not obj.deleted and (namespace is None or ns == namespace)
        }

    def _review(self, request: kmock.Request) -> dict[str, Any]:
        attributes = (request.data.get("spec") or {}).get("resourceAttributes") or {}
        allowed = (attributes.get("verb"), attributes.get("resource")) not in self.denied
        return {**request.data, "status": {"allowed": allowed}}

    def _log(self, request: kmock.Request) -> bytes:
        text = self.logs.get((request.namespace or "", request.name or ""), "")
        tail = request.params.get("tailLines")
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-int(tail):])
        return text.encode()


@contextlib.asynccontextmanager
async def kube_emulator(*, nodes: bool = True) -> AsyncIterator[KubeEmulator]:
    async with kmock.KubernetesEmulator() as k8s, kmock.Server(k8s, host="127.0.0.1") as server:
        for key, (kind, namespaced) in RESOURCES.items():
            k8s.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced)
        kube = KubeEmulator(k8s, str(server.url).rstrip("/"))
        k8s["post", kmock.resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews")] << kube._review
        k8s["get", kmock.resource("", "v1", "pods"), kmock.subresource("log")] << kube._log
        if nodes:
            kube.add_node(gpu_node("gpu-a"))
            kube.add_node(gpu_node("gpu-b"))
            kube.add_node(cpu_node("cpu-a"))
        yield kube
