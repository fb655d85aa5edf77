"""``/api/v1/orgs/{org}/api-keys``: create (the secret is in the response once), list, revoke."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, JSONBody

from gateway.auth import client_ip, require
from gateway.deps import Sessions, Tenant
from tenants import api_keys
from tenants.db import tenant_session
from tenants.permissions import Permission

__all__ = ["ApiKeyCreate", "ApiKeyCreated", "ApiKeyRead", "create_api_key", "list_api_keys", "revoke_api_key"]

_PATH = "/api/v1/orgs/{org:str}/api-keys"
_TAGS = ["api-keys"]


class ApiKeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    role: str  # no higher than yours
    expires_in_days: int | None = None  # or
    expires_at: datetime | None = None  # a moment (UTC when no offset is given); neither = never expires


class ApiKeyRead(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    prefix: str  # "mc_" + 8 hex: the visible start of the key
    name: str
    role: str
    status: str  # active | expired | revoked
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    last_used_ip: str | None

    @classmethod
    def of(cls, v: api_keys.ApiKeyView) -> ApiKeyRead:
        return cls(id=v.id, prefix=v.prefix, name=v.name, role=v.role, status=v.status, created_at=v.created_at,
                   created_by=v.created_by, expires_at=v.expires_at, revoked_at=v.revoked_at,
                   last_used_at=v.last_used_at, last_used_ip=v.last_used_ip)


class ApiKeyCreated(ApiKeyRead, kw_only=True):
    key: str  # the whole key, shown this once: send it as "Authorization: Bearer <key>"


@get(_PATH, guards=[require(Permission.API_KEYS_READ)], tags=_TAGS, summary="The org's API keys (never a secret)")
async def list_api_keys(org: FromPath[str], tenant: Tenant, sessions: Sessions) -> list[ApiKeyRead]:
    async with tenant_session(sessions, tenant) as s:
        return [ApiKeyRead.of(v) for v in await api_keys.list_api_keys(s, tenant)]


@post(_PATH, guards=[require(Permission.API_KEYS_MANAGE)], tags=_TAGS, summary="Create an API key",
      description="The response holds the key once; only its hash is stored. The role must be within yours.",
      cache_control=CacheControlHeader(no_store=True))
async def create_api_key(
    org: FromPath[str], data: JSONBody[ApiKeyCreate], tenant: Tenant, sessions: Sessions, request: Request[Any, Any, Any]
) -> ApiKeyCreated:
    async with tenant_session(sessions, tenant) as s:
        made = await api_keys.create_api_key(
            s, tenant, name=data.name, role=data.role, expires_in_days=data.expires_in_days,
            expires_at=data.expires_at, ip=client_ip(request),
        )
    v = made.key
    return ApiKeyCreated(key=made.secret, **msgspec.structs.asdict(ApiKeyRead.of(v)))


@delete(_PATH + "/{key_id:uuid}", guards=[require(Permission.API_KEYS_MANAGE)], tags=_TAGS,
        summary="Revoke an API key",
        description="It stops working at once. Your own keys need api_keys:manage; anyone's api_keys:manage_all.")
async def revoke_api_key(
    org: FromPath[str], key_id: FromPath[uuid.UUID], tenant: Tenant, sessions: Sessions,
    request: Request[Any, Any, Any],
) -> None:
    async with tenant_session(sessions, tenant) as s:
        await api_keys.revoke_api_key(s, tenant, key_id, ip=client_ip(request))
