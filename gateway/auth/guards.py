"""Guards: every route says what it needs, and the tenant scope is built here, nowhere else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from litestar.connection import ASGIConnection, Request
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth.identity import _runtime, authenticate
from tenants.credentials import Identity
from tenants.db import unscoped_session
from tenants.errors import NotFound, PermissionDenied, Unauthenticated
from tenants.models import Membership, Org, SsoConfig
from tenants.permissions import Permission, permissions_for
from tenants.scope import TenantScope

__all__ = ["GuardFn", "provide_identity", "provide_scope", "require", "require_operator", "require_user", "resolve_scope"]

GuardFn = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
_SCOPE_KEY = "metacloud_tenant_scope"

_NO_ORG = "Organization not found, or you are not a member of it."


async def resolve_scope(
    s: AsyncSession, identity: Identity, slug: str, *, allow_deleted: bool = False
) -> TenantScope:
    """The scope for ``identity`` acting in org ``slug``, looked up in the unscoped transaction ``s``;
    NotFound when it has no access at all, PermissionDenied when its way in is not enough."""
    org = (await s.execute(select(Org).where(Org.slug == slug))).scalar_one_or_none()
    if org is None or (org.deleted_at is not None and not allow_deleted):
        raise NotFound(_NO_ORG)
    if identity.kind == "api_key":
        if identity.api_key_org_id != org.id:
            raise NotFound(_NO_ORG)
        role = identity.api_key_role
    else:
        membership = (
            await s.execute(
                select(Membership.role, SsoConfig.sso_required)
                .outerjoin(SsoConfig, and_(SsoConfig.org_id == Membership.org_id, SsoConfig.enabled.is_(True)))
                .where(Membership.org_id == org.id, Membership.user_id == identity.user_id)
            )
        ).first()
        if membership is None:
            raise NotFound(_NO_ORG)
        role, sso_required = membership
        if sso_required and not (identity.auth_method == "sso" and identity.sso_org_id == org.id):
            raise PermissionDenied(
                "This organization requires single sign-on. Sign in through your company's identity provider.",
                code="sso_required",
                org=slug,
            )
        if identity.auth_method == "sso" and identity.sso_org_id != org.id:
            # An org's IdP vouches for people in that org only: its sessions open nothing else,
            # so an IdP run by one org's admin can never reach a user's other orgs.
            raise PermissionDenied(
                "You signed in through another organization's single sign-on. Sign in with your password "
                "(or this organization's SSO) to open it.",
                code="sso_session_elsewhere",
            )
    if org.status == "suspended":
        raise PermissionDenied(
            "This organization is suspended. Contact support to restore it.", code="org_suspended"
        )
    return TenantScope(
        org_id=org.id,
        principal=identity.principal,
        org_slug=org.slug,
        role=role,
        permissions=permissions_for(role or ""),
    )


async def _identity_or_401(
    connection: ASGIConnection[Any, Any, Any, Any], *, session: AsyncSession | None = None
) -> Identity:
    identity = await authenticate(connection, session=session)
    if identity is None:
        raise Unauthenticated("Sign in, or send an API key as 'Authorization: Bearer mc_...'.")
    return identity


def require(permission: Permission, *, allow_deleted: bool = False) -> GuardFn:
    """For routes under ``/orgs/{org}``: member of the org (else 404) holding ``permission`` (else 403)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        slug = connection.path_params.get("org")
        if not isinstance(slug, str):
            raise RuntimeError("require() guards routes with an {org} path parameter")
        # One transaction for the credential and the org: each is a round trip or two, and the
        # handler's own transaction follows. A refusal is raised after it commits (the key's
        # last-used touch stays).
        refused: Exception | None = None
        async with unscoped_session(_runtime(connection).sessions,
                                    reason="authenticate the caller and resolve the org named in the URL") as s:
            try:
                identity = await _identity_or_401(connection, session=s)
                scope = await resolve_scope(s, identity, slug, allow_deleted=allow_deleted)
            except (Unauthenticated, NotFound, PermissionDenied) as exc:
                refused = exc
        if refused is not None:
            raise refused
        scope.require(permission)
        connection.scope[_SCOPE_KEY] = scope  # type: ignore[literal-required]

    guard.permission = permission  # type: ignore[attr-defined]
    return guard


async def require_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A signed-in person (browser session). API keys act for an org, not for a person."""
    identity = await _identity_or_401(connection)
    if identity.kind != "user":
        raise PermissionDenied("This endpoint is for signed-in users, not API keys.")


require_user.permission = "user"  # type: ignore[attr-defined]


async def require_operator(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    identity = await _identity_or_401(connection)
    if identity.kind != "user" or not identity.is_operator:
        # Operators are invisible to everyone else: the console does not exist for them.
        raise NotFound("Not found.")


require_operator.permission = "operator"  # type: ignore[attr-defined]


async def provide_scope(request: Request[Any, Any, Any]) -> TenantScope:
    scope = request.scope.get(_SCOPE_KEY)  # type: ignore[call-overload]
    if scope is None:
        raise RuntimeError("this route has no require() guard, so it has no tenant scope")
    return cast(TenantScope, scope)


async def provide_identity(request: Request[Any, Any, Any]) -> Identity:
    return await _identity_or_401(request)
