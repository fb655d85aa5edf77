"""The cluster pages: the list, the connect wizard (name -> install command -> waiting for the agent ->
detected capacity -> done) and a cluster's detail page with its history.

The registration token is on a page only in the response to the form that made it (create or
re-issue); later visits to the connect page offer to re-issue it. The "waiting for the agent" step
updates itself with ``/static/clusters.js`` (polls the cluster's API every 2 s; CSP allows only our
own scripts); without JavaScript a Refresh link shows the same.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Redirect, Template

from connectors.server import clusters, credentials, tokens
from connectors.server.clusters import PROVIDER_NAMES, PROVIDERS, ClusterView
from gateway.api.clusters import create_and_issue, detach_and_start, reissue
from gateway.auth import client_ip, require
from gateway.deps import Runtime, Tenant
from gateway.runtime import GatewayRuntime
from gateway.web.context import page_context
from tenants.db import tenant_session
from tenants.errors import Conflict, InvalidInput
from tenants.permissions import Permission
from tenants.scope import TenantScope

__all__ = ["cluster_page_routes"]

_PAGE: dict[str, Any] = {"include_in_schema": False}
_BASE = "/orgs/{org:str}/clusters"
_ONE = _BASE + "/{cluster_id:uuid}"
GiB = 1 << 30


class ClusterForm(msgspec.Struct):
    name: str = ""
    provider: str = ""
    region: str = ""


class DetachForm(msgspec.Struct):
    jobs: str = "drain"


def _cores(millis: int) -> str:
    return f"{millis / 1000:g}"


def _gib(n: int) -> str:
    return f"{n / GiB:.1f}".removesuffix(".0")


def present(v: ClusterView) -> dict[str, Any]:
    """What the templates show of a cluster (numbers already in people's units)."""
    cap = v.capacity
    capacity = None
    if cap is not None:
        capacity = {
            "nodes": cap.node_count, "cpus": _cores(cap.cpu_total_millis), "cpus_used": _cores(cap.cpu_allocated_millis),
            "memory_gib": _gib(cap.memory_total_bytes), "memory_used_gib": _gib(cap.memory_allocated_bytes),
            "gpus": cap.gpu_total, "gpus_used": cap.gpu_allocated,
            "gpu_types": [{"type": k.replace("|", " "), "total": t["total"], "allocated": t["allocated"]}
                          for k, t in sorted(cap.gpus_by_type.items())],
            "reported_at": cap.reported_at,
        }
    return {"id": v.id, "name": v.name, "provider": PROVIDER_NAMES.get(v.provider, v.provider), "region": v.region,
            "state": v.state, "reason": v.state_reason, "changed_at": v.state_changed_at,
            "last_heartbeat_at": v.last_heartbeat_at, "agent_version": v.agent_version, "runtime": v.runtime,
            "kubernetes_version": v.kubernetes_version, "capacity": capacity, "labels": v.labels}


async def _render(request: Request[Any, Any, Any], tenant: TenantScope, template: str, *, status: int = 200,
                  **extra: Any) -> Template:
    context = await page_context(request, tenant=tenant, can=tenant.permissions, providers=PROVIDERS,
                                 provider_names=PROVIDER_NAMES, **extra)
    return Template(template_name=template, context=context, status_code=status)


async def _view(runtime: GatewayRuntime, tenant: TenantScope, cluster_id: uuid.UUID) -> ClusterView:
    async with tenant_session(runtime.sessions, tenant) as s:
        return await clusters.get_cluster(tenant, s, cluster_id)


@get(_BASE, guards=[require(Permission.CLUSTERS_READ)], **_PAGE)
async def clusters_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                        runtime: Runtime) -> Template:
    async with tenant_session(runtime.sessions, tenant) as s:
        views = await clusters.list_clusters(tenant, s)
    return await _render(request, tenant, "clusters/list.html", clusters=[present(v) for v in views])


@get(_BASE + "/new", guards=[require(Permission.CLUSTERS_MANAGE)], **_PAGE)
async def new_cluster_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant) -> Template:
    return await _render(request, tenant, "clusters/new.html", values={"provider": "kubernetes"}, errors={})


@post(_BASE, guards=[require(Permission.CLUSTERS_MANAGE)], **_PAGE)
async def create_cluster_submit(org: FromPath[str], request: Request[Any, Any, Any],
                                data: URLEncodedBody[ClusterForm], tenant: Tenant, runtime: Runtime) -> Template:
    values = {"name": data.name.strip(), "provider": data.provider, "region": data.region.strip()}
    try:
        made = await create_and_issue(runtime, tenant, name=values["name"], provider=values["provider"],
                                      region=values["region"], labels={}, ip=client_ip(request))
    except InvalidInput as exc:
        return await _render(request, tenant, "clusters/new.html", status=422, values=values,
                             errors=exc.field_errors)
    except Conflict as exc:
        return await _render(request, tenant, "clusters/new.html", status=409, values=values,
                             errors={"name": exc.message})
    return await _connect(request, tenant, runtime, made.view, made.issued, status=201)


async def _connect(request: Request[Any, Any, Any], tenant: TenantScope, runtime: GatewayRuntime, view: ClusterView,
                   issued: tokens.IssuedToken | None, *, status: int = 200) -> Template:
    install = None
    if issued is not None:
        cmds = tokens.install_commands(runtime.settings.public_url, issued.token)
        install = {"kubectl": cmds.kubectl, "helm": cmds.helm, "bare_host": cmds.bare_host,
                   "expires_at": issued.expires_at}
    return await _render(request, tenant, "clusters/connect.html", status=status, cluster=present(view),
                         install=install, api_url=f"/api/v1/orgs/{tenant.org_slug}/clusters/{view.id}")


@get(_ONE + "/connect", guards=[require(Permission.CLUSTERS_MANAGE)], **_PAGE)
async def connect_page(org: FromPath[str], cluster_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                       tenant: Tenant, runtime: Runtime) -> Template:
    return await _connect(request, tenant, runtime, await _view(runtime, tenant, cluster_id), None)


@post(_ONE + "/token", guards=[require(Permission.CLUSTERS_MANAGE)], **_PAGE)
async def reissue_submit(org: FromPath[str], cluster_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                         tenant: Tenant, runtime: Runtime) -> Response[Any]:
    try:
        issued = await reissue(runtime, tenant, cluster_id, client_ip(request))
    except Conflict as exc:
        return _back(f"/orgs/{tenant.org_slug}/clusters/{cluster_id}", exc.message)
    return await _connect(request, tenant, runtime, await _view(runtime, tenant, cluster_id), issued, status=201)


@get(_ONE, guards=[require(Permission.CLUSTERS_READ)], **_PAGE)
async def cluster_page(org: FromPath[str], cluster_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                       tenant: Tenant, runtime: Runtime) -> Template:
    async with tenant_session(runtime.sessions, tenant) as s:
        view = await clusters.get_cluster(tenant, s, cluster_id)
        events = await clusters.history(tenant, s, cluster_id)
    return await _render(request, tenant, "clusters/detail.html", cluster=present(view), events=events,
                         api_url=f"/api/v1/orgs/{tenant.org_slug}/clusters/{view.id}")


def _back(path: str, flash: str) -> Redirect:
    return Redirect(path=f"{path}?{urlencode({'flash': flash})}", status_code=303)


@post(_ONE + "/detach", guards=[require(Permission.CLUSTERS_MANAGE)], status_code=303, **_PAGE)
async def detach_submit(org: FromPath[str], cluster_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                        data: URLEncodedBody[DetachForm], tenant: Tenant, runtime: Runtime) -> Response[Any]:
    here = f"/orgs/{tenant.org_slug}/clusters/{cluster_id}"
    try:
        await detach_and_start(runtime, tenant, cluster_id, jobs=data.jobs, ip=client_ip(request))
    except (Conflict, InvalidInput) as exc:
        return _back(here, exc.message)
    return _back(here, "Detaching: the agent cleans up and is then cut off.")


@post(_ONE + "/credential/rotate", guards=[require(Permission.CLUSTERS_MANAGE)], status_code=303, **_PAGE)
async def rotate_submit(org: FromPath[str], cluster_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                        tenant: Tenant, runtime: Runtime) -> Response[Any]:
    here = f"/orgs/{tenant.org_slug}/clusters/{cluster_id}"
    try:
        async with tenant_session(runtime.sessions, tenant) as s:
            until = await credentials.request_rotation(tenant, s, cluster_id, ip=client_ip(request))
    except Conflict as exc:
        return _back(here, exc.message)
    return _back(here, f"The agent gets a new credential with its next heartbeat; the old one works until "
                       f"{until:%H:%M} UTC.")


@post(_ONE + "/delete", guards=[require(Permission.CLUSTERS_MANAGE)], status_code=303, **_PAGE)
async def delete_submit(org: FromPath[str], cluster_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                        tenant: Tenant, runtime: Runtime) -> Response[Any]:
    try:
        async with tenant_session(runtime.sessions, tenant) as s:
            await clusters.delete_cluster(tenant, s, cluster_id, ip=client_ip(request))
    except Conflict as exc:
        return _back(f"/orgs/{tenant.org_slug}/clusters/{cluster_id}", exc.message)
    return _back(f"/orgs/{tenant.org_slug}/clusters", "Cluster deleted.")


def cluster_page_routes() -> list[Any]:
    return [clusters_page, new_cluster_page, create_cluster_submit, connect_page, reissue_submit, cluster_page,
            detach_submit, rotate_submit, delete_submit]
