"""The governance policies page (org admin console): ``/orgs/{org}/policies``.

Lists the rules, adds or replaces one (a rule per subject: everyone, a role, a member) and deletes one.
Each form posts to its own route; success redirects back with a flash, a problem re-renders the page
with the message next to the field (422, never a 500). The same service as the API does the work.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Redirect, Template

from connectors.server.jobs import policies
from connectors.server.jobs.reasons import fmt_memory
from gateway.api.policies import PolicyIn, parse_rules
from gateway.auth import client_ip, require
from gateway.deps import Runtime, Tenant
from gateway.web.context import page_context
from tenants.db import tenant_session
from tenants.errors import InvalidInput
from tenants.permissions import Permission, Role
from tenants.scope import TenantScope

__all__ = ["policy_page_routes"]

_PAGE: dict[str, Any] = {"include_in_schema": False, "guards": [require(Permission.POLICIES_MANAGE)]}
_BASE = "/orgs/{org:str}/policies"


class RuleForm(msgspec.Struct):
    subject_kind: str = "role"
    subject: str = ""
    allowed_clusters: str = ""
    allowed_regions: str = ""
    gpus_allowed: str = ""  # a checkbox: "on" when ticked
    max_cpu: str = ""
    max_memory: str = ""
    max_gpus: str = ""


def _list(text: str) -> list[str] | None:
    items = [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]
    return items or None  # empty means "any"


def _keep(v: policies.PolicyView) -> PolicyIn:
    return PolicyIn(subject_kind=v.subject_kind, subject=v.subject, allowed_clusters=v.allowed_clusters,
                    allowed_regions=v.allowed_regions, gpus_allowed=v.gpus_allowed,
                    max_cpu=None if v.max_cpu_millis is None else f"{v.max_cpu_millis}m",
                    max_memory=v.max_memory_bytes, max_gpus=v.max_gpus)


def _present(v: policies.PolicyView) -> dict[str, Any]:
    return {"id": v.id, "kind": v.subject_kind, "who": v.subject_display,
            "clusters": ", ".join(v.allowed_clusters) if v.allowed_clusters is not None else "any",
            "regions": ", ".join(v.allowed_regions) if v.allowed_regions is not None else "any",
            "gpus": "yes" if v.gpus_allowed else "no",
            "max_cpu": f"{v.max_cpu_millis / 1000:g} vCPU" if v.max_cpu_millis is not None else "no limit",
            "max_memory": fmt_memory(v.max_memory_bytes) if v.max_memory_bytes is not None else "no limit",
            "max_gpus": str(v.max_gpus) if v.max_gpus is not None else "no limit"}


async def _page(request: Request[Any, Any, Any], tenant: TenantScope, runtime: Any, *, status: int = 200,
                values: dict[str, str] | None = None, errors: dict[str, str] | None = None) -> Template:
    async with tenant_session(runtime.sessions, tenant) as s:
        views = await policies.list_policies(tenant, s)
    context = await page_context(request, tenant=tenant, can=tenant.permissions, rules=[_present(v) for v in views],
                                 roles=[r.value for r in Role],
                                 values=values or {"subject_kind": "role", "subject": "member", "gpus_allowed": "on"},
                                 errors=errors or {})
    return Template(template_name="policies/policies.html", context=context, status_code=status)


@get(_BASE, **_PAGE)
async def policies_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                        runtime: Runtime) -> Template:
    return await _page(request, tenant, runtime)


@post(_BASE, **_PAGE)
async def policies_save(org: FromPath[str], data: URLEncodedBody[RuleForm], request: Request[Any, Any, Any],
                        tenant: Tenant, runtime: Runtime) -> Response[Any]:
    values = msgspec.structs.asdict(data)
    errors: dict[str, str] = {}
    max_gpus: int | None = None
    if data.max_gpus.strip():
        if data.max_gpus.strip().isdigit():
            max_gpus = int(data.max_gpus)
        else:
            errors["max_gpus"] = "a whole number, or empty for no limit"
    subject = "" if data.subject_kind == "org" else data.subject.strip()
    new = PolicyIn(subject_kind=data.subject_kind, subject=subject, allowed_clusters=_list(data.allowed_clusters),
                   allowed_regions=_list(data.allowed_regions), gpus_allowed=data.gpus_allowed == "on",
                   max_cpu=data.max_cpu.strip() or None, max_memory=data.max_memory.strip() or None, max_gpus=max_gpus)
    try:
        if errors:
            raise InvalidInput("The rule has problems.", field_errors={f"policies[0].{k}": v for k, v in errors.items()})
        async with tenant_session(runtime.sessions, tenant) as s:
            current = await policies.list_policies(tenant, s)
            stored = await _member_subject(s, tenant, new)
            others = [_keep(v) for v in current if (v.subject_kind, v.subject) != (new.subject_kind, stored)]
            await policies.replace_policies(tenant, s, parse_rules([new, *others]), ip=client_ip(request))
    except InvalidInput as exc:
        fields = {k.removeprefix("policies[0]."): v for k, v in exc.field_errors.items() if k.startswith("policies[0]")}
        return await _page(request, tenant, runtime, status=422, values=values,
                           errors=fields or {"subject": exc.message})
    return Redirect(path=f"/orgs/{tenant.org_slug}/policies?{urlencode({'flash': 'The rule was saved.'})}",
                    status_code=303)


async def _member_subject(session: Any, tenant: TenantScope, new: PolicyIn) -> str:
    """The stored subject of the rule being saved (a member's user id), to replace an existing rule for it."""
    if new.subject_kind == "member":
        emails = {v.subject_display.lower(): v.subject for v in await policies.list_policies(tenant, session)
                  if v.subject_kind == "member"}
        return emails.get(new.subject.lower(), new.subject)
    return new.subject


@post(_BASE + "/{policy_id:uuid}/delete", **_PAGE)
async def policies_delete(org: FromPath[str], policy_id: FromPath[uuid.UUID], request: Request[Any, Any, Any],
                          tenant: Tenant, runtime: Runtime) -> Response[Any]:
    async with tenant_session(runtime.sessions, tenant) as s:
        current = await policies.list_policies(tenant, s)
        await policies.replace_policies(tenant, s, parse_rules([_keep(v) for v in current if v.id != policy_id]),
                                        ip=client_ip(request))
    return Redirect(path=f"/orgs/{tenant.org_slug}/policies?{urlencode({'flash': 'The rule was deleted.'})}",
                    status_code=303)


def policy_page_routes() -> list[Any]:
    return [policies_page, policies_save, policies_delete]
