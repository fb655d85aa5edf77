"""Resolve (once per request) who is calling."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from litestar.connection import ASGIConnection

from gateway.auth.cookies import session_cookie_name
from gateway.runtime import GatewayRuntime
from tenants.credentials import Identity, SessionPolicy, verify_api_key, verify_web_session

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


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity | None:
    cached = connection.scope.get(_CACHE_KEY, _MISSING)  # type: ignore[call-overload]
    if cached is not _MISSING:
        return cast("Identity | None", cached)
    runtime = _runtime(connection)
    identity: Identity | None = None
    auth = connection.headers.get("authorization", "")
    if auth:
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            identity = await verify_api_key(runtime.sessions, credential.strip(), ip=client_ip(connection))
    else:
        token = connection.cookies.get(session_cookie_name(runtime.settings))
        if token:
            identity = await verify_web_session(runtime.sessions, token, policy=session_policy(runtime))
    connection.scope[_CACHE_KEY] = identity  # type: ignore[literal-required]
    return identity
