"""Checking the credentials a request carries: browser sessions and API keys.

Both are looked up across tenants (the caller's org is not known yet), so the caller passes a session
of an ``unscoped_session`` (the gateway's guard resolves the org in the same transaction); what they
return is the identity the gateway scopes with.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenants.db import utcnow
from tenants.models import ApiKey, User, WebSession
from tenants.scope import Principal
from tenants.security import hash_token, new_token, tokens_equal

__all__ = [
    "API_KEY_PREFIX",
    "Identity",
    "SessionPolicy",
    "create_web_session",
    "format_api_key",
    "parse_api_key",
    "revoke_web_session",
    "verify_api_key",
    "verify_web_session",
]

API_KEY_PREFIX = "mc_"
# last_seen / last_used are written at most this often, so reads do not turn into writes.
_TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle: timedelta = timedelta(hours=2)
    absolute: timedelta = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is: a signed-in user (browser session) or an org's API key."""

    kind: str  # "user" | "api_key"
    user_id: uuid.UUID | None
    email: str
    is_operator: bool = False
    session_id: uuid.UUID | None = None
    auth_method: str = "password"
    sso_org_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    api_key_org_id: uuid.UUID | None = None
    api_key_role: str | None = None
    api_key_prefix: str | None = None

    @property
    def principal(self) -> Principal:
        if self.kind == "api_key":
            return Principal(kind="api_key", id=str(self.api_key_id), display=self.api_key_prefix or "")
        return Principal(kind="user", id=str(self.user_id), display=self.email)


def format_api_key(prefix_id: str, secret: str) -> str:
    return f"{API_KEY_PREFIX}{prefix_id}_{secret}"


def parse_api_key(raw: str) -> tuple[str, str] | None:
    """``mc_<8 chars>_<secret>`` -> (visible prefix ``mc_<8 chars>``, whole key)."""
    if not raw.startswith(API_KEY_PREFIX):
        return None
    rest = raw[len(API_KEY_PREFIX) :]
    prefix_id, sep, secret = rest.partition("_")
    if not sep or len(prefix_id) != 8 or len(secret) < 20:
        return None
    return API_KEY_PREFIX + prefix_id, raw


async def verify_api_key(
    session: AsyncSession, raw: str, *, ip: str | None, now: datetime | None = None
) -> Identity | None:
    """The key's identity, or None. Runs in the caller's unscoped transaction (which commits the
    last-used touch): the gateway resolves the key and the org in one transaction per request."""
    parsed = parse_api_key(raw)
    if parsed is None:
        return None
    prefix, whole = parsed
    now = now or utcnow()
    key = (await session.execute(select(ApiKey).where(ApiKey.prefix == prefix))).scalar_one_or_none()
    if key is None or not tokens_equal(key.secret_hash, hash_token(whole)):
        return None
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        return None
    if key.last_used_at is None or now - key.last_used_at >= _TOUCH_EVERY or key.last_used_ip != ip:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now, last_used_ip=ip))
    return Identity(
        kind="api_key",
        user_id=key.created_by,
        email="",
        api_key_id=key.id,
        api_key_org_id=key.org_id,
        api_key_role=key.role,
        api_key_prefix=key.prefix,
    )


async def create_web_session(
    session: AsyncSession,
    user: User,
    *,
    policy: SessionPolicy,
    ip: str | None,
    user_agent: str | None,
    auth_method: str = "password",
    sso_org_id: uuid.UUID | None = None,
    active_org_id: uuid.UUID | None = None,
) -> str:
    """A new session (a new id at every login: no fixation). Returns the cookie value, shown once."""
    token = new_token()
    now = utcnow()
    session.add(
        WebSession(
            token_hash=hash_token(token),
            user_id=user.id,
            active_org_id=active_org_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.absolute,
            ip=ip,
            user_agent=(user_agent or "")[:300] or None,
            auth_method=auth_method,
            sso_org_id=sso_org_id,
        )
    )
    await session.flush()
    return token


async def verify_web_session(
    session: AsyncSession, token: str, *, policy: SessionPolicy, now: datetime | None = None
) -> Identity | None:
    """The signed-in person behind a session cookie, or None; in the caller's unscoped transaction."""
    now = now or utcnow()
    row = (
        await session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.token_hash == hash_token(token))
        )
    ).first()
    if row is None:
        return None
    ws, user = row
    if ws.revoked_at is not None or ws.expires_at <= now or now - ws.last_seen_at > policy.idle:
        return None
    if now - ws.last_seen_at >= _TOUCH_EVERY:
        await session.execute(update(WebSession).where(WebSession.id == ws.id).values(last_seen_at=now))
    return Identity(
        kind="user",
        user_id=user.id,
        email=user.email,
        is_operator=user.is_operator,
        session_id=ws.id,
        auth_method=ws.auth_method,
        sso_org_id=ws.sso_org_id,
    )


async def revoke_web_session(session: AsyncSession, session_id: uuid.UUID) -> None:
    await session.execute(update(WebSession).where(WebSession.id == session_id).values(revoked_at=utcnow()))
