"""``/api/v1/orgs/{org}/jobs``: submit, list, read with its timeline, cancel, re-run, logs.

Submission checks, in order: the request's fields (422 naming each field), billing (``402``/``403``
when the org is blocked from new work), the submitter's governance policy (403 naming the rule).
Plan caps do not refuse a job: it waits with the reason and the upgrade link. After the job row
commits, its lifecycle workflow is started and the metascheduler is made sure to run; a ``NOTIFY`` in
the same transaction wakes the scheduler, so placement does not wait for its next period.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from billing.entitlements import submission_block
from connectors.server.jobs import logs as job_logs
from connectors.server.jobs import service as jobs
from connectors.server.jobs.policies import effective_policy
from connectors.server.jobs.spec import JobRequest, ValidJob, validate
from gateway.agent_api.signals import tell_workflows
from gateway.auth import client_ip, require
from gateway.deps import Runtime, Tenant
from gateway.runtime import GatewayRuntime
from tenants.db import tenant_session
from tenants.errors import InvalidInput, PermissionDenied, QuotaExceeded
from tenants.permissions import Permission
from tenants.scope import TenantScope
from workflows.jobs import client as wf

__all__ = [
    "JOB_API_ROUTES",
    "JobCreate",
    "JobList",
    "JobRead",
    "LogsRead",
    "submit_and_start",
]

_PATH = "/api/v1/orgs/{org:str}/jobs"
_ONE = _PATH + "/{job_id:uuid}"
_TAGS = ["jobs"]
_SCHEDULER_RECHECK_S = 60.0
_scheduler_ensured: dict[tuple[int, str], float] = {}


class ResourcesIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    cpu: float | str = 1.0  # vCPU, e.g. 0.5
    memory: str | int = "1Gi"  # "4Gi", "512Mi", or bytes
    gpus: int = 0
    gpu_type: str | None = None  # e.g. "A100"


class PlacementIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    mode: str = "auto"  # auto | cluster | region | labels
    cluster: str | None = None  # name or id
    region: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class JobCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    image: str | None = None  # Kubernetes clusters need one; bare hosts run `command` directly
    command: list[str] = msgspec.field(default_factory=list)
    args: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    resources: ResourcesIn = msgspec.field(default_factory=ResourcesIn)
    placement: PlacementIn = msgspec.field(default_factory=PlacementIn)
    priority: int = 50  # 0..100
    max_runtime_s: int | None = None

    def request(self) -> JobRequest:
        r, p = self.resources, self.placement
        return JobRequest(name=self.name, image=self.image, command=self.command, args=self.args, env=self.env,
                          cpu=r.cpu, memory=r.memory, gpus=r.gpus, gpu_type=r.gpu_type, mode=p.mode,
                          cluster=p.cluster, region=p.region, labels=p.labels, priority=self.priority,
                          max_runtime_s=self.max_runtime_s)


class UserRef(msgspec.Struct, kw_only=True):
    id: uuid.UUID | None
    email: str | None


class ClusterRef(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str


class ResourcesRead(msgspec.Struct, kw_only=True):
    cpu: float
    memory_bytes: int
    gpus: int
    gpu_type: str | None


class PlacementRead(msgspec.Struct, kw_only=True):
    mode: str
    cluster: str | None
    region: str | None
    labels: dict[str, str]


class JobEventRead(msgspec.Struct, kw_only=True):
    at: datetime
    state: str
    reason: str


class JobRead(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    state: str  # queued | placed | dispatched | running | succeeded | failed | cancelled | timed_out | lost
    reason: str  # why it waits, or why it ended, in words
    submitted_by: UserRef
    cluster: ClusterRef | None
    image: str | None
    command: list[str]
    args: list[str]
    resources: ResourcesRead
    placement: PlacementRead
    priority: int
    max_runtime_s: int | None
    created_at: datetime
    placed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    events: list[JobEventRead]  # the timeline, oldest first; only on the detail call

    @classmethod
    def of(cls, v: jobs.JobView) -> JobRead:
        p = v.placement
        return cls(
            id=v.id, name=v.name, state=v.state, reason=v.reason,
            submitted_by=UserRef(id=v.submitted_by_id, email=v.submitted_by_email),
            cluster=ClusterRef(id=v.cluster_id, name=v.cluster_name or "") if v.cluster_id else None,
            image=v.image, command=v.command, args=v.args,
            resources=ResourcesRead(cpu=v.cpu_millis / 1000, memory_bytes=v.memory_bytes, gpus=v.gpus,
                                    gpu_type=v.gpu_type),
            placement=PlacementRead(mode=p.get("mode", "auto"), cluster=p.get("cluster"), region=p.get("region"),
                                    labels=dict(p.get("labels") or {})),
            priority=v.priority, max_runtime_s=v.max_runtime_s, created_at=v.created_at, placed_at=v.placed_at,
            started_at=v.started_at, finished_at=v.finished_at, exit_code=v.exit_code,
            events=[JobEventRead(at=e.at, state=e.state, reason=e.reason) for e in v.events],
        )


class JobList(msgspec.Struct, kw_only=True):
    items: list[JobRead]
    next: str | None  # pass as `before` for the next page


class LogsRead(msgspec.Struct, kw_only=True):
    lines: list[str]
    complete: bool  # the job has finished


# --- shared with the pages ---------------------------------------------------------------------------


async def _start_workflows(runtime: GatewayRuntime, tenant: TenantScope, job_id: uuid.UUID) -> None:
    queue = runtime.settings.temporal_task_queue

    async def start(client: Any) -> None:
        await wf.start_lifecycle(client, queue, job_id=job_id, org_id=tenant.org_id)
        key = (id(client), queue)
        if time.monotonic() - _scheduler_ensured.get(key, float("-inf")) > _SCHEDULER_RECHECK_S:
            await wf.ensure_scheduler(client, queue)
            _scheduler_ensured[key] = time.monotonic()

    # Best effort: a job whose workflow did not start still gets one when the scheduler places it.
    await tell_workflows(runtime, "start the job's lifecycle workflow", start)


async def submit_and_start(runtime: GatewayRuntime, tenant: TenantScope, valid: ValidJob, *,
                           rerun_of: uuid.UUID | None = None) -> jobs.JobView:
    """Billing and policy checks, the job row, then its workflow. Used by the API and the pages."""
    async with tenant_session(runtime.sessions, tenant) as s:
        block = await submission_block(s, tenant.org_id)
        if block is not None:
            err = QuotaExceeded if block.status == 402 else PermissionDenied
            raise err(block.reason, code=block.code)
        rules = await effective_policy(tenant, s)
        view = await jobs.submit_job(tenant, s, valid, rules=rules, rerun_of=rerun_of)
    await _start_workflows(runtime, tenant, view.id)
    return view


async def cancel_and_tell(runtime: GatewayRuntime, tenant: TenantScope, job_id: uuid.UUID,
                          ip: str | None) -> jobs.JobView:
    async with tenant_session(runtime.sessions, tenant) as s:
        view = await jobs.cancel_job(tenant, s, job_id, ip=ip)
    await tell_workflows(runtime, "wake the job's workflow after a cancel", lambda c: wf.signal_cancel(c, job_id))
    return view


async def rerun(runtime: GatewayRuntime, tenant: TenantScope, job_id: uuid.UUID) -> jobs.JobView:
    async with tenant_session(runtime.sessions, tenant) as s:
        spec = await jobs.spec_of(tenant, s, job_id)
    return await submit_and_start(runtime, tenant, spec, rerun_of=job_id)


# --- routes --------------------------------------------------------------------------------------------


@post(_PATH, guards=[require(Permission.JOBS_SUBMIT)], tags=_TAGS, status_code=201, summary="Submit a job",
      description="422 names each bad field; 403 with code policy_denied names the governance rule; 402/403 when "
                  "the org is blocked from new work. A job over the plan's caps is accepted and waits with the "
                  "reason.")
async def submit(org: FromPath[str], data: JSONBody[JobCreate], tenant: Tenant, runtime: Runtime) -> JobRead:
    return JobRead.of(await submit_and_start(runtime, tenant, validate(data.request())))


@get(_PATH, guards=[require(Permission.JOBS_READ)], tags=_TAGS, summary="The org's jobs, newest first")
async def list_jobs(org: FromPath[str], tenant: Tenant, runtime: Runtime,
                    state_filter: Annotated[str | None, QueryParameter(name="state")] = None,
                    cluster: FromQuery[str | None] = None, mine: FromQuery[bool] = False,
                    limit: FromQuery[int] = 50, before: FromQuery[str | None] = None) -> JobList:
    anchor = None
    if before:
        try:
            anchor = uuid.UUID(before)
        except ValueError:
            raise InvalidInput("Unknown page anchor.", field_errors={"before": "use the `next` value of a page"}) \
                from None
    states = [s.strip() for s in state_filter.split(",") if s.strip()] if state_filter else None
    async with tenant_session(runtime.sessions, tenant) as s:
        page = await jobs.list_jobs(tenant, s, states=states, cluster=cluster, mine=mine, limit=limit, before=anchor)
    return JobList(items=[JobRead.of(v) for v in page.items], next=page.next)


@get(_ONE, guards=[require(Permission.JOBS_READ)], tags=_TAGS, summary="A job with its status timeline")
async def get_job(org: FromPath[str], job_id: FromPath[uuid.UUID], tenant: Tenant, runtime: Runtime) -> JobRead:
    async with tenant_session(runtime.sessions, tenant) as s:
        return JobRead.of(await jobs.get_job(tenant, s, job_id))


@post(_ONE + "/cancel", guards=[require(Permission.JOBS_SUBMIT)], tags=_TAGS, status_code=200,
      summary="Cancel a job (your own; admins: anyone's)")
async def cancel(org: FromPath[str], job_id: FromPath[uuid.UUID], tenant: Tenant, runtime: Runtime,
                 request: Request[Any, Any, Any]) -> JobRead:
    return JobRead.of(await cancel_and_tell(runtime, tenant, job_id, client_ip(request)))


@post(_ONE + "/rerun", guards=[require(Permission.JOBS_SUBMIT)], tags=_TAGS, status_code=201,
      summary="Submit the same job again")
async def rerun_job(org: FromPath[str], job_id: FromPath[uuid.UUID], tenant: Tenant, runtime: Runtime) -> JobRead:
    return JobRead.of(await rerun(runtime, tenant, job_id))


@get(_ONE + "/logs", guards=[require(Permission.JOBS_READ)], tags=_TAGS, summary="The job's logs",
     description="With follow=true: a text/event-stream of `data: <line>` events, ending with `event: end` when "
                 "the job has finished.",
     responses={200: ResponseSpec(data_container=LogsRead, description="The last `tail` lines (JSON), or with "
                                  "follow=true a text/event-stream")})
async def logs(org: FromPath[str], job_id: FromPath[uuid.UUID], tenant: Tenant, runtime: Runtime,
               tail: FromQuery[int] = 200, follow: FromQuery[bool] = False) -> Response[Any]:
    # Response[Any]: one route answers JSON or an event stream, and the handler's media type would
    # otherwise override the stream's.
    if tail < 0 or tail > 100_000:
        raise InvalidInput("tail is out of range.", field_errors={"tail": "use 0 to 100000 lines"})
    if not follow:
        read = await job_logs.read_logs(runtime.sessions, tenant, job_id, tail=tail)
        return Response(LogsRead(lines=read.lines, complete=read.complete))
    async with tenant_session(runtime.sessions, tenant) as s:
        await jobs.get_job(tenant, s, job_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        async for line in job_logs.follow_logs(runtime.sessions, tenant, job_id, tail=tail):
            yield ServerSentEventMessage(data=line)
        yield ServerSentEventMessage(event="end", data="")

    return ServerSentEvent(stream())


JOB_API_ROUTES = [submit, list_jobs, get_job, cancel, rerun_job, logs]
