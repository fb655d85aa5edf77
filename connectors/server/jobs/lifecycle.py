"""State changes of one job after placement, as the lifecycle workflow's activities make them.

    queued --scheduler--> placed --dispatch--> dispatched --agent: running--> running
       ^                                          |  \\                          |
       +---- lost, on_lost=requeue (once) --------+   +--> succeeded | failed | timed_out | cancelled | lost

Every function is idempotent (activities retry): it reads the row ``FOR UPDATE`` and changes it only
from the states it expects. The status comes from the agent: pushed as job reports
(``connectors.server.jobs.reports``), or, while those are stale, its answer to ``job_status`` commands;
either way it is the runtime's ``JobStatus``, which already words Kubernetes failures ("image pull
failed: ...", "OOMKilled: ...", "evicted: ...", "unschedulable: ...").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.protocol import JOB_REPORT_FRESH_S, CommandKind, JobSpec, Taint
from connectors.server.commands import enqueue
from connectors.server.jobs.models import FINISHED_STATES, Job
from connectors.server.jobs.service import add_event, notify_scheduler
from connectors.server.models import AgentCommand, Cluster
from tenants.db import utcnow

__all__ = [
    "MAX_REQUEUES",
    "JobSnapshot",
    "StartOutcome",
    "apply_status",
    "dispatch",
    "finish",
    "mark_lost",
    "past",
    "reports_current",
    "settle_cluster_jobs",
    "snapshot",
    "start_key",
    "start_outcome",
]

MAX_REQUEUES = 1  # on_lost=requeue puts a lost job back in the queue once, then it fails as lost
_PRIORITY_CLASS = ((70, "metacloud-high"), (30, "metacloud-normal"), (0, "metacloud-low"))


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    state: str
    cluster_id: str | None
    cluster_state: str | None
    cluster_state_since: datetime | None
    started_at: datetime | None
    max_runtime_s: int | None
    lost_count: int
    report_received_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


def start_key(job: Job) -> str:
    """The ``start_job`` dedupe key: the job id (a re-queued job's next start gets a suffix)."""
    return str(job.id) if job.lost_count == 0 else f"{job.id}:{job.lost_count}"


async def _job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return (await session.execute(select(Job).where(Job.id == job_id).with_for_update())).scalar_one_or_none()


async def snapshot(session: AsyncSession, job_id: uuid.UUID) -> JobSnapshot | None:
    row = (await session.execute(
        select(Job, Cluster.state, Cluster.state_changed_at).outerjoin(Cluster, Cluster.id == Job.cluster_id)
        .where(Job.id == job_id))).first()
    if row is None:
        return None
    job = row[0]
    return JobSnapshot(state=job.state, cluster_id=str(job.cluster_id) if job.cluster_id else None,
                       cluster_state=row[1], cluster_state_since=row[2], started_at=job.started_at,
                       max_runtime_s=job.max_runtime_s, lost_count=job.lost_count,
                       report_received_at=job.report_received_at)


def _spec(job: Job) -> JobSpec:
    assigned: dict[str, Any] = job.assignment or {}
    priority_class = next(name for floor, name in _PRIORITY_CLASS if job.priority >= floor)
    return JobSpec(
        job_id=str(job.id), name=job.name, image=job.image, command=list(job.command or []),
        args=list(job.args or []), env=dict(job.env or {}), cpu_millis=job.cpu_millis, memory_bytes=job.memory_bytes,
        gpus=job.gpus, gpu_resource=assigned.get("gpu_resource") or "nvidia.com/gpu",
        node_selector=dict(assigned.get("node_selector") or {}),
        tolerations=[Taint(key=t["key"], effect=t.get("effect", "NoSchedule")) for t in assigned.get("tolerations") or []],
        labels={"metacloud.io/org-id": str(job.org_id)}, max_runtime_s=job.max_runtime_s,
        priority_class=priority_class,
    )


async def dispatch(session: AsyncSession, job_id: uuid.UUID) -> str:
    """``placed`` -> ``dispatched``: queue ``start_job`` with the JobSpec (dedupe key: the job id). Returns
    the job's state afterwards."""
    job = await _job(session, job_id)
    if job is None:
        return "missing"
    if job.state != "placed" or job.cluster_id is None:
        return job.state
    name = (await session.execute(select(Cluster.name).where(Cluster.id == job.cluster_id))).scalar_one_or_none()
    await enqueue(session, org_id=job.org_id, cluster_id=job.cluster_id, kind=CommandKind.START_JOB,
                  dedupe_key=start_key(job), payload=msgspec.to_builtins(_spec(job)))
    now = utcnow()
    job.state, job.dispatched_at, job.updated_at = "dispatched", now, now
    job.reason = f"sent to the agent of cluster {name}; waiting for it to start"
    add_event(session, job, "dispatched", job.reason, now)
    return job.state


@dataclass(frozen=True, slots=True)
class StartOutcome:
    """The ``start_job`` command as the agent answered it (``state`` is ``missing`` before it exists)."""

    state: str
    error: str | None = None
    reports: bool = False  # the agent said it pushes this job's status (job reports)
    completed_at: datetime | None = None


async def start_outcome(session: AsyncSession, job_id: uuid.UUID) -> StartOutcome:
    job = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one_or_none()
    if job is None or job.cluster_id is None:
        return StartOutcome(state="missing")
    row = (await session.execute(
        select(AgentCommand.state, AgentCommand.error, AgentCommand.result, AgentCommand.completed_at).where(
            AgentCommand.cluster_id == job.cluster_id, AgentCommand.dedupe_key == start_key(job)))).first()
    if row is None:
        return StartOutcome(state="missing")
    return StartOutcome(state=row[0], error=row[1], reports=bool((row[2] or {}).get("job_reports")),
                        completed_at=row[3])


def reports_current(snap: JobSnapshot, start: StartOutcome) -> bool:
    """Whether the record is current without asking the agent (``job_status``): a report arrived lately,
    or the agent said at the start that it pushes this job and its first report may still be on its way.
    An agent that does not push is asked at once, as before job reports."""
    if snap.report_received_at is not None:
        return not past(snap.report_received_at, JOB_REPORT_FRESH_S)
    return start.reports and start.completed_at is not None and not past(start.completed_at, JOB_REPORT_FRESH_S)


async def finish(session: AsyncSession, job_id: uuid.UUID, state: str, reason: str, *, exit_code: int | None = None,
                 at: datetime | None = None, cancel_on_cluster: bool = False) -> bool:
    """End a job (succeeded | failed | cancelled | timed_out | lost) unless it already ended."""
    job = await _job(session, job_id)
    if job is None or job.state in FINISHED_STATES:
        return False
    if cancel_on_cluster and job.cluster_id is not None:
        await enqueue(session, org_id=job.org_id, cluster_id=job.cluster_id, kind=CommandKind.CANCEL_JOB,
                      dedupe_key=f"cancel:{job.id}", payload={"job_id": str(job.id)})
    now = utcnow()
    job.state, job.reason, job.exit_code, job.updated_at = state, reason, exit_code, now
    job.finished_at = at or now
    add_event(session, job, state, reason, now)
    await notify_scheduler(session)  # capacity freed
    return True


async def mark_lost(session: AsyncSession, job_id: uuid.UUID, reason: str) -> str:
    """The cluster's agent is gone past the grace: re-queue once (``on_lost=requeue``) or end as ``lost``."""
    job = await _job(session, job_id)
    if job is None or job.state in FINISHED_STATES or job.state == "queued":
        return job.state if job else "missing"
    now = utcnow()
    add_event(session, job, "lost", reason, now)
    if job.on_lost == "requeue" and job.lost_count < MAX_REQUEUES:
        job.state, job.cluster_id, job.node_name, job.assignment = "queued", None, None, None
        job.lost_count += 1
        job.placement_version += 1
        job.started_at = job.placed_at = job.dispatched_at = None
        job.reason = f"re-queued after the cluster was lost ({reason})"
        job.updated_at = now
        add_event(session, job, "queued", job.reason, now)
    else:
        job.state, job.reason, job.finished_at, job.updated_at = "lost", reason, now, now
    await notify_scheduler(session)
    return job.state


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


async def apply_status(session: AsyncSession, job_id: uuid.UUID, status: dict[str, Any]) -> str:
    """Fold the runtime's ``JobStatus`` into the record; returns the state afterwards."""
    job = await _job(session, job_id)
    if job is None:
        return "missing"
    if job.state in FINISHED_STATES or job.state not in ("dispatched", "running"):
        return job.state
    phase, reason = str(status.get("phase", "unknown")), str(status.get("reason") or "")
    exit_code = status.get("exit_code")
    now = utcnow()
    if phase == "running":
        if job.state != "running":
            job.state, job.started_at = "running", _parse_time(status.get("started_at")) or now
            job.reason, job.updated_at = "running", now
            add_event(session, job, "running", "the cluster started it", now)
        return job.state
    if phase == "succeeded":
        job.started_at = job.started_at or _parse_time(status.get("started_at"))
        await finish(session, job_id, "succeeded", f"finished (exit code {exit_code or 0})",
                     exit_code=int(exit_code or 0), at=_parse_time(status.get("finished_at")))
        return "succeeded"
    if phase == "failed":
        job.started_at = job.started_at or _parse_time(status.get("started_at"))
        ended = "timed_out" if "max runtime" in reason else "failed"
        await finish(session, job_id, ended, reason or "failed on the cluster",
                     exit_code=int(exit_code) if isinstance(exit_code, int) else None,
                     at=_parse_time(status.get("finished_at")))
        return ended
    if phase == "unknown":  # asked only after start_job succeeded: the Job is gone
        await finish(session, job_id, "failed", reason or "the job disappeared from the cluster")
        return "failed"
    # pending (or not created yet): the reason says why ("image pull failed: ...", "unschedulable: ...")
    wanted = reason or "waiting to be scheduled on the cluster"
    if job.reason != wanted:
        job.reason, job.updated_at = wanted, now
        if reason:
            add_event(session, job, job.state, reason, now)
    return job.state


def past(moment: datetime | None, seconds: float) -> bool:
    return moment is not None and utcnow() - moment > timedelta(seconds=seconds)


async def settle_cluster_jobs(session: AsyncSession, cluster_id: uuid.UUID, *, mode: str) -> int:
    """For the detach workflow: ``cancel`` stops every active job of the cluster (``cancel_job`` commands);
    ``drain`` lets them run. Returns how many are still active. The scheduler places nothing on a
    cluster that is not ``attached``, so a detaching cluster only drains."""
    active = (await session.execute(select(Job.id).where(Job.cluster_id == cluster_id,
                                                         Job.state.in_(("placed", "dispatched", "running"))))
              ).scalars().all()
    if mode != "cancel":
        return len(active)
    for job_id in active:
        await finish(session, job_id, "cancelled", "cancelled: its cluster is being detached", cancel_on_cluster=True)
    return 0
