"""What every page template gets: the signed-in user, the current org, the CSRF field, a flash."""

from __future__ import annotations

from typing import Any

from litestar import Request

from gateway.auth import authenticate
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
        "user": identity if identity is not None and identity.kind == "user" else None,
        "org": {"slug": tenant.org_slug, "name": tenant.org_slug, "role": tenant.role} if tenant else None,
        "flash": request.query_params.get("flash"),
    }
    context.update(extra)
    return context
