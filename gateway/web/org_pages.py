"""Pages for organizations: the switcher and create form (``/orgs``), an org's home, switch,
delete (typed confirmation) and restore."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.params import URLEncodedBody
from litestar.response import Redirect, Template

from gateway.auth import client_ip, require, require_user
from gateway.deps import CurrentIdentity, Runtime, Tenant
from gateway.runtime import GatewayRuntime
from gateway.web.context import page_context
from tenants import orgs
from tenants.accounts import ensure_verified
from tenants.db import tenant_session, unscoped_session, utcnow
from tenants.errors import InvalidInput, PermissionDenied
from tenants.permissions import Permission, Role, permissions_for
from tenants.scope import TenantScope

__all__ = ["org_delete", "org_home", "org_restore", "org_switch", "orgs_create", "orgs_page"]

_PAGE: dict[str, Any] = {"include_in_schema": False}

# The admin console pages other parts of the app serve, and what each needs.
ADMIN_LINKS = (
    ("members", "Members", Permission.MEMBERS_READ),
    ("invites", "Invites", Permission.INVITES_MANAGE),
    ("api-keys", "API keys", Permission.API_KEYS_READ),
    ("sso", "Single sign-on", Permission.SSO_READ),
    ("audit", "Audit log", Permission.AUDIT_READ),
)


async def _orgs_page(request: Request[Any, Any, Any], runtime: GatewayRuntime, user_id: uuid.UUID | None, *, status: int = 200,
                     values: dict[str, str] | None = None, errors: dict[str, str] | None = None) -> Template:
    assert user_id is not None
    async with unscoped_session(runtime.sessions, reason="a person's memberships span orgs") as s:
        views = await orgs.memberships_of(s, user_id, include_deleted=True)
    now = utcnow()
    deleted = [v for v in views if v.deleted_at is not None and v.role == Role.OWNER.value
               and v.restorable_until is not None and v.restorable_until > now]
    context = await page_context(request, deleted_orgs=deleted, values=values or {}, errors=errors or {})
    return Template(template_name="orgs/list.html", context=context, status_code=status)


@get("/orgs", guards=[require_user], **_PAGE)
async def orgs_page(request: Request[Any, Any, Any], identity: CurrentIdentity, runtime: Runtime) -> Response[Any]:
    return await _orgs_page(request, runtime, identity.user_id)


@post("/orgs", guards=[require_user], status_code=303, **_PAGE)
async def orgs_create(request: Request[Any, Any, Any], data: URLEncodedBody[dict[str, str]],
                      identity: CurrentIdentity, runtime: Runtime) -> Response[Any]:
    assert identity.user_id is not None
    values = {"name": data.get("name", "")}
    try:
        async with unscoped_session(runtime.sessions, reason="a new org's slug must be unique across all orgs") as s:
            await ensure_verified(s, identity.user_id)
            org = await orgs.create_org(s, owner_id=identity.user_id, name=values["name"], actor=identity.principal,
                                        ip=client_ip(request))
            if identity.session_id is not None:
                owner = TenantScope(org_id=org.id, principal=identity.principal, org_slug=org.slug,
                                    role=Role.OWNER.value, permissions=permissions_for(Role.OWNER.value))
                await orgs.set_active_org(owner, s, web_session_id=identity.session_id)
    except InvalidInput as exc:
        return await _orgs_page(request, runtime, identity.user_id, status=422, values=values,
                                errors=exc.field_errors)
    except PermissionDenied as exc:
        return await _orgs_page(request, runtime, identity.user_id, status=403, values=values,
                                errors={"name": exc.message})
    return Redirect(path=f"/orgs/{org.slug}", status_code=303)


@get("/orgs/{org:str}", guards=[require(Permission.ORG_READ)], **_PAGE)
async def org_home(request: Request[Any, Any, Any], tenant: Tenant) -> Response[Any]:
    return await _org_home(request, tenant)


async def _org_home(request: Request[Any, Any, Any], tenant: TenantScope, *, status: int = 200,
                    errors: dict[str, str] | None = None) -> Template:
    links = [{"href": f"/orgs/{tenant.org_slug}/{path}", "label": label} for path, label, perm in ADMIN_LINKS
             if tenant.can(perm)]
    context = await page_context(request, tenant=tenant, admin_links=links, can_delete=tenant.can(Permission.ORG_DELETE),
                                 errors=errors or {})
    return Template(template_name="orgs/home.html", context=context, status_code=status)


@post("/orgs/{org:str}/switch", guards=[require(Permission.ORG_READ)], status_code=303, **_PAGE)
async def org_switch(tenant: Tenant, identity: CurrentIdentity, runtime: Runtime) -> Response[Any]:
    if identity.session_id is not None:
        async with tenant_session(runtime.sessions, tenant) as s:
            await orgs.set_active_org(tenant, s, web_session_id=identity.session_id)
    return Redirect(path=f"/orgs/{tenant.org_slug}", status_code=303)


@post("/orgs/{org:str}/delete", guards=[require(Permission.ORG_DELETE)], status_code=303, **_PAGE)
async def org_delete(request: Request[Any, Any, Any], data: URLEncodedBody[dict[str, str]], tenant: Tenant,
                     runtime: Runtime) -> Response[Any]:
    if data.get("confirm", "").strip() != tenant.org_slug:
        return await _org_home(request, tenant, status=422,
                               errors={"confirm": f"Type {tenant.org_slug} to confirm."})
    async with tenant_session(runtime.sessions, tenant) as s:
        await orgs.delete_org(tenant, s, ip=client_ip(request))
    flash = f"{tenant.org_slug} was deleted. Owners can restore it here for 30 days."
    return Redirect(path="/orgs?" + urlencode({"flash": flash}), status_code=303)


@post("/orgs/{org:str}/restore", guards=[require(Permission.ORG_DELETE, allow_deleted=True)], status_code=303,
      **_PAGE)
async def org_restore(request: Request[Any, Any, Any], tenant: Tenant, runtime: Runtime) -> Response[Any]:
    async with tenant_session(runtime.sessions, tenant) as s:
        await orgs.restore_org(tenant, s, ip=client_ip(request))
    return Redirect(path=f"/orgs/{tenant.org_slug}?" + urlencode({"flash": "Restored."}), status_code=303)
