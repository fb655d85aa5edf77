"""``/api/v1/orgs/{org}/policies``: the org's governance rules for jobs, read (members) and replaced as a
whole (admins: POLICIES_MANAGE). A rule is for everyone (``org``), a role, or one member; the most
specific applies. Enforced at submission (403 naming the rule) and at placement."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, get, put
from litestar.params import FromPath, JSONBody

from connectors.server.jobs import policies
from connectors.server.jobs.spec import parse_cpu_millis, parse_memory_bytes
from gateway.auth import client_ip, require
from gateway.deps import Runtime, Tenant
from tenants.db import tenant_session
from tenants.errors import InvalidInput
from tenants.permissions import Permission

__all__ = ["POLICY_API_ROUTES", "PolicyIn", "PolicyRead", "PolicySet", "PolicySetIn", "parse_rules"]

_PATH = "/api/v1/orgs/{org:str}/policies"
_TAGS = ["policies"]


class PolicyIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    subject_kind: str  # org | role | member
    subject: str = ""  # the role's name, or the member's email or user id
    allowed_clusters: list[str] | None = None  # names or ids; null = any
    allowed_regions: list[str] | None = None  # null = any
    gpus_allowed: bool = True
    max_cpu: float | str | None = None  # vCPU per job
    max_memory: str | int | None = None  # "64Gi" per job
    max_gpus: int | None = None  # per job


class PolicySetIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    policies: list[PolicyIn]


class PolicyRead(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    subject_kind: str
    subject: str
    subject_display: str
    allowed_clusters: list[str] | None
    allowed_regions: list[str] | None
    gpus_allowed: bool
    max_cpu: float | None
    max_memory_bytes: int | None
    max_gpus: int | None

    @classmethod
    def of(cls, v: policies.PolicyView) -> PolicyRead:
        return cls(id=v.id, subject_kind=v.subject_kind, subject=v.subject, subject_display=v.subject_display,
                   allowed_clusters=v.allowed_clusters, allowed_regions=v.allowed_regions,
                   gpus_allowed=v.gpus_allowed,
                   max_cpu=None if v.max_cpu_millis is None else v.max_cpu_millis / 1000,
                   max_memory_bytes=v.max_memory_bytes, max_gpus=v.max_gpus)


class PolicySet(msgspec.Struct, kw_only=True):
    policies: list[PolicyRead]


def parse_rules(rules: list[PolicyIn]) -> list[policies.PolicyInput]:
    """Quantities in people's units to the stored ones; every bad field reported at once."""
    errors: dict[str, str] = {}
    parsed: list[policies.PolicyInput] = []
    for i, r in enumerate(rules):
        cpu = memory = None
        if r.max_cpu not in (None, ""):
            try:
                cpu = parse_cpu_millis(r.max_cpu)
            except ValueError as exc:
                errors[f"policies[{i}].max_cpu"] = str(exc)
        if r.max_memory not in (None, ""):
            try:
                memory = parse_memory_bytes(r.max_memory)
            except ValueError as exc:
                errors[f"policies[{i}].max_memory"] = str(exc)
        parsed.append(policies.PolicyInput(
            subject_kind=r.subject_kind, subject=r.subject, allowed_clusters=r.allowed_clusters,
            allowed_regions=r.allowed_regions, gpus_allowed=r.gpus_allowed, max_cpu_millis=cpu,
            max_memory_bytes=memory, max_gpus=r.max_gpus))
    if errors:
        raise InvalidInput("The policies have problems.", field_errors=errors)
    return parsed


@get(_PATH, guards=[require(Permission.JOBS_READ)], tags=_TAGS, summary="The org's governance rules for jobs")
async def get_policies(org: FromPath[str], tenant: Tenant, runtime: Runtime) -> PolicySet:
    async with tenant_session(runtime.sessions, tenant) as s:
        return PolicySet(policies=[PolicyRead.of(v) for v in await policies.list_policies(tenant, s)])


@put(_PATH, guards=[require(Permission.POLICIES_MANAGE)], tags=_TAGS, summary="Replace the org's governance rules")
async def put_policies(org: FromPath[str], data: JSONBody[PolicySetIn], tenant: Tenant, runtime: Runtime,
                       request: Request[Any, Any, Any]) -> PolicySet:
    rules = parse_rules(data.policies)
    async with tenant_session(runtime.sessions, tenant) as s:
        views = await policies.replace_policies(tenant, s, rules, ip=client_ip(request))
    return PolicySet(policies=[PolicyRead.of(v) for v in views])


POLICY_API_ROUTES = [get_policies, put_policies]
