"""What every page template gets: the signed-in user, the current org, the CSRF field, a flash.

``page_context(request, tenant=...)`` returns:

* ``user``: ``None`` when anonymous, else ``{id, user_id, email, name, verified, is_operator}``;
* ``verified``: whether the user's email is verified (the header shows a notice until it is);
* ``org``: the org of ``tenant`` (``{id, slug, name, plan, status, role}``, name and plan from the
  database), or ``None`` on pages outside an org;
* ``orgs``: the user's orgs for the switcher (``{slug, name, role, plan}``), ``active_org``: the slug
  the browser session is in;
* ``flash``: a one-line message from ``?flash=``; plus whatever the handler passes.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from sqlalchemy import select

from billing.dunning import banner as dunning_banner
from gateway.auth import authenticate
from gateway.runtime import GatewayRuntime
from tenants.db import tenant_session, unscoped_session
from tenants.models import Org, User, WebSession
from tenants.orgs import memberships_of
from tenants.scope import TenantScope

__all__ = ["is_page_request", "page_context"]

_API_PREFIXES = ("/api/", "/agent/", "/webhooks/", "/schema", "/healthz", "/readyz", "/static/")


def is_page_request(request: Request[Any, Any, Any]) -> bool:
    """A browser asking for a page (not an API client): errors become pages or redirects."""
    path = request.url.path
    return not path.startswith(_API_PREFIXES) and "text/html" in request.headers.get("accept", "")


async def page_context(
    request: Request[Any, Any, Any], *, tenant: TenantScope | None = None, **extra: Any
) -> dict[str, Any]:
    identity = await authenticate(request)
    context: dict[str, Any] = {
        "user": None,
        "verified": False,
        "org": None,
        "orgs": [],
        "active_org": None,
        "flash": request.query_params.get("flash"),
    }
    org_row: Org | None = None
    if identity is not None and identity.kind == "user" and identity.user_id is not None:
        runtime: GatewayRuntime = request.app.state["runtime"]
        async with unscoped_session(runtime.sessions, reason="the page header lists the user's orgs") as s:
            user = await s.get(User, identity.user_id)
            views = await memberships_of(s, identity.user_id)
            active_id = (await s.execute(select(WebSession.active_org_id)
                                         .where(WebSession.id == identity.session_id))).scalar_one_or_none()
            if tenant is not None:
                org_row = await s.get(Org, tenant.org_id)
        if user is not None:
            verified = user.email_verified_at is not None
            context["user"] = {"id": user.id, "user_id": user.id, "email": user.email, "name": user.name or user.email,
                               "verified": verified, "is_operator": user.is_operator}
            context["verified"] = verified
        context["orgs"] = [{"slug": v.slug, "name": v.name, "role": v.role, "plan": v.plan} for v in views]
        context["active_org"] = next((v.slug for v in views if v.id == active_id), None)
    elif tenant is not None:  # an API key on a page: the org's own row is visible in its scope
        runtime = request.app.state["runtime"]
        async with unscoped_session(runtime.sessions, reason="the page shows the org named in the URL") as s:
            org_row = await s.get(Org, tenant.org_id)
    if tenant is not None:
        context["org"] = {
            "id": tenant.org_id,
            "slug": tenant.org_slug,
            "name": org_row.name if org_row else tenant.org_slug,
            "plan": org_row.plan if org_row else "",
            "status": org_row.status if org_row else "",
            "deleted_at": org_row.deleted_at if org_row else None,
            "role": tenant.role,
        }
        # Every page of an org with an unpaid invoice says so (and what to do), not only the billing page.
        runtime = request.app.state["runtime"]
        async with tenant_session(runtime.sessions, tenant) as s:
            context["banner"] = await dunning_banner(s, tenant.org_id)
    context.update(extra)
    return context
