"""Resolve (once per request) who is calling."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from litestar.connection import ASGIConnection
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth.cookies import session_cookie_name
from gateway.runtime import GatewayRuntime
from tenants.credentials import Identity, SessionPolicy, verify_api_key, verify_web_session
from tenants.db import unscoped_session

__all__ = ["authenticate", "client_ip", "session_policy"]

_CACHE_KEY = "metacloud_identity"
_MISSING = object()


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    # uvicorn's proxy_headers already rewrites client from X-Forwarded-For behind a trusted proxy.
    return connection.client.host if connection.client else None


def session_policy(runtime: GatewayRuntime) -> SessionPolicy:
    s = runtime.settings
    return SessionPolicy(idle=timedelta(minutes=s.session_idle_minutes), absolute=timedelta(hours=s.session_absolute_hours))


def _runtime(connection: ASGIConnection[Any, Any, Any, Any]) -> GatewayRuntime:
    runtime: GatewayRuntime = connection.app.state["runtime"]
    return runtime


def _credential(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[str, str] | None:
    """("api_key", key) from ``Authorization: Bearer``, ("session", token) from the cookie, or None."""
    auth = connection.headers.get("authorization", "")
    if auth:
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            return "api_key", credential.strip()
        return None
    token = connection.cookies.get(session_cookie_name(_runtime(connection).settings))
    return ("session", token) if token else None


async def authenticate(
    connection: ASGIConnection[Any, Any, Any, Any], *, session: AsyncSession | None = None
) -> Identity | None:
    """Who is calling (cached on the request). ``session``: an unscoped transaction to look it up in,
    so that the guard checks the credential and resolves the org in one transaction."""
    cached = connection.scope.get(_CACHE_KEY, _MISSING)  # type: ignore[call-overload]
    if cached is not _MISSING:
        return cast("Identity | None", cached)
    credential = _credential(connection)
    identity: Identity | None = None
    if credential is not None:
        runtime = _runtime(connection)
        if session is None:
            async with unscoped_session(runtime.sessions, reason="who is calling precedes the tenant scope") as s:
                return await authenticate(connection, session=s)
        kind, value = credential
        if kind == "api_key":
            identity = await verify_api_key(session, value, ip=client_ip(connection))
        else:
            identity = await verify_web_session(session, value, policy=session_policy(runtime))
    connection.scope[_CACHE_KEY] = identity  # type: ignore[literal-required]
    return identity
