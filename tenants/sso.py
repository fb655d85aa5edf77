"""Per-org single sign-on (OpenID Connect): the org's settings.

Saving checks the issuer by discovery, so a typo fails at the form, not at the next sign-in.
The client secret is the one secret we must send again (to the token endpoint), so it is stored
encrypted (Fernet, with a key derived from the server's secret key) and never shown.
Signing in through these settings lives in ``tenants.sso_login``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenants import audit, oidc
from tenants.db import new_id, utcnow
from tenants.errors import InvalidInput, NotFound
from tenants.models import SsoConfig
from tenants.permissions import Permission, Role, role_within
from tenants.scope import TenantScope

__all__ = [
    "SSO_ROLES",
    "SecretBox",
    "SsoSettings",
    "callback_url",
    "client_secret_box",
    "delete_config",
    "find_config",
    "login_state_box",
    "login_url",
    "parse_domains",
    "save_config",
]

# Owner is never handed out by an identity provider: ownership is granted by a person.
SSO_ROLES = (Role.VIEWER.value, Role.MEMBER.value, Role.BILLING.value, Role.ADMIN.value)
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


class SecretBox:
    """Authenticated encryption with a key derived from the server secret, one key per purpose."""

    def __init__(self, secret_key: str, purpose: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"metacloud:{purpose}".encode()).derive(
            secret_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str, *, ttl: int | None = None) -> str | None:
        """The plaintext, or None when the token was tampered with, expired, or sealed with another key."""
        try:
            return self._fernet.decrypt(token.encode(), ttl=ttl).decode()
        except (InvalidToken, ValueError):
            return None


def callback_url(public_url: str, org_slug: str) -> str:
    """The redirect URI an admin registers at the IdP."""
    return f"{public_url.rstrip('/')}/orgs/{org_slug}/sso/callback"


def login_url(public_url: str, org_slug: str) -> str:
    """Where members start signing in (share it, or put it in the IdP's app launcher)."""
    return f"{public_url.rstrip('/')}/orgs/{org_slug}/sso/login"


def client_secret_box(secret_key: str) -> SecretBox:
    return SecretBox(secret_key, "sso-client-secret")


def login_state_box(secret_key: str) -> SecretBox:
    return SecretBox(secret_key, "sso-login-state")


@dataclass(frozen=True, slots=True)
class SsoSettings:
    issuer: str
    client_id: str
    client_secret: str | None  # None or "" keeps the stored secret
    allowed_domains: list[str]
    default_role: str = Role.MEMBER.value
    sso_required: bool = False
    enabled: bool = True


def parse_domains(raw: str) -> list[str]:
    """A form's "example.com, example.org" (commas, spaces or lines) as a list."""
    return [d for d in re.split(r"[\s,;]+", raw) if d]


async def find_config(session: AsyncSession, scope: TenantScope) -> SsoConfig | None:
    scope.require(Permission.SSO_READ)
    return (await session.execute(select(SsoConfig).where(SsoConfig.org_id == scope.org_id))).scalar_one_or_none()


def _validate(scope: TenantScope, data: SsoSettings, existing: SsoConfig | None, *, signed_in_via_sso: bool,
              allow_http_loopback: bool) -> tuple[list[str], dict[str, str]]:
    errors: dict[str, str] = {}
    problem = oidc.check_issuer_url(data.issuer.strip(), allow_http_loopback=allow_http_loopback)
    if problem:
        errors["issuer"] = problem
    if not data.client_id.strip():
        errors["client_id"] = "Enter the client ID your identity provider issued for Metacloud."
    elif len(data.client_id.strip()) > 300:
        errors["client_id"] = "The client ID is at most 300 characters."
    if not data.client_secret and existing is None:
        errors["client_secret"] = "Enter the client secret your identity provider issued for Metacloud."  # noqa: S105
    elif data.client_secret and len(data.client_secret) > 1000:
        errors["client_secret"] = "The client secret is at most 1000 characters."  # noqa: S105
    domains = sorted({d.strip().lower().lstrip("@") for d in data.allowed_domains if d.strip()})
    bad = [d for d in domains if not _DOMAIN.match(d)]
    if not domains:
        errors["allowed_domains"] = "Add at least one email domain, e.g. example.com."
    elif bad:
        errors["allowed_domains"] = f"Not a domain name: {', '.join(bad)}."
    if data.default_role not in SSO_ROLES:
        errors["default_role"] = f"Choose one of: {', '.join(SSO_ROLES)}."
    elif scope.role is not None and not role_within(scope.role, data.default_role):
        errors["default_role"] = "You cannot hand out a role with more permissions than your own."
    turning_on = data.sso_required and not (existing is not None and existing.sso_required)
    if turning_on and scope.principal.kind != "system" and not signed_in_via_sso:
        # Requiring SSO refuses every password session at once: prove the setup works first.
        errors["sso_required"] = (
            "Sign in through single sign-on once before requiring it, so a wrong setting cannot lock everyone out."
        )
    return domains, errors


async def save_config(
    session: AsyncSession,
    scope: TenantScope,
    data: SsoSettings,
    *,
    box: SecretBox,
    signed_in_via_sso: bool = False,
    allow_http_loopback: bool = False,
    ip: str | None = None,
) -> SsoConfig:
    """Create or update the org's SSO settings after checking the issuer by discovery (422 if it fails)."""
    scope.require(Permission.SSO_MANAGE)
    existing = await find_config(session, scope)
    domains, errors = _validate(scope, data, existing, signed_in_via_sso=signed_in_via_sso,
                                allow_http_loopback=allow_http_loopback)
    if errors:
        raise InvalidInput("Some SSO settings need a change.", field_errors=errors)
    try:
        meta = await oidc.discover(data.issuer.strip())
    except oidc.OidcError as exc:
        raise InvalidInput(
            f"The issuer could not be used: {exc.message}", field_errors={"issuer": exc.message},
            code="sso_issuer_invalid",
        ) from exc
    cfg = existing or SsoConfig(id=new_id(), org_id=scope.org_id)
    new_values: dict[str, Any] = {
        "issuer": meta.issuer,
        "client_id": data.client_id.strip(),
        "allowed_domains": domains,
        "default_role": data.default_role,
        "sso_required": data.sso_required,
        "enabled": data.enabled,
    }
    changed = sorted(k for k, v in new_values.items() if existing is None or getattr(existing, k) != v)
    for key, value in new_values.items():
        setattr(cfg, key, value)
    if data.client_secret:
        cfg.client_secret_encrypted = box.seal(data.client_secret)
    cfg.updated_at = utcnow()
    if existing is None:
        session.add(cfg)
    await session.flush()
    await audit.record(
        session, action="sso.updated", actor=scope.principal, org_id=scope.org_id, target_kind="sso_config",
        target_id=cfg.id, target_display=meta.issuer, ip=ip,
        details={"created": existing is None, "changed": changed, "client_secret_changed": bool(data.client_secret)},
    )
    return cfg


async def delete_config(session: AsyncSession, scope: TenantScope, *, ip: str | None = None) -> None:
    scope.require(Permission.SSO_MANAGE)
    cfg = await find_config(session, scope)
    if cfg is None:
        raise NotFound("Single sign-on is not set up for this organization.", code="sso_not_configured")
    await session.delete(cfg)
    await session.flush()
    await audit.record(session, action="sso.deleted", actor=scope.principal, org_id=scope.org_id,
                       target_kind="sso_config", target_id=cfg.id, target_display=cfg.issuer, ip=ip)
