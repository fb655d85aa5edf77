"""``/api/v1/orgs/{org}/sso``: read, save and remove the org's single sign-on settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Request, delete, get, put
from litestar.params import FromPath, JSONBody

from gateway.auth import client_ip, require
from gateway.deps import AppSettings, CurrentIdentity, Sessions, Tenant
from tenants import sso
from tenants.db import tenant_session
from tenants.errors import NotFound
from tenants.models import SsoConfig
from tenants.permissions import Permission
from tenants.settings import Settings

__all__ = ["SsoConfigRead", "SsoConfigWrite", "delete_sso", "get_sso", "put_sso"]

_PATH = "/api/v1/orgs/{org:str}/sso"
_TAGS = ["sso"]


class SsoConfigWrite(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    issuer: str
    client_id: str
    allowed_domains: list[str]
    # Leave out (or null) to keep the stored secret; required the first time.
    client_secret: str | None = None
    default_role: str = "member"
    sso_required: bool = False
    enabled: bool = True


class SsoConfigRead(msgspec.Struct, kw_only=True):
    issuer: str
    client_id: str
    client_secret: Literal["set"]  # never returned: it only says one is stored
    allowed_domains: list[str]
    default_role: str
    sso_required: bool
    enabled: bool
    redirect_uri: str  # register this at the identity provider
    login_url: str
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, cfg: SsoConfig, settings: Settings, org_slug: str) -> SsoConfigRead:
        return cls(
            issuer=cfg.issuer,
            client_id=cfg.client_id,
            client_secret="set",  # noqa: S106 - a marker, never the secret
            allowed_domains=list(cfg.allowed_domains),
            default_role=cfg.default_role,
            sso_required=cfg.sso_required,
            enabled=cfg.enabled,
            redirect_uri=sso.callback_url(settings.public_url, org_slug),
            login_url=f"{settings.public_url.rstrip('/')}/orgs/{org_slug}/sso/login",
            created_at=cfg.created_at,
            updated_at=cfg.updated_at,
        )


@get(_PATH, guards=[require(Permission.SSO_READ)], tags=_TAGS, summary="The org's SSO settings")
async def get_sso(org: FromPath[str], tenant: Tenant, sessions: Sessions, settings: AppSettings) -> SsoConfigRead:
    async with tenant_session(sessions, tenant) as s:
        cfg = await sso.find_config(s, tenant)
        if cfg is None:
            raise NotFound("Single sign-on is not set up for this organization; PUT settings to set it up.",
                           code="sso_not_configured")
        return SsoConfigRead.of(cfg, settings, tenant.org_slug)


@put(_PATH, guards=[require(Permission.SSO_MANAGE)], tags=_TAGS, summary="Save the org's SSO settings",
     description="Checks the issuer by OpenID Connect discovery first (422 if it is unreachable or not OIDC).")
async def put_sso(
    org: FromPath[str], data: JSONBody[SsoConfigWrite], tenant: Tenant, sessions: Sessions, settings: AppSettings,
    identity: CurrentIdentity, request: Request[Any, Any, Any],
) -> SsoConfigRead:
    values = sso.SsoSettings(
        issuer=data.issuer, client_id=data.client_id, client_secret=data.client_secret,
        allowed_domains=data.allowed_domains, default_role=data.default_role, sso_required=data.sso_required,
        enabled=data.enabled,
    )
    async with tenant_session(sessions, tenant) as s:
        cfg = await sso.save_config(
            s, tenant, values, box=sso.client_secret_box(settings.secret_key),
            signed_in_via_sso=identity.auth_method == "sso" and identity.sso_org_id == tenant.org_id,
            allow_http_loopback=not settings.is_production, ip=client_ip(request),
        )
        return SsoConfigRead.of(cfg, settings, tenant.org_slug)


@delete(_PATH, guards=[require(Permission.SSO_MANAGE)], tags=_TAGS, summary="Turn SSO off and forget its settings")
async def delete_sso(org: FromPath[str], tenant: Tenant, sessions: Sessions, request: Request[Any, Any, Any]) -> None:
    async with tenant_session(sessions, tenant) as s:
        await sso.delete_config(s, tenant, ip=client_ip(request))
