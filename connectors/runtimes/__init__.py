"""Cluster runtimes behind one interface: Kubernetes and the local host.

``make_runtime("kubernetes", host="http://127.0.0.1:PORT")`` or ``make_runtime("local", state_dir=...)``.
The Kubernetes module (and its client library) is imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from connectors.runtimes.base import (
    JobPhase,
    JobStatus,
    RunningJob,
    Runtime,
    RuntimeFailure,
    Volume,
    job_label_value,
)
from connectors.runtimes.local import LocalRuntime

__all__ = [
    "RUNTIME_KINDS",
    "JobPhase",
    "JobStatus",
    "LocalRuntime",
    "RunningJob",
    "Runtime",
    "RuntimeFailure",
    "Volume",
    "job_label_value",
    "make_runtime",
]

RUNTIME_KINDS = ("kubernetes", "local")


def make_runtime(kind: str, **opts: Any) -> Runtime:
    """A runtime by kind. Options go to the constructor:

    * ``kubernetes``: ``host`` (explicit API URL, for tests), ``kubeconfig``, ``context``, ``namespace``
      (jobs namespace, default ``metacloud-jobs``), ``request_timeout_s``, ``verify_ssl``, ``api_client``.
    * ``local``: ``state_dir``, ``kill_grace_s``.
    """
    if kind == "kubernetes":
        from connectors.runtimes.kubernetes import KubernetesRuntime

        return KubernetesRuntime(**opts)
    if kind == "local":
        return LocalRuntime(**opts)
    raise ValueError(f"unknown runtime {kind!r}; choose one of {', '.join(RUNTIME_KINDS)}")
