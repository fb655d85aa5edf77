"""PersistentVolumeClaims in the Kubernetes API emulator, as the storage meter reads them.

The emulator knows only the resources declared up front (``tests/connectors/kube_emulator.py``) and
gives objects no uid: ``declare_claims`` adds the resource, and ``claim`` sets the uid a real API
server would.
"""

from __future__ import annotations

from typing import Any

import kmock

from tests.connectors.kube_emulator import KubeEmulator

CLAIMS = "v1/persistentvolumeclaims"


def declare_claims(kube: KubeEmulator) -> None:
    kube.k8s.resources[CLAIMS] = kmock.ResourceInfo(kind="PersistentVolumeClaim", namespaced=True)


def claim(namespace: str, name: str, *, uid: str, size: str, phase: str = "Bound") -> dict[str, Any]:
    """A claim as the API server shows it: bound ones carry ``status.capacity.storage``."""
    status: dict[str, Any] = {"phase": phase}
    if phase == "Bound":
        status["capacity"] = {"storage": size}
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        "status": status,
    }
