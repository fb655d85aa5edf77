"""Edge protections: CSRF for cookie-authenticated writes, and security headers on every response."""

from __future__ import annotations

from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from tenants.settings import Settings

__all__ = ["CookieCsrfMiddleware", "SecurityHeadersMiddleware", "csrf_config"]


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


class CookieCsrfMiddleware(CSRFMiddleware):
    """Litestar's double-submit CSRF check, skipped only for requests that carry an
    ``Authorization`` header and no session cookie: a browser never adds that header on its own,
    so such a request cannot be forged from another site."""

    def __init__(self, app: ASGIApp, config: CSRFConfig, session_cookie: str) -> None:
        super().__init__(app, config)
        self._session_cookie = session_cookie.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # type: ignore[comparison-overlap]
            headers = dict(scope["headers"])
            has_auth = b"authorization" in headers
            has_session = self._session_cookie + b"=" in headers.get(b"cookie", b"")
            if has_auth and not has_session:
                await self.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.headers: list[tuple[bytes, bytes]] = [
            (b"content-security-policy",
             b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
             b"frame-ancestors 'none'; base-uri 'self'; form-action 'self'"),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"),
        ]
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                existing = {k.lower() for k, _ in message.get("headers", [])}
                extra: list[Any] = [(k, v) for k, v in self.headers if k not in existing]
                message["headers"] = [*message.get("headers", []), *extra]  # type: ignore[typeddict-unknown-key]
            await send(message)

        await self.app(scope, receive, send_with_headers)
