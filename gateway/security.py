"""Edge protections: CSRF for cookie-authenticated writes, and security headers on every response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.exceptions import PermissionDeniedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from tenants.errors import PermissionDenied
from tenants.settings import Settings

__all__ = ["CookieCsrfMiddleware", "csrf_config", "security_headers_hook"]


def csrf_config(settings: Settings) -> CSRFConfig:
    return CSRFConfig(
        secret=settings.secret_key,
        cookie_name="__Host-csrftoken" if settings.https else "csrftoken",
        cookie_secure=settings.https,
        cookie_samesite="lax",
        header_name="x-csrftoken",
        # Machine-to-machine endpoints authenticate every call with their own credential or signature.
        exclude=["/agent/", "/webhooks/"],
    )


_LITESTAR_CSRF_REFUSAL = "CSRF token verification failed"


class CookieCsrfMiddleware(CSRFMiddleware):
    """Litestar's double-submit CSRF check, skipped only for requests that carry an
    ``Authorization`` header and no session cookie: a browser never adds that header on its own,
    so such a request cannot be forged from another site."""

    def __init__(self, app: ASGIApp, config: CSRFConfig, session_cookie: str) -> None:
        super().__init__(app, config)
        self._session_cookie = session_cookie.encode()
        self._refusal = (
            f"This write needs the CSRF token: send the value of the '{config.cookie_name}' cookie (set on "
            f"any GET from this site) in the '{config.header_name}' header. Scripts should authenticate with "
            "an API key instead ('Authorization: Bearer mc_...'), which needs no CSRF token."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # type: ignore[comparison-overlap]
            headers = dict(scope["headers"])
            has_auth = b"authorization" in headers
            has_session = self._session_cookie + b"=" in headers.get(b"cookie", b"")
            if has_auth and not has_session:
                await self.app(scope, receive, send)
                return
        try:
            await super().__call__(scope, receive, send)
        except PermissionDeniedException as exc:
            if exc.detail != _LITESTAR_CSRF_REFUSAL:  # not this check's own refusal: pass it on as it is
                raise
            # Litestar's words do not say what to send; ours do.
            raise PermissionDenied(self._refusal, code="csrf_token_missing") from None


def _security_headers(hsts: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-security-policy",
         b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
         b"frame-ancestors 'none'; base-uri 'self'; form-action 'self'"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
    ]
    if hsts:
        headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    return headers


def _add_headers(message: Message, headers: list[tuple[bytes, bytes]]) -> None:
    if message["type"] == "http.response.start":
        existing = {k.lower() for k, _ in message.get("headers", [])}
        extra: list[Any] = [(k, v) for k, v in headers if k not in existing]
        message["headers"] = [*message.get("headers", []), *extra]  # type: ignore[typeddict-unknown-key]


def security_headers_hook(hsts: bool) -> Callable[[Message, Scope], Awaitable[None]]:
    """A ``before_send`` hook: unlike a middleware it also sees the responses Litestar's router makes itself
    (404 for an unknown path, 405), which never pass through the middleware stack."""
    headers = _security_headers(hsts)

    async def add_security_headers(message: Message, scope: Scope) -> None:
        if scope["type"] == "http":  # type: ignore[comparison-overlap]
            _add_headers(message, headers)

    return add_security_headers
