"""``/api/v1/orgs/{org}/clusters``: connect (create + install command), list, read, re-issue the token,
rotate or revoke the agent credential, detach, delete. Members read; admins connect and detach.

The registration token is in a response only right after it was made (create, re-issue): only its hash
is stored. The cluster's Temporal workflows are told after the database change committed
(``gateway.agent_api.signals``).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, JSONBody

from connectors.server import clusters, credentials, tokens
from connectors.server.clusters import ClusterView, EventView
from gateway.agent_api.signals import tell_workflows
from gateway.auth import client_ip, require
from gateway.deps import Runtime, Tenant
from gateway.runtime import GatewayRuntime
from tenants.db import tenant_session
from tenants.errors import UpstreamUnavailable
from tenants.permissions import Permission
from tenants.scope import TenantScope
from workflows.clusters import client as wf

__all__ = [
    "CLUSTER_API_ROUTES",
    "ClusterCreate",
    "ClusterCreated",
    "ClusterDetail",
    "ClusterRead",
    "CreatedCluster",
    "DetachRequest",
    "InstallRead",
    "create_and_issue",
    "create_cluster",
    "delete_cluster",
    "detach_and_start",
    "detach_cluster",
    "get_cluster",
    "list_clusters",
    "reissue",
    "reissue_token",
    "revoke_credential",
    "rotate_credential",
]

_PATH = "/api/v1/orgs/{org:str}/clusters"
_ONE = _PATH + "/{cluster_id:uuid}"
_TAGS = ["clusters"]
_NO_STORE = CacheControlHeader(no_store=True)


class ClusterCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str  # 1-63 lower-case letters, digits, hyphens; unique in the org
    provider: str  # eks | aks | gke | openshift | rancher | kubernetes | bare_host
    region: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class DetachRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    jobs: str = "drain"  # drain: let running jobs finish; cancel: stop them


class CapacityRead(msgspec.Struct, kw_only=True):
    reported_at: datetime
    node_count: int
    cpu_total_millis: int
    cpu_allocated_millis: int
    memory_total_bytes: int
    memory_allocated_bytes: int
    gpu_total: int
    gpu_allocated: int
    storage_total_bytes: int
    storage_allocated_bytes: int
    gpus_by_type: dict[str, dict[str, int]]  # "nvidia.com/gpu|A100" -> {"total": 8, "allocated": 2}


class ClusterRead(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    name: str
    provider: str
    region: str
    labels: dict[str, str]
    state: str  # pending | attaching | attached | disconnected | detaching | detached | failed
    state_reason: str
    state_changed_at: datetime
    created_at: datetime
    runtime: str | None
    agent_version: str | None
    kubernetes_version: str | None
    registered_at: datetime | None
    last_heartbeat_at: datetime | None
    capacity: CapacityRead | None

    @classmethod
    def of(cls, v: ClusterView) -> ClusterRead:
        cap = None if v.capacity is None else CapacityRead(**asdict(v.capacity))
        return cls(id=v.id, name=v.name, provider=v.provider, region=v.region, labels=v.labels, state=v.state,
                   state_reason=v.state_reason, state_changed_at=v.state_changed_at, created_at=v.created_at,
                   runtime=v.runtime, agent_version=v.agent_version, kubernetes_version=v.kubernetes_version,
                   registered_at=v.registered_at, last_heartbeat_at=v.last_heartbeat_at, capacity=cap)


class EventRead(msgspec.Struct, kw_only=True):
    at: datetime
    from_state: str | None
    to_state: str
    reason: str

    @classmethod
    def of(cls, e: EventView) -> EventRead:
        return cls(at=e.at, from_state=e.from_state, to_state=e.to_state, reason=e.reason)


class ClusterDetail(ClusterRead, kw_only=True):
    history: list[EventRead]  # newest first


class InstallRead(msgspec.Struct, kw_only=True):
    """The install commands; they hold the registration token, shown this once."""

    token: str
    expires_at: datetime
    kubectl: str
    helm: str
    bare_host: str
    manifest_url: str

    @classmethod
    def of(cls, issued: tokens.IssuedToken, public_url: str) -> InstallRead:
        cmds = tokens.install_commands(public_url, issued.token)
        return cls(token=issued.token, expires_at=issued.expires_at, kubectl=cmds.kubectl, helm=cmds.helm,
                   bare_host=cmds.bare_host, manifest_url=cmds.manifest_url)


class ClusterCreated(ClusterRead, kw_only=True):
    install: InstallRead


class RotationRead(msgspec.Struct, kw_only=True):
    old_credential_valid_until: datetime
    delivery: str


class RevocationRead(msgspec.Struct, kw_only=True):
    revoked: int


# --- shared with the pages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatedCluster:
    view: ClusterView
    issued: tokens.IssuedToken


def _ttl(runtime: GatewayRuntime) -> timedelta:
    return timedelta(minutes=runtime.settings.registration_token_ttl_minutes)


async def create_and_issue(runtime: GatewayRuntime, tenant: TenantScope, *, name: str, provider: str, region: str,
                           labels: dict[str, str], ip: str | None) -> CreatedCluster:
    """Create the cluster and its first token, then start its attach workflow (and the health sweep)."""
    async with tenant_session(runtime.sessions, tenant) as s:
        cluster = await clusters.create_cluster(tenant, s, name=name, provider=provider, region=region, labels=labels,
                                                ip=ip)
        cluster.workflow_id = wf.attach_workflow_id(cluster.id)
        issued = await tokens.issue_token(s, org_id=tenant.org_id, cluster_id=cluster.id, ttl=_ttl(runtime),
                                          created_by=cluster.created_by)
        view = await clusters.get_cluster(tenant, s, cluster.id)
    queue = runtime.settings.temporal_task_queue

    async def start(client: Any) -> None:
        await wf.start_attach(client, queue, cluster_id=view.id, org_id=tenant.org_id,
                              token_expires_at=issued.expires_at)
        await wf.ensure_health(client, queue)

    await tell_workflows(runtime, "start the attach workflow", start)
    return CreatedCluster(view=view, issued=issued)


async def reissue(runtime: GatewayRuntime, tenant: TenantScope, cluster_id: uuid.UUID,
                  ip: str | None) -> tokens.IssuedToken:
    async with tenant_session(runtime.sessions, tenant) as s:
        issued = await tokens.reissue_token(tenant, s, cluster_id, ttl=_ttl(runtime), ip=ip)
    await tell_workflows(runtime, "tell the attach workflow of the new token", lambda c: wf.signal_token_reissued(
        c, runtime.settings.temporal_task_queue, cluster_id=cluster_id, org_id=tenant.org_id,
        expires_at=issued.expires_at))
    return issued


async def detach_and_start(runtime: GatewayRuntime, tenant: TenantScope, cluster_id: uuid.UUID, *, jobs: str,
                           ip: str | None) -> ClusterView:
    async with tenant_session(runtime.sessions, tenant) as s:
        await clusters.request_detach(tenant, s, cluster_id, jobs=jobs, ip=ip)
        view = await clusters.get_cluster(tenant, s, cluster_id)
    queue = runtime.settings.temporal_task_queue

    async def start(client: Any) -> None:
        await wf.cancel_attach(client, cluster_id)
        await wf.start_detach(client, queue, cluster_id=cluster_id, org_id=tenant.org_id, jobs=jobs)

    if not await tell_workflows(runtime, "start the detach workflow", start):
        raise UpstreamUnavailable("The detach was recorded, but the workflow engine is not reachable to carry it "
                                  "out. Ask to detach again in a minute; it continues where it stopped.")
    return view


# --- routes --------------------------------------------------------------------------------------------


@get(_PATH, guards=[require(Permission.CLUSTERS_READ)], tags=_TAGS, summary="The org's clusters with state and capacity")
async def list_clusters(org: FromPath[str], tenant: Tenant, runtime: Runtime) -> list[ClusterRead]:
    async with tenant_session(runtime.sessions, tenant) as s:
        return [ClusterRead.of(v) for v in await clusters.list_clusters(tenant, s)]


@post(_PATH, guards=[require(Permission.CLUSTERS_MANAGE)], tags=_TAGS, cache_control=_NO_STORE,
      summary="Connect a cluster: create it and its install command",
      description="The response holds the registration token (in the install commands) once; it expires after "
                  "REGISTRATION_TOKEN_TTL_MINUTES and registers one agent.")
async def create_cluster(org: FromPath[str], data: JSONBody[ClusterCreate], tenant: Tenant, runtime: Runtime,
                         request: Request[Any, Any, Any]) -> ClusterCreated:
    made = await create_and_issue(runtime, tenant, name=data.name, provider=data.provider, region=data.region,
                                  labels=data.labels, ip=client_ip(request))
    read = ClusterRead.of(made.view)
    return ClusterCreated(install=InstallRead.of(made.issued, runtime.settings.public_url),
                          **msgspec.structs.asdict(read))


@get(_ONE, guards=[require(Permission.CLUSTERS_READ)], tags=_TAGS, summary="A cluster with its capacity and history")
async def get_cluster(org: FromPath[str], cluster_id: FromPath[uuid.UUID], tenant: Tenant,
                      runtime: Runtime) -> ClusterDetail:
    async with tenant_session(runtime.sessions, tenant) as s:
        view = await clusters.get_cluster(tenant, s, cluster_id)
        events = await clusters.history(tenant, s, cluster_id)
    return ClusterDetail(history=[EventRead.of(e) for e in events], **msgspec.structs.asdict(ClusterRead.of(view)))


@post(_ONE + "/token", guards=[require(Permission.CLUSTERS_MANAGE)], tags=_TAGS, status_code=201,
      cache_control=_NO_STORE, summary="Re-issue the registration token (the old one stops working)")
async def reissue_token(org: FromPath[str], cluster_id: FromPath[uuid.UUID], tenant: Tenant, runtime: Runtime,
                        request: Request[Any, Any, Any]) -> InstallRead:
    issued = await reissue(runtime, tenant, cluster_id, client_ip(request))
    return InstallRead.of(issued, runtime.settings.public_url)


@post(_ONE + "/credential/rotate", guards=[require(Permission.CLUSTERS_MANAGE)], tags=_TAGS, status_code=200,
      summary="Rotate the agent credential",
      description="The agent receives the new credential with its next heartbeat; the old one keeps working for "
                  "10 minutes.")
async def rotate_credential(org: FromPath[str], cluster_id: FromPath[uuid.UUID], tenant: Tenant, runtime: Runtime,
                            request: Request[Any, Any, Any]) -> RotationRead:
    async with tenant_session(runtime.sessions, tenant) as s:
        until = await credentials.request_rotation(tenant, s, cluster_id, ip=client_ip(request))
    return RotationRead(old_credential_valid_until=until,
                        delivery="the agent receives the new credential with its next heartbeat")


@post(_ONE + "/credential/revoke", guards=[require(Permission.CLUSTERS_MANAGE)], tags=_TAGS, status_code=200,
      summary="Revoke the agent credential (the agent stops at its next call)")
async def revoke_credential(org: FromPath[str], cluster_id: FromPath[uuid.UUID], tenant: Tenant, runtime: Runtime,
                            request: Request[Any, Any, Any]) -> RevocationRead:
    async with tenant_session(runtime.sessions, tenant) as s:
        count = await credentials.revoke_agent_credentials(tenant, s, cluster_id, ip=client_ip(request))
    return RevocationRead(revoked=count)


@post(_ONE + "/detach", guards=[require(Permission.CLUSTERS_MANAGE)], tags=_TAGS, status_code=202,
      summary="Detach the cluster (drain or cancel its jobs, clean up, revoke the agent)")
async def detach_cluster(org: FromPath[str], cluster_id: FromPath[uuid.UUID], data: JSONBody[DetachRequest],
                         tenant: Tenant, runtime: Runtime, request: Request[Any, Any, Any]) -> ClusterRead:
    view = await detach_and_start(runtime, tenant, cluster_id, jobs=data.jobs, ip=client_ip(request))
    return ClusterRead.of(view)


@delete(_ONE, guards=[require(Permission.CLUSTERS_MANAGE)], tags=_TAGS, summary="Delete a detached cluster")
async def delete_cluster(org: FromPath[str], cluster_id: FromPath[uuid.UUID], tenant: Tenant, runtime: Runtime,
                         request: Request[Any, Any, Any]) -> None:
    async with tenant_session(runtime.sessions, tenant) as s:
        await clusters.delete_cluster(tenant, s, cluster_id, ip=client_ip(request))


CLUSTER_API_ROUTES = [list_clusters, create_cluster, get_cluster, reissue_token, rotate_credential, revoke_credential,
                      detach_cluster, delete_cluster]
