"""What the OpenAPI schema says about errors and credentials, derived from what each route declares.

Litestar documents a handler's success and, for a handler with input, a generic 400 whose body
(``{status_code, detail, extra}`` as ``application/json``) is not what ``gateway.errors`` sends. ``ProblemDocs``
replaces that as each route is registered: from the route's guards (``guard.permission``), path parameters,
inputs, method and agent version check it documents the ``application/problem+json`` answers these imply, and
the credentials the operation takes. So a new handler is documented the day it is added. Only what no
declaration tells (a 409 from deep in a service, a rate limit) is listed by hand in ``_BY_HAND``, keyed by the
handler itself, so renaming or removing one breaks this import instead of leaving a stale line.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from litestar.constants import RESERVED_KWARGS
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, Reference, SecurityRequirement, SecurityScheme
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute

from gateway.agent_api.handlers import register as agent_register
from gateway.agent_api.handlers import require_agent_version
from gateway.agent_api.install import YAML, install_manifest
from gateway.api import audit as audit_api
from gateway.api import auth as auth_api
from gateway.api import billing as billing_api
from gateway.api import clusters as clusters_api
from gateway.api import invites as invites_api
from gateway.api import jobs as jobs_api
from gateway.api import members as members_api
from gateway.api import operator as operator_api
from gateway.api import orgs as orgs_api
from gateway.api import usage as usage_api
from gateway.auth import session_cookie_name
from gateway.errors import PROBLEM_JSON, Problem
from gateway.security import csrf_config
from tenants.settings import Settings

__all__ = ["AGENT", "API_KEY", "SESSION", "ProblemDocs", "openapi_config"]

# security scheme names
SESSION = "session"
API_KEY = "apiKey"
AGENT = "agentCredential"

_Answers = dict[int, str | ResponseSpec]  # status -> one more reason for a problem+json answer, or a whole answer

_LAST_OWNER = "the organization would be left without an owner (`last_owner`)"
_NEW_JOB: _Answers = {
    402: "an unpaid invoice is past its grace period: no new jobs until it is paid (`payment_required`)",
    403: "a governance policy refuses the job (`policy_denied`)",
}


def _by_handler(*entries: tuple[HTTPRouteHandler, _Answers]) -> dict[Callable[..., Any], _Answers]:
    """Keyed by the handler's function: each app registers its own copy of a handler, never the object itself."""
    return {handler.fn: answers for handler, answers in entries}


# The answers no declaration tells.
_BY_HAND = _by_handler(
    (auth_api.api_signup, {429: "too many sign-ups from your address or for this email; `Retry-After` says when "
                                "to try again"}),
    (auth_api.api_login, {401: "the email or the password is wrong (`bad_credentials`)",
                          429: "too many failed sign-ins: your address or the account is locked for a while; "
                               "`Retry-After` says how long"}),
    (orgs_api.create_org, {403: "your email is not verified yet (`email_unverified`)",
                           409: "no free address was found for the name"}),
    (members_api.change_member_role, {409: _LAST_OWNER}),
    (members_api.remove_member, {409: _LAST_OWNER}),
    (members_api.leave_org, {409: _LAST_OWNER}),
    (invites_api.create_invite, {409: "the person is a member already or has a pending invitation"}),
    (invites_api.revoke_invite, {409: "the invitation was accepted already"}),
    (invites_api.accept_invite, {404: "no such invitation (`invite_unknown`)",
                                 409: "the invitation was used, revoked or has expired, or you are a member "
                                      "already"}),
    (operator_api.suspend_org, {409: "the organization is suspended already"}),
    (operator_api.restore_org, {409: "the organization is not suspended"}),
    (clusters_api.create_cluster, {409: "the organization has a cluster of that name already"}),
    (clusters_api.reissue_token, {409: "the cluster is past registering (detaching or detached)"}),
    (clusters_api.rotate_credential, {409: "the cluster has no registered agent, or a rotation is under way"}),
    (clusters_api.detach_cluster, {409: "the cluster is detached already"}),
    (clusters_api.delete_cluster, {409: "the cluster is not detached yet"}),
    (jobs_api.submit, _NEW_JOB),
    (jobs_api.rerun_job, _NEW_JOB),
    (jobs_api.cancel, {403: "only the job's submitter or an org admin may cancel it",
                       409: "the job finished already"}),
    (jobs_api.list_jobs, {422: "an unknown state or page anchor"}),
    (jobs_api.logs, {422: "`tail` is out of range"}),
    (billing_api.list_invoices, {422: "an unknown invoice status"}),
    (usage_api.usage_json, {422: "the period is not valid"}),
    (usage_api.usage_csv, {422: "the period is not valid"}),
    (audit_api.list_audit_events, {422: "the filters are not valid"}),
    # `kubectl apply -f URL` prints the body as it is: this handler's refusal is a YAML comment, not a problem.
    (install_manifest, {404: ResponseSpec(str, media_type=YAML, generate_examples=False,
                                          description="The token is unknown, used, replaced or expired: a YAML "
                                                      "comment says what to do.")}),
)


def openapi_config(settings: Settings) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Metacloud API",
        version="1.0.0",
        path="/schema",
        render_plugins=[SwaggerRenderPlugin()],
        components=Components(security_schemes=_security_schemes(settings)),
    )


def _security_schemes(settings: Settings) -> dict[str, SecurityScheme | Reference]:
    csrf = csrf_config(settings)
    return {
        SESSION: SecurityScheme(
            type="apiKey", name=session_cookie_name(settings), security_scheme_in="cookie",
            description=f"A signed-in person's session, set by `POST /api/v1/auth/login`. Writes (every method but "
                        f"{', '.join(sorted(csrf.safe_methods))}) sent with it must also carry the CSRF token: "
                        f"the value of the `{csrf.cookie_name}` cookie (set on any safe request) in the "
                        f"`{csrf.header_name}` header."),
        API_KEY: SecurityScheme(
            type="http", scheme="bearer", bearer_format="mc_<prefix>_<secret>",
            description="An organization's API key, as `Authorization: Bearer mc_...`. It acts for its org with its "
                        "role; the endpoints for signed-in people refuse it. Requests with it (and no session "
                        "cookie) need no CSRF token."),
        AGENT: SecurityScheme(
            type="http", scheme="bearer", bearer_format="mca_<prefix>_<secret>",
            description="The cluster agent's credential, as `Authorization: Bearer mca_...`: what "
                        "`POST /agent/v1/register` answers for a registration token."),
    }


class ProblemDocs(ReceiveRoutePlugin):
    """Documents each operation's problem+json answers and credentials as its route is registered.

    It sets ``responses`` and ``security`` on the handler the app registered (Litestar copies handlers per
    app); what a handler declares itself wins. A route is received again when another method joins its path,
    which yields the same values.
    """

    def __init__(self, settings: Settings) -> None:
        csrf = csrf_config(settings)
        exclude = [csrf.exclude] if isinstance(csrf.exclude, str) else list(csrf.exclude or [])
        self._csrf_exempt = re.compile("|".join(exclude)) if exclude else None
        self._safe_methods = set(csrf.safe_methods)

    def receive_route(self, route: BaseRoute) -> None:
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            if handler.resolve_include_in_schema():
                handler.responses = {**self._answers(route, handler), **(handler.responses or {})}
                if handler.security is None:
                    handler.security = _security(handler)

    def _answers(self, route: HTTPRoute, handler: HTTPRouteHandler) -> dict[int, ResponseSpec]:
        reasons = _reasons_from_declarations(route, handler)
        if self._csrf_checked(route, handler):
            reasons[403].append(f"a write sent with the session cookie (or no credential) lacks the CSRF header "
                                f"(see the `{SESSION}` security scheme)")
        specs: dict[int, ResponseSpec] = {}
        for status, answer in _BY_HAND.get(handler.fn, {}).items():
            if isinstance(answer, ResponseSpec):
                specs[status] = answer
            else:
                reasons[status].append(answer)
        return {**{status: _problem(why) for status, why in sorted(reasons.items())}, **specs}

    def _csrf_checked(self, route: HTTPRoute, handler: HTTPRouteHandler) -> bool:
        exempt = self._csrf_exempt is not None and self._csrf_exempt.search(route.path) is not None
        return not exempt and bool(handler.http_methods - self._safe_methods)


def _reasons_from_declarations(route: HTTPRoute, handler: HTTPRouteHandler) -> defaultdict[int, list[str]]:
    reasons: defaultdict[int, list[str]] = defaultdict(list)
    guard = _guard(handler)
    if _has_input(route, handler):
        reasons[400].append("a parameter or the body does not parse, or holds text that cannot be stored "
                            "(`invalid_request`; `errors` names each field)")
    if "data" in handler.parsed_fn_signature.parameters:
        reasons[422].append("a value of the body breaks a rule (`invalid_input`; `errors` names the fields)")
    if guard is not None:
        reasons[401].append("no valid credential: sign in, or send `Authorization: Bearer mc_...`")
    if guard == "user":
        reasons[403].append("an API key called an endpoint for signed-in people")
    elif guard == "operator":
        reasons[404].append("you are not a platform operator (the operator API does not show itself)")
    elif guard is not None:
        reasons[403].append(f"your role lacks the `{guard}` permission, or the organization is suspended or "
                            "requires single sign-on")
        reasons[404].append("the organization does not exist, or you are not a member of it")
    if handler.before_request is require_agent_version:
        reasons[401].append("the agent's credential or registration token is missing, unknown, expired or revoked")
        reasons[426].append("the `X-Metacloud-Agent-Version` header is missing or older than the server supports "
                            "(`agent_upgrade_required`)")
    for name, param in route.path_parameters.items():
        if param.type is uuid.UUID:
            reasons[404].append(f"no such {name.removesuffix('_id').replace('_', ' ')} (or `{name}` is not a UUID)")
    return reasons


def _guard(handler: HTTPRouteHandler) -> str | None:
    """What the route's ``gateway.auth`` guard requires: a permission, ``user`` or ``operator``; None when public."""
    for guard in handler.resolve_guards():
        permission = getattr(guard, "permission", None)
        if permission is not None:
            return str(permission)
    return None


def _has_input(route: HTTPRoute, handler: HTTPRouteHandler) -> bool:
    """Whether Litestar parses anything of the request for this handler: path, query, header or cookie
    parameters, or the body (injected dependencies and raw request objects are not parsed)."""
    injected = (RESERVED_KWARGS - {"data"}) | set(handler.resolve_dependencies())
    return bool(route.path_parameters) or any(name not in injected for name in handler.parsed_fn_signature.parameters)


def _security(handler: HTTPRouteHandler) -> list[SecurityRequirement] | None:
    guard = _guard(handler)
    if guard in ("user", "operator"):
        return [{SESSION: []}]
    if guard is not None:
        return [{SESSION: []}, {API_KEY: []}]
    if handler.before_request is require_agent_version and handler.fn is not agent_register.fn:
        return [{AGENT: []}]
    return None  # public: registration carries its token in the body, the install link in the path


def _problem(reasons: list[str]) -> ResponseSpec:
    text = "; or ".join(reasons)
    return ResponseSpec(Problem, media_type=PROBLEM_JSON, generate_examples=False,
                        description=text[:1].upper() + text[1:] + ".")
