"""The org admin console: members, invitations, API keys and the audit log, as server-rendered pages.

Every form posts to its own small route and answers with a redirect back to the page (and a
flash) on success, or the page again with the message next to the field on failure (4xx, never a
500). The guards are those of the API; the services check again.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter, URLEncodedBody
from litestar.response import Redirect, Template

from gateway.auth import client_ip, require
from gateway.deps import AppSettings, Sessions, Tenant
from gateway.web.context import page_context
from tenants import api_keys, audit_query, invites, members
from tenants.db import tenant_session
from tenants.errors import Conflict, DomainError, InvalidInput, PermissionDenied, RateLimited
from tenants.permissions import Permission, Role
from tenants.scope import TenantScope

__all__ = ["admin_route_handlers"]

_FORM_ERRORS = (InvalidInput, Conflict, PermissionDenied, RateLimited)
_STATUS = {InvalidInput: 422, Conflict: 409, PermissionDenied: 403, RateLimited: 429}


class RoleForm(msgspec.Struct):
    role: str = ""


class InviteForm(msgspec.Struct):
    email: str = ""
    role: str = "member"


class ApiKeyForm(msgspec.Struct):
    name: str = ""
    role: str = "member"
    expires_in_days: str = ""
    expires_at: str = ""  # a date (YYYY-MM-DD, midnight UTC) or a date-time


def _status(exc: DomainError) -> int:
    return next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)


def _back(path: str, flash: str) -> Redirect:
    return Redirect(path=f"{path}?{urlencode({'flash': flash})}", status_code=303)


def grantable_roles(tenant: TenantScope) -> list[str]:
    """The roles the caller may hand out, for the role pickers."""
    return [r.value for r in Role
            if members.may_grant(tenant, r.value) and (r != Role.OWNER or tenant.can(Permission.OWNERS_MANAGE))]


async def _render(
    request: Request[Any, Any, Any], tenant: TenantScope, template: str, *, status: int = 200,
    headers: dict[str, str] | None = None, **extra: Any,
) -> Template:
    context = await page_context(request, tenant=tenant, can=tenant.permissions, roles=grantable_roles(tenant),
                                 **extra)
    return Template(template_name=template, context=context, status_code=status, headers=headers)


# --- members ----------------------------------------------------------------------------------------


async def _members_page(
    request: Request[Any, Any, Any], tenant: TenantScope, sessions: Sessions, *, status: int = 200,
    row_errors: dict[uuid.UUID, str] | None = None, error: str = "",
) -> Template:
    async with tenant_session(sessions, tenant) as s:
        people = await members.list_members(s, tenant)
    me = tenant.principal.id if tenant.principal.kind == "user" else None
    return await _render(request, tenant, "admin/members.html", status=status, active="members", members=people,
                         me=me, row_errors={str(k): v for k, v in (row_errors or {}).items()}, error=error)


@get("/orgs/{org:str}/members", guards=[require(Permission.MEMBERS_READ)], include_in_schema=False)
async def members_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                       sessions: Sessions) -> Template:
    return await _members_page(request, tenant, sessions)


@post("/orgs/{org:str}/members/{member_id:uuid}/role", guards=[require(Permission.MEMBERS_MANAGE)],
      include_in_schema=False)
async def members_change_role(
    org: FromPath[str], member_id: FromPath[uuid.UUID], data: URLEncodedBody[RoleForm],
    request: Request[Any, Any, Any], tenant: Tenant, sessions: Sessions,
) -> Response[Any]:
    try:
        async with tenant_session(sessions, tenant) as s:
            m = await members.change_role(s, tenant, member_id, data.role, ip=client_ip(request))
    except _FORM_ERRORS as exc:
        return await _members_page(request, tenant, sessions, status=_status(exc), row_errors={member_id: exc.message})
    return _back(f"/orgs/{tenant.org_slug}/members", f"{m.email} is now {m.role}.")


@post("/orgs/{org:str}/members/{member_id:uuid}/remove", guards=[require(Permission.MEMBERS_MANAGE)],
      include_in_schema=False)
async def members_remove(
    org: FromPath[str], member_id: FromPath[uuid.UUID], request: Request[Any, Any, Any], tenant: Tenant,
    sessions: Sessions,
) -> Response[Any]:
    try:
        async with tenant_session(sessions, tenant) as s:
            await members.remove_member(s, tenant, member_id, ip=client_ip(request))
    except _FORM_ERRORS as exc:
        return await _members_page(request, tenant, sessions, status=_status(exc), row_errors={member_id: exc.message})
    return _back(f"/orgs/{tenant.org_slug}/members", "The member was removed.")


@post("/orgs/{org:str}/leave", guards=[require(Permission.ORG_READ)], include_in_schema=False)
async def members_leave(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                        sessions: Sessions) -> Response[Any]:
    try:
        async with tenant_session(sessions, tenant) as s:
            await members.leave_org(s, tenant, ip=client_ip(request))
    except _FORM_ERRORS as exc:
        return await _members_page(request, tenant, sessions, status=_status(exc), error=exc.message)
    return _back("/orgs", f"You left {tenant.org_slug}.")


# --- invitations ------------------------------------------------------------------------------------


async def _invites_page(
    request: Request[Any, Any, Any], tenant: TenantScope, sessions: Sessions, *, status: int = 200,
    values: dict[str, str] | None = None, errors: dict[str, str] | None = None, error: str = "",
) -> Template:
    async with tenant_session(sessions, tenant) as s:
        pending = await invites.list_invites(s, tenant, open_only=True)
    return await _render(request, tenant, "admin/invites.html", status=status, active="invites", invites=pending,
                         values=values or {"email": "", "role": "member"}, errors=errors or {}, error=error)


@get("/orgs/{org:str}/invites", guards=[require(Permission.INVITES_MANAGE)], include_in_schema=False)
async def invites_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                       sessions: Sessions) -> Template:
    return await _invites_page(request, tenant, sessions)


@post("/orgs/{org:str}/invites", guards=[require(Permission.INVITES_MANAGE)], include_in_schema=False)
async def invites_create(
    org: FromPath[str], data: URLEncodedBody[InviteForm], request: Request[Any, Any, Any], tenant: Tenant,
    sessions: Sessions, settings: AppSettings,
) -> Response[Any]:
    try:
        async with tenant_session(sessions, tenant) as s:
            made = await invites.create_invite(s, tenant, email=data.email, role=data.role,
                                               public_url=settings.public_url, ip=client_ip(request))
    except _FORM_ERRORS as exc:
        errors = dict(exc.field_errors) if isinstance(exc, InvalidInput) else {}
        if isinstance(exc, Conflict):
            errors["email"] = exc.message
        elif isinstance(exc, PermissionDenied):
            errors["role"] = exc.message
        return await _invites_page(request, tenant, sessions, status=_status(exc), errors=errors,
                                   values={"email": data.email, "role": data.role},
                                   error="" if errors else exc.message)
    return _back(f"/orgs/{tenant.org_slug}/invites", f"Invitation sent to {made.invite.email}.")


@post("/orgs/{org:str}/invites/{invite_id:uuid}/revoke", guards=[require(Permission.INVITES_MANAGE)],
      include_in_schema=False)
async def invites_revoke(
    org: FromPath[str], invite_id: FromPath[uuid.UUID], request: Request[Any, Any, Any], tenant: Tenant,
    sessions: Sessions,
) -> Response[Any]:
    try:
        async with tenant_session(sessions, tenant) as s:
            v = await invites.revoke_invite(s, tenant, invite_id, ip=client_ip(request))
    except _FORM_ERRORS as exc:
        return await _invites_page(request, tenant, sessions, status=_status(exc), error=exc.message)
    return _back(f"/orgs/{tenant.org_slug}/invites", f"The invitation for {v.email} was revoked.")


# --- API keys ---------------------------------------------------------------------------------------


async def _keys_page(
    request: Request[Any, Any, Any], tenant: TenantScope, sessions: Sessions, *, status: int = 200,
    values: dict[str, str] | None = None, errors: dict[str, str] | None = None, error: str = "",
    created: api_keys.CreatedApiKey | None = None,
) -> Template:
    async with tenant_session(sessions, tenant) as s:
        keys = await api_keys.list_api_keys(s, tenant)
        me = await members.acting_user_id(s, tenant)
    values = values or {"name": "", "role": "member", "expires_in_days": "", "expires_at": ""}
    return await _render(
        request, tenant, "admin/api_keys.html", status=status, active="api-keys", keys=keys, values=values,
        errors=errors or {}, error=error, created=created, me=me,
        # the page that shows a secret must not be kept by caches or the back button
        headers={"Cache-Control": "no-store"} if created else None,
    )


def _key_expiry(form: ApiKeyForm) -> tuple[int | None, datetime | None]:
    errors: dict[str, str] = {}
    days: int | None = None
    at: datetime | None = None
    if form.expires_in_days.strip():
        try:
            days = int(form.expires_in_days.strip())
        except ValueError:
            errors["expires_in_days"] = "A whole number of days."
    if form.expires_at.strip():
        try:
            at = datetime.fromisoformat(form.expires_at.strip())
        except ValueError:
            errors["expires_at"] = "A date like 2030-01-31."
        else:
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
    if errors:
        raise InvalidInput("Check the expiry.", field_errors=errors)
    return days, at


@get("/orgs/{org:str}/api-keys", guards=[require(Permission.API_KEYS_READ)], include_in_schema=False)
async def api_keys_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant,
                        sessions: Sessions) -> Template:
    return await _keys_page(request, tenant, sessions)


@post("/orgs/{org:str}/api-keys", guards=[require(Permission.API_KEYS_MANAGE)], include_in_schema=False)
async def api_keys_create(
    org: FromPath[str], data: URLEncodedBody[ApiKeyForm], request: Request[Any, Any, Any], tenant: Tenant,
    sessions: Sessions,
) -> Response[Any]:
    try:
        days, at = _key_expiry(data)
        async with tenant_session(sessions, tenant) as s:
            made = await api_keys.create_api_key(s, tenant, name=data.name, role=data.role, expires_in_days=days,
                                                 expires_at=at, ip=client_ip(request))
    except _FORM_ERRORS as exc:
        errors = dict(exc.field_errors) if isinstance(exc, InvalidInput) else {}
        if isinstance(exc, PermissionDenied):
            errors["role"] = exc.message
        return await _keys_page(request, tenant, sessions, status=_status(exc), errors=errors,
                                values=msgspec.structs.asdict(data), error="" if errors else exc.message)
    # Rendered, not redirected: the secret must never travel in a URL.
    return await _keys_page(request, tenant, sessions, status=201, created=made)


@post("/orgs/{org:str}/api-keys/{key_id:uuid}/revoke", guards=[require(Permission.API_KEYS_MANAGE)],
      include_in_schema=False)
async def api_keys_revoke(
    org: FromPath[str], key_id: FromPath[uuid.UUID], request: Request[Any, Any, Any], tenant: Tenant,
    sessions: Sessions,
) -> Response[Any]:
    try:
        async with tenant_session(sessions, tenant) as s:
            v = await api_keys.revoke_api_key(s, tenant, key_id, ip=client_ip(request))
    except _FORM_ERRORS as exc:
        return await _keys_page(request, tenant, sessions, status=_status(exc), error=exc.message)
    return _back(f"/orgs/{tenant.org_slug}/api-keys", f"The key {v.prefix} ({v.name}) was revoked.")


# --- audit log --------------------------------------------------------------------------------------


def _when(raw: str, field: str, errors: dict[str, str]) -> datetime | None:
    if not raw.strip():
        return None
    try:
        at = datetime.fromisoformat(raw.strip())
    except ValueError:
        errors[field] = "A date like 2030-01-31 or 2030-01-31T14:00."
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@get("/orgs/{org:str}/audit", guards=[require(Permission.AUDIT_READ)], include_in_schema=False)
async def audit_page(
    org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant, sessions: Sessions,
    action: FromQuery[str] = "", actor: FromQuery[str] = "", target: FromQuery[str] = "",
    since: Annotated[str, QueryParameter(name="from")] = "",
    until: Annotated[str, QueryParameter(name="to")] = "",
    before: FromQuery[str] = "",
) -> Template:
    values = {"action": action, "actor": actor, "target": target, "from": since, "to": until}
    errors: dict[str, str] = {}
    flt = audit_query.AuditFilter(
        action_prefix=action, actor=actor, target=target, since=_when(since, "from", errors),
        until=_when(until, "to", errors), before=int(before) if before.isdigit() else None,
    )
    page = audit_query.AuditPage(events=[], next_before=None)
    if not errors:
        try:
            async with tenant_session(sessions, tenant) as s:
                page = await audit_query.list_audit_events(s, tenant, flt)
        except InvalidInput as exc:
            errors = dict(exc.field_errors)
    older = (f"?{urlencode({**{k: v for k, v in values.items() if v}, 'before': page.next_before})}"
             if page.next_before else None)
    return await _render(
        request, tenant, "admin/audit.html", status=422 if errors else 200, active="audit", events=page.events,
        values=values, errors=errors, older=older,
        details_json={e.id: json.dumps(e.details, sort_keys=True, default=str) for e in page.events},
    )


def admin_route_handlers() -> list[Any]:
    return [members_page, members_change_role, members_remove, members_leave, invites_page, invites_create,
            invites_revoke, api_keys_page, api_keys_create, api_keys_revoke, audit_page]
