"""The one interface every cluster runtime implements, and the small types it returns.

A runtime turns agent commands into work on the cluster (Kubernetes) or the host (local). Failures
are raised as ``RuntimeFailure`` with a message a person can act on ("permission denied: list
nodes ..."), never a client library's exception: the agent sends the message back as the command's
error and logs it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import msgspec

from connectors.protocol import AgentFacts, Inventory, JobSpec

__all__ = [
    "JobPhase",
    "JobStatus",
    "RunningJob",
    "Runtime",
    "RuntimeFailure",
    "Volume",
    "job_label_value",
]


class RuntimeFailure(Exception):
    """A runtime operation failed; ``str(exc)`` is one plain line for people."""


class JobPhase(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


class JobStatus(msgspec.Struct, kw_only=True):
    """Where a job is, and why, in words: ``reason`` is e.g. ``"image pull failed: ..."``, ``"OOMKilled ..."``."""

    job_id: str
    phase: str  # a JobPhase value
    reason: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result


class Volume(msgspec.Struct, kw_only=True, frozen=True):
    """A persistent volume the org owns on the cluster, metered as storage while it exists.

    ``id`` stays the same for the volume's whole life and is never reused (a PVC's uid), so usage
    records name it; ``name`` is only for people (``namespace/claim``).
    """

    id: str
    size_bytes: int
    name: str = ""


class RunningJob(msgspec.Struct, kw_only=True, frozen=True):
    """A job the runtime holds for us, read back from the runtime itself (not from the agent's memory).

    An agent that lost its state folder learns from these what to meter, so the allocation fields
    carry the same names and values as the ``JobSpec`` that started the job: the usage records made
    from them get the same ids as the ones the previous agent made. ``started_at`` is when the job
    started running (None while it has not), ``created_at`` when the runtime took it.
    """

    job_id: str
    cpu_millis: int
    memory_bytes: int
    gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    started_at: datetime | None = None
    created_at: datetime | None = None


@runtime_checkable
class Runtime(Protocol):
    """What the agent needs from a cluster. Every method may raise ``RuntimeFailure``."""

    kind: str

    async def facts(self) -> AgentFacts: ...

    async def inventory(self) -> Inventory: ...

    async def provision(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Create what jobs need (idempotent: a second call reports what already exists)."""
        ...

    async def validate(self) -> dict[str, Any]:
        """``{"ok": bool, "permissions": {name: bool}, "gpus": {"resource|model": count}, "problems": [str]}``."""
        ...

    async def start_job(self, spec: JobSpec) -> dict[str, Any]:
        """Start a job; starting the same ``job_id`` again is harmless (redelivered commands)."""
        ...

    async def job_status(self, job_id: str) -> JobStatus: ...

    async def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """``job_status`` of many jobs at once, for the agent's reports every few seconds (on Kubernetes
        two list calls, whatever the number of jobs)."""
        ...

    async def cancel_job(self, job_id: str) -> None:
        """Stop and remove a job; cancelling an unknown or finished job is not an error."""
        ...

    async def logs(self, job_id: str, tail_lines: int | None = None) -> str: ...

    async def volumes(self) -> list[Volume]:
        """The persistent volumes the org owns here, with their provisioned size (metered as storage)."""
        ...

    async def jobs(self) -> list[RunningJob]:
        """Every job this runtime started for us that still exists, running or finished, with its allocation."""
        ...

    async def cleanup(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Undo ``provision`` (detach). Idempotent."""
        ...


_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def job_label_value(job_id: str) -> str:
    """A job id as a Kubernetes label value (<= 63 chars, alphanumeric at both ends)."""
    value = _LABEL_UNSAFE.sub("-", job_id)[:63].strip("-_.")
    if not value:
        raise RuntimeFailure(f"job id {job_id!r} has no usable characters")
    return value
