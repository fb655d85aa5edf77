"""The session cookie: HttpOnly, SameSite=Lax, Secure and ``__Host-`` prefixed when served over HTTPS."""

from __future__ import annotations

from typing import Any

from litestar import Response

from tenants.settings import Settings

__all__ = ["clear_session_cookie", "session_cookie_name", "set_session_cookie"]


def session_cookie_name(settings: Settings) -> str:
    return "__Host-mc_session" if settings.https else "mc_session"


def set_session_cookie(response: Response[Any], token: str, settings: Settings) -> None:
    response.set_cookie(
        key=session_cookie_name(settings),
        value=token,
        path="/",
        max_age=settings.session_absolute_hours * 3600,
        httponly=True,
        secure=settings.https or settings.is_production,
        samesite="lax",
    )


def clear_session_cookie(response: Response[Any], settings: Settings) -> None:
    response.delete_cookie(key=session_cookie_name(settings), path="/")
