"""Signing in through an org's identity provider (OpenID Connect), driven by the gateway in two requests.

* ``begin_login``: authorization code flow with PKCE (S256); state, nonce and the code verifier
  travel in a short-lived cookie sealed with the server key (``LoginState``), so no table is needed.
* ``verify_callback``: code exchange and ID token verification (``tenants.oidc``), then an email
  the IdP verified, in one of the org's allowed domains. Network only: no transaction is held open.
* ``sign_in``: just in time, a new user (no password) and a membership with the org's default
  role, then a browser session marked ``auth_method="sso"`` for this org.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants import audit, oidc
from tenants.credentials import SessionPolicy, create_web_session, revoke_web_session
from tenants.db import new_id, unscoped_session, utcnow
from tenants.errors import NotFound, PermissionDenied
from tenants.models import Membership, Org, SsoConfig, User, WebSession
from tenants.scope import Principal, TenantScope
from tenants.security import new_token
from tenants.sso import SecretBox

__all__ = [
    "LOGIN_STATE_TTL_SECONDS",
    "LoginSettings",
    "LoginState",
    "SignedIn",
    "SsoLoginError",
    "SsoOrg",
    "VerifiedPerson",
    "begin_login",
    "find_org_for_sign_in",
    "login_settings",
    "record_login_failure",
    "sign_in",
    "sso_enabled",
    "verify_callback",
]

LOGIN_STATE_TTL_SECONDS = 600


class SsoLoginError(PermissionDenied):
    """A sign-in through the org's IdP failed; ``reason`` goes to the audit log, the message to the person."""

    code = "sso_login_failed"

    def __init__(self, reason: str, message: str, *, email: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.email = email


@dataclass(frozen=True, slots=True)
class SsoOrg:
    id: uuid.UUID
    slug: str
    name: str
    suspended: bool

    @property
    def scope(self) -> TenantScope:
        """Sign-in acts for nobody yet: the system acts in this org on the IdP's word."""
        return TenantScope.for_system(self.id, "sso-login")


async def find_org_for_sign_in(sessions: async_sessionmaker[AsyncSession], slug: str) -> SsoOrg:
    async with unscoped_session(sessions, reason="SSO sign-in starts before a session exists: find the URL's org") \
            as s:
        org = (await s.execute(select(Org).where(Org.slug == slug))).scalar_one_or_none()
    if org is None or org.deleted_at is not None:
        raise NotFound("Organization not found.")
    return SsoOrg(id=org.id, slug=org.slug, name=org.name, suspended=org.status == "suspended")


@dataclass(frozen=True, slots=True)
class LoginSettings:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    allowed_domains: tuple[str, ...]
    default_role: str


async def sso_enabled(session: AsyncSession, scope: TenantScope) -> bool:
    found = await session.execute(
        select(SsoConfig.id).where(SsoConfig.org_id == scope.org_id, SsoConfig.enabled.is_(True))
    )
    return found.scalar_one_or_none() is not None


async def login_settings(session: AsyncSession, scope: TenantScope, box: SecretBox) -> LoginSettings:
    cfg = (
        await session.execute(select(SsoConfig).where(SsoConfig.org_id == scope.org_id, SsoConfig.enabled.is_(True)))
    ).scalar_one_or_none()
    if cfg is None:
        raise NotFound("Single sign-on is not set up for this organization.", code="sso_not_configured")
    secret = box.open(cfg.client_secret_encrypted)
    if secret is None:
        raise SsoLoginError("client_secret_unreadable",
                            "Single sign-on is misconfigured: an admin needs to enter the client secret again.")
    return LoginSettings(issuer=cfg.issuer, client_id=cfg.client_id, client_secret=secret,
                         allowed_domains=tuple(cfg.allowed_domains), default_role=cfg.default_role)


@dataclass(frozen=True, slots=True)
class LoginState:
    """What the callback must find again: kept in a sealed cookie that expires in 10 minutes."""

    org_id: str
    state: str
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)
    next_path: str

    def seal(self, box: SecretBox) -> str:
        return box.seal(json.dumps([self.org_id, self.state, self.nonce, self.code_verifier, self.next_path]))

    @classmethod
    def open(cls, box: SecretBox, raw: str | None) -> LoginState | None:
        plain = box.open(raw, ttl=LOGIN_STATE_TTL_SECONDS) if raw else None
        if plain is None:
            return None
        try:
            org_id, state, nonce, verifier, next_path = json.loads(plain)
        except ValueError:
            return None
        return cls(org_id=org_id, state=state, nonce=nonce, code_verifier=verifier, next_path=next_path)


def _provider_error(exc: oidc.OidcError, email: str | None = None) -> SsoLoginError:
    return SsoLoginError(exc.reason, exc.message, email=email)


async def begin_login(
    org: SsoOrg, settings: LoginSettings, *, redirect_uri: str, next_path: str, box: SecretBox
) -> tuple[str, str]:
    """The IdP's authorization URL and the sealed state cookie that goes with it."""
    if org.suspended:
        raise SsoLoginError("org_suspended", "This organization is suspended. Contact support to restore it.")
    try:
        meta = await oidc.discover(settings.issuer)
    except oidc.OidcError as exc:
        raise _provider_error(exc) from exc
    state = LoginState(org_id=str(org.id), state=new_token(24), nonce=new_token(24), code_verifier=new_token(48),
                       next_path=next_path)
    url = oidc.authorization_url(meta, client_id=settings.client_id, redirect_uri=redirect_uri, state=state.state,
                                 nonce=state.nonce, code_verifier=state.code_verifier)
    return url, state.seal(box)


@dataclass(frozen=True, slots=True)
class VerifiedPerson:
    """Who the IdP says signed in: an email it verified, in one of the org's domains."""

    email: str
    name: str
    subject: str


@dataclass(frozen=True, slots=True)
class SignedIn:
    user_id: uuid.UUID
    email: str
    session_token: str = field(repr=False)
    created_user: bool
    joined_org: bool


async def _verified_email(meta: oidc.ProviderMetadata, tokens: dict[str, Any], claims: dict[str, Any]) -> str:
    if "email" not in claims and isinstance(tokens.get("access_token"), str):
        info = await oidc.fetch_userinfo(meta, tokens["access_token"])
        if info.get("sub") == claims.get("sub"):  # userinfo about someone else must not be merged in
            claims.update({k: v for k, v in info.items() if k not in claims})
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise SsoLoginError("no_email", "Your identity provider did not share your email address.")
    email = email.strip().lower()
    # Some providers send the boolean as a string.
    if claims.get("email_verified") not in (True, "true"):
        raise SsoLoginError("email_not_verified",
                            "Your identity provider has not verified your email address.", email=email)
    return email


def _display_name(claims: dict[str, Any], email: str) -> str:
    name = claims.get("name") or " ".join(
        str(claims[k]) for k in ("given_name", "family_name") if isinstance(claims.get(k), str)
    )
    return (str(name).strip() or email.split("@")[0])[:200]


async def verify_callback(
    org: SsoOrg, settings: LoginSettings, *, login: LoginState, code: str, redirect_uri: str
) -> VerifiedPerson:
    """Exchange the code and verify the IdP's answer. Network only: no database transaction is held open."""
    if org.suspended:
        raise SsoLoginError("org_suspended", "This organization is suspended. Contact support to restore it.")
    try:
        meta = await oidc.discover(settings.issuer)
        tokens = await oidc.exchange_code(meta, client_id=settings.client_id, client_secret=settings.client_secret,
                                          code=code, redirect_uri=redirect_uri, code_verifier=login.code_verifier)
        claims = await oidc.verify_id_token(meta, tokens["id_token"], client_id=settings.client_id,
                                            nonce=login.nonce, access_token=tokens.get("access_token"))
        email = await _verified_email(meta, tokens, claims)
    except oidc.OidcError as exc:
        raise _provider_error(exc) from exc
    domain = email.rsplit("@", 1)[1]
    if domain not in settings.allowed_domains:
        raise SsoLoginError("domain_not_allowed",
                            f"Accounts at {domain} may not sign in to this organization.", email=email)
    return VerifiedPerson(email=email, name=_display_name(claims, email), subject=str(claims.get("sub", "")))


async def sign_in(
    session: AsyncSession,
    scope: TenantScope,
    person: VerifiedPerson,
    *,
    default_role: str,
    policy: SessionPolicy,
    ip: str | None,
    user_agent: str | None,
    replaces_session: uuid.UUID | None = None,
) -> SignedIn:
    """Just in time: the account and the membership if new, then a browser session bound to this org's IdP.

    ``replaces_session`` is the browser's previous session, if any: it ends here, whoever it belonged to.
    """
    email = person.email
    now = utcnow()
    created_id = (await session.execute(
        insert(User).values(id=new_id(), email=email, name=person.name, password_hash=None,
                            email_verified_at=now, is_operator=False)
        .on_conflict_do_nothing(index_elements=[User.email]).returning(User.id)
    )).scalar_one_or_none()
    user = (await session.execute(select(User).where(User.email == email))).scalar_one()
    actor = Principal(kind="user", id=str(user.id), display=email)
    if created_id is not None:
        await audit.record(session, action="user.created", actor=actor, org_id=scope.org_id, target_kind="user",
                           target_id=user.id, target_display=email, ip=ip, details={"via": "sso"})
    elif user.email_verified_at is None:
        # Someone may have registered this address before its owner: the IdP has now proved who owns it,
        # so the unproven password and its sessions go.
        user.email_verified_at = now
        user.password_hash = None
        await session.execute(update(WebSession).where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
                              .values(revoked_at=now))
    joined_id = (await session.execute(
        insert(Membership).values(id=new_id(), org_id=scope.org_id, user_id=user.id, role=default_role)
        .on_conflict_do_nothing(constraint="uq_memberships_org_id_user_id").returning(Membership.id)
    )).scalar_one_or_none()
    if joined_id is not None:
        await audit.record(session, action="member.added", actor=actor, org_id=scope.org_id, target_kind="user",
                           target_id=user.id, target_display=email, ip=ip,
                           details={"via": "sso", "role": default_role})
    user.last_login_at = now
    if replaces_session is not None:
        await revoke_web_session(session, replaces_session)
    token = await create_web_session(session, user, policy=policy, ip=ip, user_agent=user_agent,
                                     auth_method="sso", sso_org_id=scope.org_id, active_org_id=scope.org_id)
    await audit.record(session, action="user.login", actor=actor, org_id=scope.org_id, target_kind="user",
                       target_id=user.id, target_display=email, ip=ip, details={"method": "sso"})
    return SignedIn(user_id=user.id, email=email, session_token=token, created_user=created_id is not None,
                    joined_org=joined_id is not None)


async def record_login_failure(
    session: AsyncSession, scope: TenantScope, *, reason: str, email: str | None, ip: str | None
) -> None:
    """In its own transaction: the failed sign-in's changes were rolled back, its trace must stay."""
    await audit.record(session, action="sso.login_failed", actor=None, org_id=scope.org_id, target_kind="user",
                       target_display=email or "", ip=ip, details={"reason": reason})
