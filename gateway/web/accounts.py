"""Pages for accounts: landing, signup, sign-in/out, email verification, password reset, dev mailbox.

Forms post back to the same path; on a problem the form is shown again with the values typed
(never the password) and a message next to each field, with status 422 (429 when rate-limited).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode, urlsplit

from litestar import Request, Response, get, post
from litestar.params import FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from sqlalchemy import select

from gateway.api.auth import CHECK_INBOX, sign_in, sign_out
from gateway.auth import authenticate, clear_session_cookie, client_ip, require_user, set_session_cookie
from gateway.deps import CurrentIdentity, Runtime
from gateway.web.context import page_context
from tenants import accounts, orgs
from tenants.db import unscoped_session
from tenants.email import recent_messages
from tenants.errors import InvalidInput, NotFound, RateLimited, Unauthenticated
from tenants.models import WebSession

__all__ = [
    "dev_mailbox",
    "landing",
    "login_form",
    "login_submit",
    "logout_submit",
    "reset_confirm_form",
    "reset_confirm_submit",
    "reset_form",
    "reset_submit",
    "safe_next",
    "signup_form",
    "signup_submit",
    "verify",
    "verify_resend",
]

Form = URLEncodedBody[dict[str, str]]
_PAGE: dict[str, Any] = {"include_in_schema": False}
_LINK = re.compile(r"https?://[^\s<>\"]+")


def safe_next(raw: str | None) -> str:
    """Where to go after sign-in: a path on this site only (no scheme, no host, no ``//evil``)."""
    if not raw:
        return "/"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    return raw


async def _form(request: Request[Any, Any, Any], template: str, *, status: int = 200,
                values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                form_error: str | None = None, headers: dict[str, str] | None = None, **extra: Any) -> Template:
    context = await page_context(request, values=values or {}, errors=errors or {}, form_error=form_error, **extra)
    return Template(template_name=template, context=context, status_code=status, headers=headers)


def _retry_headers(exc: RateLimited) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)}


# --- landing ----------------------------------------------------------------------------------------------

@get("/", opt={"public": "the landing page; signed-in users are sent to their org"}, **_PAGE)
async def landing(request: Request[Any, Any, Any], runtime: Runtime) -> Response[Any]:
    identity = await authenticate(request)
    if identity is None or identity.kind != "user" or identity.user_id is None:
        return await _form(request, "accounts/landing.html")
    async with unscoped_session(runtime.sessions, reason="a person's memberships span orgs") as s:
        views = await orgs.memberships_of(s, identity.user_id)
        active_id = (await s.execute(select(WebSession.active_org_id)
                                     .where(WebSession.id == identity.session_id))).scalar_one_or_none()
    target = next((v for v in views if v.id == active_id), views[0] if views else None)
    return Redirect(path=f"/orgs/{target.slug}" if target else "/orgs", status_code=303)


# --- signup -----------------------------------------------------------------------------------------------

@get("/signup", opt={"public": "anyone may sign up"}, **_PAGE)
async def signup_form(request: Request[Any, Any, Any]) -> Response[Any]:
    if await authenticate(request) is not None:
        return Redirect(path="/", status_code=303)
    return await _form(request, "accounts/signup.html")


@post("/signup", opt={"public": "anyone may sign up"}, status_code=200, **_PAGE)
async def signup_submit(request: Request[Any, Any, Any], data: Form, runtime: Runtime) -> Response[Any]:
    values = {k: data.get(k, "") for k in ("email", "name", "org_name")}
    try:
        async with unscoped_session(runtime.sessions, reason="signup creates a user and a new org") as s:
            await accounts.signup(s, email=values["email"], password=data.get("password", ""), name=values["name"],
                                  org_name=values["org_name"], public_url=runtime.settings.public_url.rstrip("/"),
                                  ip=client_ip(request))
    except InvalidInput as exc:
        return await _form(request, "accounts/signup.html", status=422, values=values, errors=exc.field_errors)
    except RateLimited as exc:
        return await _form(request, "accounts/signup.html", status=429, values=values, form_error=exc.message,
                           headers=_retry_headers(exc))
    return await _form(request, "accounts/check_inbox.html", message=CHECK_INBOX, email=values["email"].strip(),
                       dev_mailbox=not runtime.settings.is_production)


# --- sign in / out ----------------------------------------------------------------------------------------

@get("/login", opt={"public": "the sign-in form"}, **_PAGE)
async def login_form(request: Request[Any, Any, Any], next: FromQuery[str | None] = None) -> Response[Any]:
    if await authenticate(request) is not None:
        return Redirect(path=safe_next(next), status_code=303)
    return await _form(request, "accounts/login.html", next=safe_next(next))


@post("/login", opt={"public": "signing in is how a browser gets a session"}, status_code=303, **_PAGE)
async def login_submit(request: Request[Any, Any, Any], data: Form, runtime: Runtime) -> Response[Any]:
    values = {"email": data.get("email", "")}
    target = safe_next(data.get("next"))
    try:
        token, _ = await sign_in(request, runtime, email=values["email"], password=data.get("password", ""))
    except Unauthenticated as exc:
        return await _form(request, "accounts/login.html", status=422, values=values, form_error=exc.message,
                           next=target)
    except RateLimited as exc:
        return await _form(request, "accounts/login.html", status=429, values=values, form_error=exc.message,
                           next=target, headers=_retry_headers(exc))
    response = Redirect(path=target, status_code=303)
    set_session_cookie(response, token, runtime.settings)
    return response


@post("/logout", opt={"public": "signing out must also work for an expired session (it clears the cookie)"},
      status_code=303, **_PAGE)
async def logout_submit(request: Request[Any, Any, Any], runtime: Runtime) -> Response[Any]:
    await sign_out(request, runtime, await authenticate(request))
    response = Redirect(path="/login?" + urlencode({"flash": "You are signed out."}), status_code=303)
    clear_session_cookie(response, runtime.settings)
    return response


# --- email verification -----------------------------------------------------------------------------------

@get("/verify", opt={"public": "the link in the verification mail; the token is the credential"}, **_PAGE)
async def verify(request: Request[Any, Any, Any], runtime: Runtime, token: FromQuery[str] = "") -> Response[Any]:
    async with unscoped_session(runtime.sessions, reason="a verification token names its user") as s:
        user = await accounts.verify_email(s, token, ip=client_ip(request)) if token else None
    return await _form(request, "accounts/verify.html", status=200 if user else 400, verified=user is not None)


@post("/verify/resend", guards=[require_user], status_code=303, **_PAGE)
async def verify_resend(request: Request[Any, Any, Any], identity: CurrentIdentity, runtime: Runtime) -> Response[Any]:
    assert identity.user_id is not None
    flash = "We sent a new link. It works for 24 hours."
    try:
        async with unscoped_session(runtime.sessions, reason="users are global, not per tenant") as s:
            await accounts.resend_verification(s, identity.user_id, public_url=runtime.settings.public_url.rstrip("/"))
    except RateLimited as exc:
        flash = exc.message
    return Redirect(path="/?" + urlencode({"flash": flash}), status_code=303)


# --- password reset ---------------------------------------------------------------------------------------

@get("/reset", opt={"public": "people who forgot their password are not signed in"}, **_PAGE)
async def reset_form(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _form(request, "accounts/reset_request.html")


@post("/reset", opt={"public": "people who forgot their password are not signed in"}, status_code=200, **_PAGE)
async def reset_submit(request: Request[Any, Any, Any], data: Form, runtime: Runtime) -> Response[Any]:
    values = {"email": data.get("email", "")}
    try:
        async with unscoped_session(runtime.sessions, reason="a reset request names a user by email") as s:
            await accounts.request_password_reset(s, email=values["email"], ip=client_ip(request),
                                                  public_url=runtime.settings.public_url.rstrip("/"))
    except InvalidInput as exc:
        return await _form(request, "accounts/reset_request.html", status=422, values=values, errors=exc.field_errors)
    except RateLimited as exc:
        return await _form(request, "accounts/reset_request.html", status=429, values=values,
                           form_error=exc.message, headers=_retry_headers(exc))
    return await _form(request, "accounts/check_inbox.html", email=values["email"].strip(),
                       message="If an account uses this email, we sent it a link to choose a new password. "
                               "The link works once, for one hour.", dev_mailbox=not runtime.settings.is_production)


@get("/reset/confirm", opt={"public": "the link in the reset mail; the token is the credential"}, **_PAGE)
async def reset_confirm_form(request: Request[Any, Any, Any], runtime: Runtime,
                             token: FromQuery[str] = "") -> Response[Any]:
    async with unscoped_session(runtime.sessions, reason="a reset token names its user") as s:
        valid = bool(token) and await accounts.reset_token_valid(s, token)
    return await _form(request, "accounts/reset_confirm.html", status=200 if valid else 400, token=token,
                       valid=valid)


@post("/reset/confirm", opt={"public": "the link in the reset mail; the token is the credential"},
      status_code=303, **_PAGE)
async def reset_confirm_submit(request: Request[Any, Any, Any], data: Form, runtime: Runtime) -> Response[Any]:
    token = data.get("token", "")
    identity = await authenticate(request)
    try:
        async with unscoped_session(runtime.sessions, reason="a reset token names its user") as s:
            await accounts.reset_password(s, token=token, password=data.get("password", ""), ip=client_ip(request),
                                          keep_session_id=identity.session_id if identity else None)
    except InvalidInput as exc:
        valid = "token" not in exc.field_errors
        return await _form(request, "accounts/reset_confirm.html", status=422 if valid else 400, token=token,
                           valid=valid, errors=exc.field_errors)
    return Redirect(path="/login?" + urlencode({"flash": "Your password was changed. Sign in with the new one."}),
                    status_code=303)


# --- dev mailbox ------------------------------------------------------------------------------------------

@get("/dev/mailbox", opt={"public": "dev and test only (404 in production): shows the outbox to click links"},
     **_PAGE)
async def dev_mailbox(request: Request[Any, Any, Any], runtime: Runtime) -> Response[Any]:
    if runtime.settings.is_production:
        raise NotFound("Not found.")
    async with unscoped_session(runtime.sessions, reason="the dev mailbox shows every outgoing mail") as s:
        rows = await recent_messages(s, limit=50)
    messages = [{"to": m.to_address, "subject": m.subject, "body": m.body_text, "kind": m.kind,
                 "created_at": m.created_at, "sent_at": m.sent_at, "links": _LINK.findall(m.body_text)}
                for m in rows]
    return await _form(request, "accounts/mailbox.html", messages=messages)
