"""Starting and signalling the job workflows (used by the gateway and the scheduler's activity).

``signal_placed`` uses signal-with-start: a job whose lifecycle workflow never started (Temporal was
down at submission) gets one when it is placed, so no placed job is left undispatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from workflows.jobs.types import LifecycleInput, SchedulerInput

__all__ = [
    "ensure_scheduler",
    "lifecycle_workflow_id",
    "scheduler_workflow_id",
    "signal_cancel",
    "signal_placed",
    "signal_reported",
    "start_lifecycle",
]


def lifecycle_workflow_id(job_id: uuid.UUID | str) -> str:
    return f"job-{job_id}"


def scheduler_workflow_id(task_queue: str) -> str:
    """One scheduler per deployment (task queue)."""
    return f"jobs-scheduler-{task_queue}"


async def ensure_scheduler(client: Client, task_queue: str, inp: SchedulerInput | None = None) -> str:
    handle = await client.start_workflow(
        "jobs.scheduler", inp or SchedulerInput(), id=scheduler_workflow_id(task_queue), task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return handle.id


async def start_lifecycle(client: Client, task_queue: str, *, job_id: uuid.UUID | str,
                          org_id: uuid.UUID | str) -> str:
    handle = await client.start_workflow(
        "jobs.lifecycle", LifecycleInput(job_id=str(job_id), org_id=str(org_id)),
        id=lifecycle_workflow_id(job_id), task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return handle.id


async def signal_placed(client: Client, task_queue: str, *, job_id: str, org_id: str) -> None:
    await client.start_workflow(
        "jobs.lifecycle", LifecycleInput(job_id=job_id, org_id=org_id), id=lifecycle_workflow_id(job_id),
        task_queue=task_queue, start_signal="placed",
    )


async def signal_cancel(client: Client, job_id: uuid.UUID | str) -> None:
    """Wake the job's workflow so it notices the cancel at once (nothing to do when none runs)."""
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(lifecycle_workflow_id(job_id)).signal("cancel")


async def signal_reported(client: Client, job_ids: list[str], *, concurrency: int = 16) -> None:
    """Wake the workflows of jobs whose state an agent report changed, so they see it at once.

    A workflow that misses it (none runs, or the signal is lost) still sees the change at its next check.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(job_id: str) -> None:
        async with gate:
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(lifecycle_workflow_id(job_id)).signal("report")

    await asyncio.gather(*(one(j) for j in job_ids))
