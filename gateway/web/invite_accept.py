"""``/invites/accept?token=...``: the page an invitation email links to (public: the person may
have no account or session yet).

It shows the org and the role, then one of: a "Join" button (signed in as the invited address),
a password form (the address has an account), a sign-up form (name + password; the address counts
as verified, since the link reached it), or why the link cannot be used. The token rides in the
form body from then on, never in another URL.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.params import QueryParameter, URLEncodedBody
from litestar.response import Redirect, Template

from gateway.auth import authenticate, client_ip, set_session_cookie
from gateway.auth.identity import session_policy
from gateway.deps import AppSettings, Runtime, Sessions
from gateway.web.context import page_context
from tenants import accounts, invites
from tenants.credentials import create_web_session
from tenants.db import unscoped_session
from tenants.errors import Conflict, DomainError, InvalidInput, NotFound, RateLimited, Unauthenticated

__all__ = ["accept_invite_page", "accept_invite_submit"]

_PUBLIC = {"public": "invitation links are opened before the person has a session or even an account"}
_REASON = "invite acceptance: the token names the org"
_STATUS = {InvalidInput: 422, Conflict: 409, NotFound: 404, RateLimited: 429}


class AcceptForm(msgspec.Struct):
    token: str = ""
    action: str = ""  # join | login | signup
    name: str = ""
    password: str = ""


def _status(exc: DomainError) -> int:
    return next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 400)


async def _render(
    request: Request[Any, Any, Any], sessions: Sessions, token: str, *, status: int = 200,
    errors: dict[str, str] | None = None, error: str = "", name: str = "",
) -> Template:
    """The page for ``token`` as it stands now (a failed attempt may have used or expired it meanwhile)."""
    identity = await authenticate(request)
    preview: invites.InvitePreview | None = None
    problem = ""
    try:
        async with unscoped_session(sessions, reason=_REASON) as s:
            preview = await invites.preview_invite(s, token)
    except (NotFound, Conflict) as exc:
        problem, status = exc.message, (status if status >= 400 else (404 if isinstance(exc, NotFound) else 410))
    mode = ""
    if preview is not None:
        if identity is not None and identity.kind == "user":
            mode = "join" if identity.email == preview.email else "other_user"
        elif preview.account_exists:
            mode = "login" if preview.account_has_password else "sso_only"
        else:
            mode = "signup"
    context = await page_context(request, invite=preview, mode=mode, problem=problem, token=token,
                                 errors=errors or {}, error=error, values={"name": name})
    return Template(template_name="admin/invite_accept.html", context=context, status_code=status,
                    headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@get("/invites/accept", opt=_PUBLIC, include_in_schema=False)
async def accept_invite_page(
    request: Request[Any, Any, Any], sessions: Sessions, token: Annotated[str, QueryParameter()] = ""
) -> Template:
    return await _render(request, sessions, token)


async def _login_and_join(
    request: Request[Any, Any, Any], runtime: Runtime, form: AcceptForm, ip: str | None
) -> tuple[invites.AcceptedInvite, str | None]:
    """Sign in as the invited address through the login page's own path (limits, lockout, audit)."""
    sessions = runtime.sessions
    async with unscoped_session(sessions, reason=_REASON) as s:
        email = (await invites.preview_invite(s, form.token)).email
        login = await accounts.login(
            s, email=email, password=form.password, policy=session_policy(runtime), ip=ip,
            user_agent=request.headers.get("user-agent"), public_url=runtime.settings.public_url,
        )
        if login.error is None:
            assert login.user_id is not None
            return await invites.accept_invite(s, form.token, user_id=login.user_id, ip=ip, via="login"), login.token
    # raised after the commit: failed attempts and lockouts are kept
    if isinstance(login.error, Unauthenticated):
        raise InvalidInput(login.error.message, field_errors={"password": "Wrong password."})
    raise login.error


async def _signup_and_join(
    request: Request[Any, Any, Any], runtime: Runtime, form: AcceptForm, ip: str | None
) -> tuple[invites.AcceptedInvite, str | None]:
    async with unscoped_session(runtime.sessions, reason=_REASON) as s:
        done, user = await invites.accept_invite_with_signup(s, form.token, name=form.name, password=form.password,
                                                             ip=ip)
        cookie = await create_web_session(s, user, policy=session_policy(runtime), ip=ip,
                                          user_agent=request.headers.get("user-agent"), active_org_id=done.org_id)
    return done, cookie


@post("/invites/accept", opt=_PUBLIC, include_in_schema=False)
async def accept_invite_submit(
    data: URLEncodedBody[AcceptForm], request: Request[Any, Any, Any], sessions: Sessions, runtime: Runtime,
    settings: AppSettings,
) -> Response[Any]:
    identity = await authenticate(request)
    ip = client_ip(request)
    cookie: str | None = None
    try:
        if identity is not None and identity.kind == "user":
            assert identity.user_id is not None
            async with unscoped_session(sessions, reason=_REASON) as s:
                done = await invites.accept_invite(s, data.token, user_id=identity.user_id, ip=ip)
        elif data.action == "login":
            done, cookie = await _login_and_join(request, runtime, data, ip)
        elif data.action == "signup":
            done, cookie = await _signup_and_join(request, runtime, data, ip)
        else:
            raise InvalidInput("Sign in or create your account to accept the invitation.")
    except (InvalidInput, Conflict, NotFound, RateLimited) as exc:
        errors = exc.field_errors if isinstance(exc, InvalidInput) else {}
        return await _render(request, sessions, data.token, status=_status(exc), errors=errors,
                             error="" if errors else exc.message, name=data.name)
    flash = f"Welcome to {done.org_name}: you joined as {done.role}."
    response = Redirect(path=f"/orgs/{done.org_slug}?{urlencode({'flash': flash})}", status_code=303)
    if cookie is not None:
        set_session_cookie(response, cookie, settings)
    return response
