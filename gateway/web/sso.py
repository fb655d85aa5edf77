"""SSO pages: the org's settings form, and signing in through the org's identity provider.

Sign-in routes are public (``opt={"public": ...}``): they run before a session exists, and take the
org only from the ``{org}`` path parameter. The OIDC state rides in a sealed cookie scoped to
``/orgs/{org}/sso/``; SameSite=Lax still sends it on the IdP's top-level redirect back to us.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter, URLEncodedBody
from litestar.response import Redirect, Template

from gateway.auth import authenticate, client_ip, require, set_session_cookie
from gateway.auth.identity import session_policy
from gateway.deps import AppSettings, CurrentIdentity, Runtime, Sessions, Tenant
from gateway.web.context import page_context
from tenants import sso, sso_login
from tenants.db import tenant_session
from tenants.errors import InvalidInput
from tenants.permissions import Permission
from tenants.scope import TenantScope
from tenants.security import tokens_equal
from tenants.settings import Settings

__all__ = ["sso_callback", "sso_delete_page", "sso_login_page", "sso_login_start", "sso_save_page",
           "sso_settings_page"]

_PUBLIC = {"public": "SSO sign-in starts before a session exists"}
_FORM_FIELDS = ("issuer", "client_id", "allowed_domains", "default_role")


def _state_cookie(settings: Settings) -> str:
    return "__Secure-mc_sso" if settings.https else "mc_sso"


def _state_cookie_path(slug: str) -> str:
    return f"/orgs/{slug}/sso/"


def _safe_next(raw: str | None, slug: str) -> str:
    """Only a path on this site: never another host (open redirect)."""
    if raw and raw.startswith("/") and not raw.startswith("//") and "\\" not in raw and len(raw) <= 500:
        return raw
    return f"/orgs/{slug}"


# --- settings -----------------------------------------------------------------------------------


async def _settings_page(
    request: Request[Any, Any, Any], tenant: Tenant, sessions: Sessions, settings: Settings, *,
    values: dict[str, Any] | None = None, errors: dict[str, str] | None = None, message: str = "",
    status: int = 200,
) -> Template:
    async with tenant_session(sessions, tenant) as s:
        cfg = await sso.find_config(s, tenant)
    if values is None:
        values = {
            "issuer": cfg.issuer if cfg else "",
            "client_id": cfg.client_id if cfg else "",
            "allowed_domains": ", ".join(cfg.allowed_domains) if cfg else "",
            "default_role": cfg.default_role if cfg else "member",
            "sso_required": cfg.sso_required if cfg else False,
            "enabled": cfg.enabled if cfg else True,
        }
    context = await page_context(
        request, tenant=tenant, cfg=cfg, values=values, errors=errors or {}, message=message,
        roles=sso.SSO_ROLES, can_manage=tenant.can(Permission.SSO_MANAGE),
        redirect_uri=sso.callback_url(settings.public_url, tenant.org_slug),
        login_url=sso.login_url(settings.public_url, tenant.org_slug),
    )
    return Template(template_name="sso/settings.html", context=context, status_code=status)


@get("/orgs/{org:str}/sso", guards=[require(Permission.SSO_READ)], include_in_schema=False)
async def sso_settings_page(
    org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant, sessions: Sessions, settings: AppSettings
) -> Template:
    return await _settings_page(request, tenant, sessions, settings)


@post("/orgs/{org:str}/sso", guards=[require(Permission.SSO_MANAGE)], include_in_schema=False)
async def sso_save_page(
    org: FromPath[str], request: Request[Any, Any, Any], data: URLEncodedBody[dict[str, str]], tenant: Tenant,
    sessions: Sessions, settings: AppSettings, identity: CurrentIdentity,
) -> Response[Any]:
    values: dict[str, Any] = {k: str(data.get(k, "")).strip() for k in _FORM_FIELDS}
    values["sso_required"] = "sso_required" in data
    values["enabled"] = "enabled" in data
    form = sso.SsoSettings(
        issuer=values["issuer"], client_id=values["client_id"], client_secret=data.get("client_secret") or None,
        allowed_domains=sso.parse_domains(values["allowed_domains"]), default_role=values["default_role"],
        sso_required=values["sso_required"], enabled=values["enabled"],
    )
    try:
        async with tenant_session(sessions, tenant) as s:
            await sso.save_config(
                s, tenant, form, box=sso.client_secret_box(settings.secret_key),
                signed_in_via_sso=identity.auth_method == "sso" and identity.sso_org_id == tenant.org_id,
                allow_http_loopback=not settings.is_production, ip=client_ip(request),
            )
    except InvalidInput as exc:
        return await _settings_page(request, tenant, sessions, settings, values=values, errors=exc.field_errors,
                                    message=exc.message, status=422)
    return Redirect(f"/orgs/{tenant.org_slug}/sso", query_params={"flash": "Single sign-on settings saved."},
                    status_code=303)


@post("/orgs/{org:str}/sso/delete", guards=[require(Permission.SSO_MANAGE)], include_in_schema=False)
async def sso_delete_page(
    org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant, sessions: Sessions
) -> Redirect:
    async with tenant_session(sessions, tenant) as s:
        await sso.delete_config(s, tenant, ip=client_ip(request))
    return Redirect(f"/orgs/{tenant.org_slug}/sso", query_params={"flash": "Single sign-on turned off."},
                    status_code=303)


# --- signing in ---------------------------------------------------------------------------------


def _failed(org: sso_login.SsoOrg, exc: sso_login.SsoLoginError, context: dict[str, Any],
            settings: Settings) -> Template:
    status = 503 if exc.reason == "idp_unreachable" else 403
    context.update(sso_org=org, message=exc.message)
    resp = Template(template_name="sso/failed.html", context=context, status_code=status)
    resp.delete_cookie(_state_cookie(settings), path=_state_cookie_path(org.slug))
    return resp


@get("/orgs/{org:str}/sso/login", opt=_PUBLIC, include_in_schema=False)
async def sso_login_page(
    org: FromPath[str], request: Request[Any, Any, Any], sessions: Sessions,
    next_: Annotated[str | None, QueryParameter(name="next")] = None,
) -> Template:
    """A page, not an instant redirect: a person sent here by "SSO required" sees why first."""
    sso_org = await sso_login.find_org_for_sign_in(sessions, org)
    async with tenant_session(sessions, sso_org.scope) as s:
        enabled = await sso_login.sso_enabled(s, sso_org.scope)
    context = await page_context(request, sso_org=sso_org, enabled=enabled, next_path=_safe_next(next_, org))
    return Template(template_name="sso/login.html", context=context, status_code=200 if enabled else 404)


@post("/orgs/{org:str}/sso/login", opt=_PUBLIC, include_in_schema=False)
async def sso_login_start(
    org: FromPath[str], request: Request[Any, Any, Any], data: URLEncodedBody[dict[str, str]], sessions: Sessions,
    settings: AppSettings,
) -> Response[Any]:
    sso_org = await sso_login.find_org_for_sign_in(sessions, org)
    try:
        async with tenant_session(sessions, sso_org.scope) as s:
            login = await sso_login.login_settings(s, sso_org.scope, sso.client_secret_box(settings.secret_key))
        url, cookie = await sso_login.begin_login(
            sso_org, login, redirect_uri=sso.callback_url(settings.public_url, org),
            next_path=_safe_next(data.get("next"), org), box=sso.login_state_box(settings.secret_key),
        )
    except sso_login.SsoLoginError as exc:
        await _record_failure(sessions, sso_org.scope, exc, request)
        return _failed(sso_org, exc, await page_context(request), settings)
    resp = Redirect(url, status_code=303)
    resp.set_cookie(_state_cookie(settings), cookie, max_age=sso_login.LOGIN_STATE_TTL_SECONDS,
                    path=_state_cookie_path(org), secure=settings.https, httponly=True, samesite="lax")
    return resp


async def _record_failure(sessions: Sessions, scope: TenantScope, exc: sso_login.SsoLoginError,
                          request: Request[Any, Any, Any]) -> None:
    async with tenant_session(sessions, scope) as s:
        await sso_login.record_login_failure(s, scope, reason=exc.reason, email=exc.email, ip=client_ip(request))


@get("/orgs/{org:str}/sso/callback", opt=_PUBLIC, include_in_schema=False)
async def sso_callback(
    org: FromPath[str], request: Request[Any, Any, Any], sessions: Sessions, settings: AppSettings,
    runtime: Runtime, code: FromQuery[str | None] = None,
    state_: Annotated[str | None, QueryParameter(name="state")] = None,  # "state" is reserved by Litestar
    error: FromQuery[str | None] = None,
) -> Response[Any]:
    sso_org = await sso_login.find_org_for_sign_in(sessions, org)
    box = sso.login_state_box(settings.secret_key)
    login = sso_login.LoginState.open(box, request.cookies.get(_state_cookie(settings)))
    scope = sso_org.scope
    try:
        if login is None or login.org_id != str(sso_org.id) or not state_ or not tokens_equal(login.state, state_):
            raise sso_login.SsoLoginError(
                "state_mismatch", "This sign-in expired or was started in another browser. Please start again."
            )
        if error or not code:
            shown = "".join(c for c in (error or "no code") if c.isalnum() or c in "_ ")[:64]
            raise sso_login.SsoLoginError("idp_refused", f"Your identity provider did not sign you in ({shown}).")
        async with tenant_session(sessions, scope) as s:
            conf = await sso_login.login_settings(s, scope, sso.client_secret_box(settings.secret_key))
        person = await sso_login.verify_callback(
            sso_org, conf, login=login, code=code, redirect_uri=sso.callback_url(settings.public_url, org)
        )
        previous = await authenticate(request)
        async with tenant_session(sessions, scope) as s:
            signed_in = await sso_login.sign_in(
                s, scope, person, default_role=conf.default_role, policy=session_policy(runtime),
                ip=client_ip(request), user_agent=request.headers.get("user-agent"),
                replaces_session=previous.session_id if previous is not None else None,
            )
    except sso_login.SsoLoginError as exc:
        await _record_failure(sessions, scope, exc, request)
        return _failed(sso_org, exc, await page_context(request), settings)
    resp = Redirect(login.next_path, status_code=303)
    set_session_cookie(resp, signed_in.session_token, settings)
    resp.delete_cookie(_state_cookie(settings), path=_state_cookie_path(org))
    return resp
