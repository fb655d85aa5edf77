"""The job pages: the list (state filter; a waiting job shows why), the submit form (field errors in
place), and a job's detail page (status timeline, reason, resources, cluster, log tail with follow,
cancel and re-run).

Handlers call the jobs services (``connectors.server.jobs``) and the submission helpers the API uses
(``gateway.api.jobs``: billing and policy checks, then the job's workflow), so a page and an API call
do exactly the same thing. The detail page is complete without JavaScript (a Refresh link);
``/static/job_detail.js`` follows the log over the server-sent-event endpoint and keeps the state and
reason current.
"""

from __future__ import annotations

import shlex
import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery, QueryParameter, URLEncodedBody
from litestar.response import Redirect, Template

from connectors.server import clusters
from connectors.server.jobs import logs as job_logs
from connectors.server.jobs import service as jobs
from connectors.server.jobs.models import FINISHED_STATES, JOB_STATES
from connectors.server.jobs.spec import JobRequest, validate
from gateway.api.jobs import cancel_and_tell, rerun, submit_and_start
from gateway.auth import client_ip, require
from gateway.deps import Runtime, Tenant
from gateway.runtime import GatewayRuntime
from gateway.web.context import page_context
from gateway.web.dashboard import fmt_bytes, fmt_cpu, since
from tenants.db import tenant_session, utcnow
from tenants.errors import Conflict, InvalidInput, PermissionDenied, QuotaExceeded, UpstreamUnavailable
from tenants.members import acting_user_id
from tenants.permissions import Permission
from tenants.scope import TenantScope

__all__ = ["JOB_PAGE_ROUTES"]

_PAGE: dict[str, Any] = {"include_in_schema": False}
_BASE = "/orgs/{org:str}/jobs"
_ONE = _BASE + "/{job_id:uuid}"
PAGE_SIZE = 50
LOG_TAIL = 200
# The service's field names (API body paths) -> the form's inputs.
_FORM_FIELD = {"resources.cpu": "cpu", "resources.memory": "memory", "resources.gpus": "gpus",
               "resources.gpu_type": "gpu_type", "placement.mode": "mode", "placement.cluster": "cluster",
               "placement.region": "region", "placement.labels": "labels"}
DEFAULTS = {"name": "", "image": "", "command": "", "args": "", "env": "", "cpu": "1", "memory": "1Gi", "gpus": "0",
            "gpu_type": "", "mode": "auto", "cluster": "", "region": "", "labels": "", "priority": "50",
            "max_runtime_s": ""}


class JobForm(msgspec.Struct):
    name: str = ""
    image: str = ""
    command: str = ""
    args: str = ""  # one per line
    env: str = ""  # KEY=VALUE lines
    cpu: str = "1"
    memory: str = "1Gi"
    gpus: str = "0"
    gpu_type: str = ""
    mode: str = "auto"
    cluster: str = ""
    region: str = ""
    labels: str = ""  # KEY=VALUE lines
    priority: str = "50"
    max_runtime_s: str = ""


def _pairs(text: str, field: str, errors: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            errors.setdefault(field, f"line {n}: use KEY=VALUE, e.g. LEARNING_RATE=0.01")
            continue
        out[key.strip()] = value.strip()
    return out


def request_of(form: JobForm) -> tuple[JobRequest, dict[str, str]]:
    """The form as a job request, plus the problems only the form can have (lines, quotes)."""
    errors: dict[str, str] = {}
    try:
        command = shlex.split(form.command)
    except ValueError:
        errors["command"] = "a quote is not closed"
        command = []
    req = JobRequest(
        name=form.name, image=form.image.strip() or None, command=command,
        args=[line.strip() for line in form.args.splitlines() if line.strip()],
        env=_pairs(form.env, "env", errors), cpu=form.cpu.strip(), memory=form.memory.strip(),
        gpus=form.gpus.strip() or 0, gpu_type=form.gpu_type.strip() or None, mode=form.mode,
        cluster=form.cluster.strip() or None, region=form.region.strip() or None,
        labels=_pairs(form.labels, "labels", errors), priority=form.priority.strip() or 50,
        max_runtime_s=form.max_runtime_s.strip() or None,
    )
    return req, errors


def _form_errors(exc: InvalidInput) -> dict[str, str]:
    return {_FORM_FIELD.get(k, k): v for k, v in exc.field_errors.items()}


def _resources(v: jobs.JobView) -> str:
    gpus = f"{v.gpus} x {v.gpu_type}" if v.gpus and v.gpu_type else str(v.gpus)
    return f"{fmt_cpu(v.cpu_millis / 1000)} vCPU · {fmt_bytes(v.memory_bytes)} · {gpus} GPU"


def _row(v: jobs.JobView, now: Any) -> dict[str, Any]:
    return {"id": v.id, "name": v.name, "state": v.state, "reason": v.reason, "cluster": v.cluster_name or "—",
            "cluster_id": v.cluster_id, "resources": _resources(v), "by": v.submitted_by_email or "—",
            "age": since(v.created_at, now), "created_at": v.created_at}


async def _render(request: Request[Any, Any, Any], tenant: TenantScope, template: str, *, status: int = 200,
                  **extra: Any) -> Template:
    context = await page_context(request, tenant=tenant, can=tenant.permissions, states=JOB_STATES, **extra)
    return Template(template_name=template, context=context, status_code=status)


def _back(path: str, flash: str) -> Redirect:
    return Redirect(path=f"{path}?{urlencode({'flash': flash})}", status_code=303)


@get(_BASE, guards=[require(Permission.JOBS_READ)], **_PAGE)
async def jobs_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant, runtime: Runtime,
                    state_filter: Annotated[str, QueryParameter(name="state")] = "", mine: FromQuery[str] = "",
                    before: FromQuery[str] = "") -> Template:
    state = state_filter
    states = [s for s in state.split(",") if s in JOB_STATES] or None
    if state == "pending":
        states = ["queued", "placed"]
    elif state == "active":
        states = ["dispatched", "running"]
    anchor = None
    try:
        anchor = uuid.UUID(before) if before else None
    except ValueError:
        anchor = None
    async with tenant_session(runtime.sessions, tenant) as s:
        try:
            page = await jobs.list_jobs(tenant, s, states=states, mine=mine == "1", limit=PAGE_SIZE, before=anchor)
        except InvalidInput:  # a stale page anchor: start from the newest
            page = await jobs.list_jobs(tenant, s, states=states, mine=mine == "1", limit=PAGE_SIZE)
    now = utcnow()
    query = {k: v for k, v in (("state", state), ("mine", mine)) if v}
    next_url = f"?{urlencode(query | {'before': page.next})}" if page.next else None
    return await _render(request, tenant, "jobs/list.html", jobs=[_row(v, now) for v in page.items],
                         state=state, mine=mine == "1", next_url=next_url, paged=anchor is not None,
                         first_url=f"?{urlencode(query)}" if query else "?")


async def _form(request: Request[Any, Any, Any], tenant: TenantScope, runtime: GatewayRuntime, *,
                values: dict[str, str], errors: dict[str, str], status: int = 200) -> Template:
    cluster_names: list[str] = []
    if tenant.can(Permission.CLUSTERS_READ):
        async with tenant_session(runtime.sessions, tenant) as s:
            cluster_names = [c.name for c in await clusters.list_clusters(tenant, s) if c.state != "detached"]
    return await _render(request, tenant, "jobs/new.html", status=status, values=values, errors=errors,
                         cluster_names=cluster_names)


@get(_BASE + "/new", guards=[require(Permission.JOBS_SUBMIT)], **_PAGE)
async def new_job_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                       runtime: Runtime) -> Template:
    return await _form(request, tenant, runtime, values=dict(DEFAULTS), errors={})


@post(_BASE, guards=[require(Permission.JOBS_SUBMIT)], **_PAGE)
async def submit_job_form(org: FromPath[str], request: Request[Any, Any, Any], data: URLEncodedBody[JobForm],
                          tenant: Tenant, runtime: Runtime) -> Response[Any]:
    values = {k: str(v) for k, v in msgspec.structs.asdict(data).items()}
    req, errors = request_of(data)
    try:
        valid = validate(req)
    except InvalidInput as exc:
        errors = {**_form_errors(exc), **errors}
    if errors:
        return await _form(request, tenant, runtime, values=values, errors=errors, status=422)
    try:
        view = await submit_and_start(runtime, tenant, valid)
    except InvalidInput as exc:
        errors = _form_errors(exc) or {"_form": exc.message}
        return await _form(request, tenant, runtime, values=values, errors=errors, status=422)
    except (PermissionDenied, QuotaExceeded) as exc:  # a governance policy (403), a billing block (402)
        status = 403 if isinstance(exc, PermissionDenied) else 402
        return await _form(request, tenant, runtime, values=values, errors={"_form": exc.message}, status=status)
    return _back(f"/orgs/{tenant.org_slug}/jobs/{view.id}", f"Submitted {view.name}: {view.reason or view.state}")


async def _may_cancel(tenant: TenantScope, runtime: GatewayRuntime, v: jobs.JobView) -> bool:
    if v.state in FINISHED_STATES or not tenant.can(Permission.JOBS_SUBMIT):
        return False
    if tenant.can(Permission.JOBS_MANAGE_ALL):
        return True
    async with tenant_session(runtime.sessions, tenant) as s:
        return v.submitted_by_id is not None and await acting_user_id(s, tenant) == v.submitted_by_id


@get(_ONE, guards=[require(Permission.JOBS_READ)], cache_control=CacheControlHeader(no_store=True), **_PAGE)
async def job_page(org: FromPath[str], job_id: FromPath[uuid.UUID], request: Request[Any, Any, Any], tenant: Tenant,
                   runtime: Runtime) -> Template:
    async with tenant_session(runtime.sessions, tenant) as s:
        view = await jobs.get_job(tenant, s, job_id)
    log_lines: list[str] = []
    log_note = ""
    if view.cluster_id is None or view.state in ("queued", "placed"):
        log_note = "No log yet: the job has not started."
    else:
        try:
            log_lines = (await job_logs.read_logs(runtime.sessions, tenant, job_id, tail=LOG_TAIL,
                                                  timeout_s=3.0)).lines
            log_note = "" if log_lines else "The log is empty so far."
        except UpstreamUnavailable as exc:
            log_note = exc.message
    now = utcnow()
    api = f"/api/v1/orgs/{tenant.org_slug}/jobs/{view.id}"
    return await _render(
        request, tenant, "jobs/detail.html", job=view, row=_row(view, now), finished=view.finished,
        events=list(reversed(view.events)), log_lines=log_lines, log_note=log_note, log_tail=LOG_TAIL,
        may_cancel=await _may_cancel(tenant, runtime, view), may_rerun=tenant.can(Permission.JOBS_SUBMIT),
        api_url=api, logs_url=f"{api}/logs?tail={LOG_TAIL}&follow=true",
        command=shlex.join(view.command) if view.command else "", now=now,
    )


@post(_ONE + "/cancel", guards=[require(Permission.JOBS_SUBMIT)], status_code=303, **_PAGE)
async def cancel_job_form(org: FromPath[str], job_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                          tenant: Tenant, runtime: Runtime) -> Response[Any]:
    here = f"/orgs/{tenant.org_slug}/jobs/{job_id}"
    try:
        view = await cancel_and_tell(runtime, tenant, job_id, client_ip(request))
    except (Conflict, PermissionDenied) as exc:
        return _back(here, exc.message)
    return _back(here, f"{view.name} is {view.state}.")


@post(_ONE + "/rerun", guards=[require(Permission.JOBS_SUBMIT)], status_code=303, **_PAGE)
async def rerun_job_form(org: FromPath[str], job_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                         tenant: Tenant, runtime: Runtime) -> Response[Any]:
    try:
        view = await rerun(runtime, tenant, job_id)
    except (InvalidInput, PermissionDenied, QuotaExceeded, Conflict) as exc:
        return _back(f"/orgs/{tenant.org_slug}/jobs/{job_id}", exc.message)
    return _back(f"/orgs/{tenant.org_slug}/jobs/{view.id}", f"Submitted again as a new job: {view.state}.")


JOB_PAGE_ROUTES = [jobs_page, new_job_page, submit_job_form, job_page, cancel_job_form, rerun_job_form]
