"""``/api/v1/auth/*`` and ``/api/v1/me``: signup, sign-in (session cookie), sign-out, who am I.

The sign-in helpers here are shared with the server-rendered pages (``gateway.web.accounts``).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import JSONBody
from sqlalchemy import select

from gateway.api.orgs import OrgRead
from gateway.auth import (
    clear_session_cookie,
    client_ip,
    require_user,
    session_cookie_name,
    set_session_cookie,
)
from gateway.auth.identity import session_policy
from gateway.deps import CurrentIdentity, Runtime
from gateway.runtime import GatewayRuntime
from tenants import accounts, orgs
from tenants.credentials import Identity
from tenants.db import unscoped_session
from tenants.errors import NotFound
from tenants.models import User, WebSession

__all__ = [
    "CHECK_INBOX",
    "LoginRequest",
    "MeRead",
    "SignupAccepted",
    "SignupRequest",
    "api_login",
    "api_logout",
    "api_signup",
    "me",
    "me_view",
    "sign_in",
    "sign_out",
]

_TAGS = ["auth"]
CHECK_INBOX = "Check your inbox: we sent a link to finish signing up."


class SignupRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: str
    password: str
    name: str = ""
    org_name: str = ""  # default: "<name>'s org"


class SignupAccepted(msgspec.Struct, kw_only=True):
    status: str
    detail: str


class LoginRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: str
    password: str


class MeRead(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    email: str
    name: str
    email_verified: bool
    is_operator: bool
    active_org: str | None  # slug of the org the browser session is in
    orgs: list[OrgRead]


def _user_agent(request: Request[Any, Any, Any]) -> str | None:
    return request.headers.get("user-agent")


async def sign_in(request: Request[Any, Any, Any], runtime: GatewayRuntime, *, email: str,
                  password: str) -> tuple[str, uuid.UUID]:
    """(cookie value, user id) of a new session; raises the domain error after failures were recorded."""
    settings = runtime.settings
    async with unscoped_session(runtime.sessions, reason="sign-in looks the user up by email") as s:
        result = await accounts.login(
            s, email=email, password=password, policy=session_policy(runtime), ip=client_ip(request),
            user_agent=_user_agent(request), current_token=request.cookies.get(session_cookie_name(settings)),
            public_url=settings.public_url.rstrip("/"),
        )
    if result.error is not None:
        raise result.error
    assert result.token is not None and result.user_id is not None
    return result.token, result.user_id


async def sign_out(request: Request[Any, Any, Any], runtime: GatewayRuntime, identity: Identity | None) -> None:
    if identity is None or identity.kind != "user" or identity.session_id is None or identity.user_id is None:
        return
    async with unscoped_session(runtime.sessions, reason="sessions are global, not per tenant") as s:
        await accounts.logout(s, user_id=identity.user_id, session_id=identity.session_id, email=identity.email,
                              ip=client_ip(request))


async def me_view(runtime: GatewayRuntime, user_id: uuid.UUID, session_id: uuid.UUID | None) -> MeRead:
    async with unscoped_session(runtime.sessions, reason="a person's memberships span orgs") as s:
        user = await s.get(User, user_id)
        if user is None:
            raise NotFound("This account no longer exists.")
        views = await orgs.memberships_of(s, user_id)
        active_id = None
        if session_id is not None:
            active_id = (await s.execute(select(WebSession.active_org_id)
                                         .where(WebSession.id == session_id))).scalar_one_or_none()
    active = next((v for v in views if v.id == active_id), views[0] if views else None)
    return MeRead(id=user.id, email=user.email, name=user.name, email_verified=user.email_verified_at is not None,
                  is_operator=user.is_operator, active_org=active.slug if active else None,
                  orgs=[OrgRead.of_view(v) for v in views])


@post("/api/v1/auth/signup", tags=_TAGS, status_code=202, summary="Sign up with email and password",
      description="Always answers 202 'check your inbox' for a valid request, whether or not the email is "
                  "registered (its owner gets a mail either way). Passwords: 12+ characters, not common.",
      opt={"public": "anyone may sign up"})
async def api_signup(request: Request[Any, Any, Any], data: JSONBody[SignupRequest], runtime: Runtime) -> SignupAccepted:
    async with unscoped_session(runtime.sessions, reason="signup creates a user and a new org") as s:
        await accounts.signup(s, email=data.email, password=data.password, name=data.name, org_name=data.org_name,
                              public_url=runtime.settings.public_url.rstrip("/"), ip=client_ip(request))
    return SignupAccepted(status="check_inbox", detail=CHECK_INBOX)


@post("/api/v1/auth/login", tags=_TAGS, status_code=200, summary="Sign in; sets the session cookie",
      description="401 for a wrong email or password; 429 with Retry-After after 10 failures for an account "
                  "(it is locked for 15 minutes and its owner is mailed) or 50 from one address.",
      opt={"public": "signing in is how a caller gets a credential"})
async def api_login(request: Request[Any, Any, Any], data: JSONBody[LoginRequest], runtime: Runtime) -> Response[MeRead]:
    token, user_id = await sign_in(request, runtime, email=data.email, password=data.password)
    # a new session starts in the user's first org, which me_view picks when given no session
    response = Response(await me_view(runtime, user_id, None), status_code=200)
    set_session_cookie(response, token, runtime.settings)
    return response


@post("/api/v1/auth/logout", guards=[require_user], tags=_TAGS, status_code=204, summary="Sign out this session")
async def api_logout(request: Request[Any, Any, Any], identity: CurrentIdentity, runtime: Runtime) -> Response[None]:
    await sign_out(request, runtime, identity)
    response: Response[None] = Response(None, status_code=204)
    clear_session_cookie(response, runtime.settings)
    return response


@get("/api/v1/me", guards=[require_user], tags=_TAGS, summary="The signed-in user and their organizations")
async def me(identity: CurrentIdentity, runtime: Runtime) -> MeRead:
    assert identity.user_id is not None
    return await me_view(runtime, identity.user_id, identity.session_id)
