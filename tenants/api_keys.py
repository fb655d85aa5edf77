"""API keys of an org: create (the secret is shown once), list, revoke.

A key is ``mc_<8 hex>_<secret>``; we store its SHA-256 and show ``mc_<8 hex>`` so people can tell
keys apart. A key's role is no higher than its creator's (``role_within``). Anyone with
``api_keys:manage`` revokes the keys they created; ``api_keys:manage_all`` (admins, owners)
revokes anyone's. Authentication with a key is ``tenants.credentials.verify_api_key``.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenants import audit
from tenants.credentials import API_KEY_PREFIX, format_api_key
from tenants.db import utcnow
from tenants.errors import InvalidInput, NotFound, PermissionDenied
from tenants.members import acting_user_id, check_role, require_grantable
from tenants.models import ApiKey, User
from tenants.permissions import Permission
from tenants.scope import TenantScope
from tenants.security import hash_token, new_token

__all__ = ["MAX_EXPIRY_DAYS", "ApiKeyView", "CreatedApiKey", "create_api_key", "list_api_keys", "revoke_api_key"]

MAX_EXPIRY_DAYS = 3650
_NAME_MAX = 100


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    id: uuid.UUID
    prefix: str
    name: str
    role: str
    created_at: datetime
    created_by: str  # the creator's email, "" if unknown
    created_by_id: uuid.UUID | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    last_used_ip: str | None
    status: str  # active | expired | revoked


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    key: ApiKeyView
    secret: str  # the whole key: returned once, never stored


def _status(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    return "expired" if key.expires_at is not None and key.expires_at <= now else "active"


def _view(key: ApiKey, creator: str | None, now: datetime) -> ApiKeyView:
    return ApiKeyView(
        id=key.id, prefix=key.prefix, name=key.name, role=key.role, created_at=key.created_at,
        created_by=creator or "", created_by_id=key.created_by, expires_at=key.expires_at,
        revoked_at=key.revoked_at, last_used_at=key.last_used_at, last_used_ip=key.last_used_ip,
        status=_status(key, now),
    )


def _expiry(now: datetime, days: int | None, at: datetime | None) -> datetime | None:
    if days is not None and at is not None:
        raise InvalidInput("Give the expiry in days or as a date, not both.",
                           field_errors={"expires_in_days": "Leave empty when giving a date."})
    if days is not None:
        if not 1 <= days <= MAX_EXPIRY_DAYS:
            raise InvalidInput("The expiry is out of range.",
                               field_errors={"expires_in_days": f"Between 1 and {MAX_EXPIRY_DAYS} days."})
        return now + timedelta(days=days)
    if at is not None:
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # a bare date-time means UTC
        if at <= now:
            raise InvalidInput("The expiry is in the past.", field_errors={"expires_at": "Pick a future time."})
        if at > now + timedelta(days=MAX_EXPIRY_DAYS):
            raise InvalidInput("The expiry is too far away.",
                               field_errors={"expires_at": f"At most {MAX_EXPIRY_DAYS} days from now."})
        return at
    return None


async def create_api_key(
    session: AsyncSession,
    scope: TenantScope,
    *,
    name: str,
    role: str,
    expires_in_days: int | None = None,
    expires_at: datetime | None = None,
    ip: str | None = None,
) -> CreatedApiKey:
    scope.require(Permission.API_KEYS_MANAGE)
    now = utcnow()
    errors: dict[str, str] = {}
    name = name.strip()
    if not name:
        errors["name"] = "Name the key after what uses it, e.g. 'CI pipeline'."
    elif len(name) > _NAME_MAX:
        errors["name"] = f"Use at most {_NAME_MAX} characters."
    try:
        role = check_role(role)
    except InvalidInput as exc:
        errors.update(exc.field_errors)
    expiry: datetime | None = None
    try:
        expiry = _expiry(now, expires_in_days, expires_at)
    except InvalidInput as exc:
        errors.update(exc.field_errors)
    if errors:
        raise InvalidInput("Check the highlighted fields.", field_errors=errors)
    require_grantable(scope, role)
    creator = await acting_user_id(session, scope)
    for _attempt in range(3):  # the 8-hex prefix is unique platform-wide; a clash (1 in 4e9) retries
        prefix_id = secrets.token_hex(4)
        secret = format_api_key(prefix_id, new_token())
        key = ApiKey(org_id=scope.org_id, name=name, prefix=API_KEY_PREFIX + prefix_id, secret_hash=hash_token(secret),
                     role=role, created_by=creator, expires_at=expiry, created_at=now)
        try:
            async with session.begin_nested():
                session.add(key)
                await session.flush()
        except IntegrityError:
            continue
        break
    else:  # pragma: no cover - three clashes in a row
        raise RuntimeError("could not allocate a unique API key prefix")
    await audit.record(session, action="api_key.created", actor=scope.principal, org_id=scope.org_id,
                       target_kind="api_key", target_id=key.id, target_display=key.prefix, ip=ip,
                       details={"name": name, "role": role,
                                "expires_at": expiry.isoformat() if expiry else None})
    return CreatedApiKey(key=_view(key, scope.principal.display, now), secret=secret)


async def list_api_keys(session: AsyncSession, scope: TenantScope) -> list[ApiKeyView]:
    """Every key of the org, newest first (never a secret: only the hash is stored)."""
    scope.require(Permission.API_KEYS_READ)
    rows = await session.execute(
        select(ApiKey, User.email).outerjoin(User, User.id == ApiKey.created_by)
        .where(ApiKey.org_id == scope.org_id).order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    now = utcnow()
    return [_view(key, creator, now) for key, creator in rows]


async def revoke_api_key(
    session: AsyncSession, scope: TenantScope, key_id: uuid.UUID, *, ip: str | None = None
) -> ApiKeyView:
    """The key stops working at once. Revoking twice is harmless."""
    scope.require(Permission.API_KEYS_MANAGE)
    row = (
        await session.execute(
            select(ApiKey, User.email).outerjoin(User, User.id == ApiKey.created_by)
            .where(ApiKey.org_id == scope.org_id, ApiKey.id == key_id)
            .with_for_update(of=ApiKey)
        )
    ).first()
    if row is None:
        raise NotFound("No such API key in this organization.")
    key, creator = row
    if not scope.can(Permission.API_KEYS_MANAGE_ALL):
        me = await acting_user_id(session, scope)
        if me is None or key.created_by != me:
            raise PermissionDenied("You can revoke only the API keys you created; ask an admin to revoke this one.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
        await audit.record(session, action="api_key.revoked", actor=scope.principal, org_id=scope.org_id,
                           target_kind="api_key", target_id=key.id, target_display=key.prefix, ip=ip,
                           details={"name": key.name})
    return _view(key, creator, utcnow())
