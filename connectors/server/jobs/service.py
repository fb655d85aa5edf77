"""Jobs of an org as people see them: submit, list (filters, keyset pages), read with the timeline,
cancel, re-run. Services take the tenant scope first, flush and never commit.

A submitted job is ``queued`` with a reason; the metascheduler places it (``scheduler.py``) and the
job's lifecycle workflow carries it from there (``lifecycle.py``). Every state change appends a
``job_events`` row, which is the timeline on the detail view. ``NOTIFY metacloud_jobs`` (sent in the
same transaction) wakes the scheduler when work arrives or capacity frees up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.protocol import CommandKind
from connectors.server.commands import enqueue
from connectors.server.jobs.models import FINISHED_STATES, JOB_STATES, Job, JobEvent
from connectors.server.jobs.placement import PolicyRules
from connectors.server.jobs.policies import check_submission
from connectors.server.jobs.spec import ValidJob
from connectors.server.models import Cluster
from tenants import audit
from tenants.db import utcnow
from tenants.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tenants.members import acting_user_id
from tenants.models import User
from tenants.permissions import Permission
from tenants.scope import TenantScope

__all__ = [
    "NOTIFY_CHANNEL",
    "EventView",
    "JobPage",
    "JobView",
    "add_event",
    "cancel_job",
    "get_job",
    "list_jobs",
    "notify_scheduler",
    "spec_of",
    "submit_job",
    "workflow_id_for",
]

NOTIFY_CHANNEL = "metacloud_jobs"


def workflow_id_for(job_id: uuid.UUID | str) -> str:
    return f"job-{job_id}"


@dataclass(frozen=True, slots=True)
class EventView:
    at: datetime
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class JobView:
    id: uuid.UUID
    name: str
    state: str
    reason: str
    submitted_by_id: uuid.UUID | None
    submitted_by_email: str | None
    cluster_id: uuid.UUID | None
    cluster_name: str | None
    image: str | None
    command: list[str]
    args: list[str]
    env: dict[str, str]
    cpu_millis: int
    memory_bytes: int
    gpus: int
    gpu_type: str | None
    placement: dict[str, Any]
    priority: int
    max_runtime_s: int | None
    created_at: datetime
    placed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    rerun_of: uuid.UUID | None
    events: list[EventView]

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass(frozen=True, slots=True)
class JobPage:
    items: list[JobView]
    next: str | None


def _query() -> Select[Job, str, str]:
    return (select(Job, User.email, Cluster.name)
            .outerjoin(User, User.id == Job.submitted_by)
            .outerjoin(Cluster, Cluster.id == Job.cluster_id))


def _view(job: Job, email: str | None, cluster: str | None, events: list[EventView] | None = None) -> JobView:
    return JobView(
        id=job.id, name=job.name, state=job.state, reason=job.reason, submitted_by_id=job.submitted_by,
        submitted_by_email=email, cluster_id=job.cluster_id, cluster_name=cluster, image=job.image,
        command=list(job.command or []), args=list(job.args or []), env=dict(job.env or {}),
        cpu_millis=job.cpu_millis, memory_bytes=job.memory_bytes, gpus=job.gpus, gpu_type=job.gpu_type,
        placement=dict(job.placement or {}), priority=job.priority, max_runtime_s=job.max_runtime_s,
        created_at=job.created_at, placed_at=job.placed_at, started_at=job.started_at, finished_at=job.finished_at,
        exit_code=job.exit_code, rerun_of=job.rerun_of, events=events or [],
    )


async def notify_scheduler(session: AsyncSession) -> None:
    """Wake the metascheduler when this transaction commits (work arrived or capacity freed)."""
    await session.execute(text("SELECT pg_notify(:ch, '')"), {"ch": NOTIFY_CHANNEL})


def add_event(session: AsyncSession, job: Job, state: str, reason: str, at: datetime | None = None) -> None:
    session.add(JobEvent(org_id=job.org_id, job_id=job.id, at=at or utcnow(), state=state, reason=reason[:2000]))


async def _who(session: AsyncSession, scope: TenantScope, user_id: uuid.UUID | None) -> str:
    """The person acting, by email when known (an API key's creator), else the principal's name."""
    if user_id is not None:
        email = (await session.execute(select(User.email).where(User.id == user_id))).scalar_one_or_none()
        if email:
            return email
    return scope.principal.display or scope.principal.kind


async def _find_cluster(session: AsyncSession, org_id: uuid.UUID, ref: str) -> Cluster | None:
    query = select(Cluster).where(Cluster.org_id == org_id, Cluster.state != "detached")
    try:
        query = query.where((Cluster.id == uuid.UUID(ref)) | (Cluster.name == ref))
    except ValueError:
        query = query.where(Cluster.name == ref)
    return (await session.execute(query)).scalars().first()


async def submit_job(scope: TenantScope, session: AsyncSession, job: ValidJob, *, rules: PolicyRules | None,
                     rerun_of: uuid.UUID | None = None) -> JobView:
    """Queue a job after the policy checks (a 403 naming the rule). The caller checked billing."""
    scope.require(Permission.JOBS_SUBMIT)
    if job.placement["mode"] == "cluster" and await _find_cluster(session, scope.org_id,
                                                                  job.placement["cluster"]) is None:
        raise InvalidInput(f"There is no cluster {job.placement['cluster']!r} in this organization.",
                           field_errors={"placement.cluster": "no such cluster in this organization"})
    await check_submission(session, rules, job)
    user_id = await acting_user_id(session, scope)
    now = utcnow()
    row = Job(
        id=uuid.uuid4(), org_id=scope.org_id, name=job.name, submitted_by=user_id, submitted_role=scope.role or "member",
        image=job.image, command=job.command, args=job.args, env=job.env, cpu_millis=job.cpu_millis,
        memory_bytes=job.memory_bytes, gpus=job.gpus, gpu_type=job.gpu_type, placement=job.placement,
        priority=job.priority, max_runtime_s=job.max_runtime_s, state="queued",
        reason="waiting for the scheduler's next pass", queued_at=now, updated_at=now, rerun_of=rerun_of,
        on_lost="requeue", lost_count=0, placement_version=0,
    )
    row.workflow_id = workflow_id_for(row.id)
    session.add(row)
    await session.flush()
    who = await _who(session, scope, user_id)
    add_event(session, row, "queued", f"submitted by {who}" + (f" (re-run of {rerun_of})" if rerun_of else ""), now)
    await notify_scheduler(session)
    await session.flush()
    return await get_job(scope, session, row.id)


async def get_job(scope: TenantScope, session: AsyncSession, job_id: uuid.UUID) -> JobView:
    scope.require(Permission.JOBS_READ)
    row = (await session.execute(_query().where(Job.id == job_id, Job.org_id == scope.org_id))).first()
    if row is None:
        raise NotFound("No such job in this organization.")
    events = (await session.execute(select(JobEvent).where(JobEvent.job_id == job_id)
                                    .order_by(JobEvent.at, JobEvent.id))).scalars().all()
    return _view(row[0], row[1], row[2], [EventView(at=e.at, state=e.state, reason=e.reason) for e in events])


async def list_jobs(scope: TenantScope, session: AsyncSession, *, states: list[str] | None = None,
                    cluster: str | None = None, mine: bool = False, limit: int = 50,
                    before: uuid.UUID | None = None) -> JobPage:
    """Newest first; ``before`` (a job id) continues after that job (keyset, stable under inserts)."""
    scope.require(Permission.JOBS_READ)
    limit = max(1, min(limit, 200))
    query = _query().where(Job.org_id == scope.org_id)
    if states:
        unknown = [s for s in states if s not in JOB_STATES]
        if unknown:
            raise InvalidInput("Unknown job state.", field_errors={"state": "use one of: " + ", ".join(JOB_STATES)})
        query = query.where(Job.state.in_(states))
    if cluster:
        found = await _find_cluster(session, scope.org_id, cluster)
        query = query.where(Job.cluster_id == (found.id if found else uuid.UUID(int=0)))
    if mine:
        user_id = await acting_user_id(session, scope)
        query = query.where(Job.submitted_by == user_id) if user_id else query.where(Job.id.is_(None))
    if before is not None:
        anchor = (await session.execute(select(Job.created_at, Job.id).where(Job.id == before,
                                                                             Job.org_id == scope.org_id))).first()
        if anchor is None:
            raise InvalidInput("Unknown page anchor.", field_errors={"before": "no such job"})
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(anchor[0], anchor[1]))
    rows = (await session.execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))).all()
    items = [_view(r[0], r[1], r[2]) for r in rows[:limit]]
    return JobPage(items=items, next=str(items[-1].id) if len(rows) > limit else None)


async def _job_for_update(session: AsyncSession, org_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    job = (await session.execute(select(Job).where(Job.id == job_id, Job.org_id == org_id).with_for_update())
           ).scalar_one_or_none()
    if job is None:
        raise NotFound("No such job in this organization.")
    return job


async def cancel_job(scope: TenantScope, session: AsyncSession, job_id: uuid.UUID, *,
                     ip: str | None = None) -> JobView:
    """Cancel at once in our records; a job on a cluster also gets a ``cancel_job`` command for its agent.

    Own jobs need JOBS_SUBMIT, anyone's JOBS_MANAGE_ALL. Cancelling a cancelled job is a no-op; a job that
    already finished otherwise is a 409.
    """
    scope.require(Permission.JOBS_SUBMIT)
    job = await _job_for_update(session, scope.org_id, job_id)
    user_id = await acting_user_id(session, scope)
    own = user_id is not None and job.submitted_by == user_id
    if not own and not scope.can(Permission.JOBS_MANAGE_ALL):
        raise PermissionDenied("Only its submitter or an org admin can cancel this job.")
    if job.state == "cancelled":
        return await get_job(scope, session, job_id)
    if job.state in FINISHED_STATES:
        raise Conflict(f"The job already finished ({job.state}).")
    now = utcnow()
    who = await _who(session, scope, user_id)
    if job.cluster_id is not None and job.state in ("placed", "dispatched", "running"):
        await enqueue(session, org_id=job.org_id, cluster_id=job.cluster_id, kind=CommandKind.CANCEL_JOB,
                      dedupe_key=f"cancel:{job.id}", payload={"job_id": str(job.id)})
    job.state, job.reason, job.finished_at, job.cancel_requested_at, job.updated_at = (
        "cancelled", f"cancelled by {who}", now, now, now)
    add_event(session, job, "cancelled", job.reason, now)
    await notify_scheduler(session)
    if not own:
        await audit.record(session, action="job.cancelled", actor=scope.principal, org_id=scope.org_id,
                           target_kind="job", target_id=job.id, target_display=job.name, ip=ip)
    await session.flush()
    return await get_job(scope, session, job_id)


async def spec_of(scope: TenantScope, session: AsyncSession, job_id: uuid.UUID) -> ValidJob:
    """A job's request, to submit it again (re-run)."""
    view = await get_job(scope, session, job_id)
    return ValidJob(name=view.name, image=view.image, command=view.command, args=view.args, env=view.env,
                    cpu_millis=view.cpu_millis, memory_bytes=view.memory_bytes, gpus=view.gpus,
                    gpu_type=view.gpu_type, placement=view.placement, priority=view.priority,
                    max_runtime_s=view.max_runtime_s)
