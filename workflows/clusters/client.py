"""Starting and signalling the cluster workflows (used by the gateway): ids, signal-with-start.

Signals use signal-with-start: if the workflow is not running (it was never started because Temporal
was down when the cluster was created, or it already finished), the signal starts a new run, so a
registration or a re-issued token always reaches a live workflow.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from workflows.clusters.types import (
    AttachInput,
    DetachInput,
    HealthInput,
    Registered,
    StateChange,
    TokenReissued,
)

__all__ = [
    "attach_workflow_id",
    "cancel_attach",
    "detach_workflow_id",
    "ensure_health",
    "health_workflow_id",
    "signal_reconnected",
    "signal_registered",
    "signal_token_reissued",
    "start_attach",
    "start_detach",
]


def attach_workflow_id(cluster_id: uuid.UUID | str) -> str:
    return f"cluster-attach-{cluster_id}"


def detach_workflow_id(cluster_id: uuid.UUID | str) -> str:
    return f"cluster-detach-{cluster_id}"


def health_workflow_id(task_queue: str) -> str:
    """One health workflow per deployment (task queue), so test queues on one server do not share it."""
    return f"clusters-health-{task_queue}"


async def start_attach(client: Client, task_queue: str, *, cluster_id: uuid.UUID, org_id: uuid.UUID,
                       token_expires_at: datetime) -> str:
    handle = await client.start_workflow(
        "clusters.attach",
        AttachInput(cluster_id=str(cluster_id), org_id=str(org_id), token_expires_at=token_expires_at.isoformat()),
        id=attach_workflow_id(cluster_id), task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return handle.id


async def signal_registered(client: Client, task_queue: str, *, cluster_id: uuid.UUID, org_id: uuid.UUID,
                            registration_id: uuid.UUID, summary: str, now: datetime) -> None:
    await client.start_workflow(
        "clusters.attach",
        AttachInput(cluster_id=str(cluster_id), org_id=str(org_id), token_expires_at=now.isoformat()),
        id=attach_workflow_id(cluster_id), task_queue=task_queue,
        start_signal="registered", start_signal_args=[Registered(registration_id=str(registration_id),
                                                                 summary=summary)],
    )


async def signal_token_reissued(client: Client, task_queue: str, *, cluster_id: uuid.UUID, org_id: uuid.UUID,
                                expires_at: datetime) -> None:
    await client.start_workflow(
        "clusters.attach",
        AttachInput(cluster_id=str(cluster_id), org_id=str(org_id), token_expires_at=expires_at.isoformat()),
        id=attach_workflow_id(cluster_id), task_queue=task_queue,
        start_signal="token_reissued", start_signal_args=[TokenReissued(expires_at=expires_at.isoformat())],
    )


async def cancel_attach(client: Client, cluster_id: uuid.UUID) -> None:
    """Stop a running attach (detach asked for); nothing to do when none runs."""
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(attach_workflow_id(cluster_id)).cancel()


async def start_detach(client: Client, task_queue: str, *, cluster_id: uuid.UUID, org_id: uuid.UUID,
                       jobs: str) -> str:
    handle = await client.start_workflow(
        "clusters.detach", DetachInput(cluster_id=str(cluster_id), org_id=str(org_id), jobs=jobs),
        id=detach_workflow_id(cluster_id), task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return handle.id


async def ensure_health(client: Client, task_queue: str, inp: HealthInput | None = None) -> str:
    """Start the health workflow unless it runs already."""
    handle = await client.start_workflow(
        "clusters.health", inp or HealthInput(), id=health_workflow_id(task_queue), task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return handle.id


async def signal_reconnected(client: Client, task_queue: str, change: StateChange) -> None:
    await client.start_workflow(
        "clusters.health", HealthInput(), id=health_workflow_id(task_queue), task_queue=task_queue,
        start_signal="reconnected", start_signal_args=[change],
    )
