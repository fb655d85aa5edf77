"""API fuzzing with schemathesis, against the OpenAPI schema the gateway serves at /schema/openapi.json.

Every operation gets generated requests, valid and invalid ("mode: all"), from a signed-in browser (session
cookie + CSRF token; also a platform operator) and from a script (admin API key), each in its own org (the
``{org}`` path parameter is set to it, so the calls reach the handlers); and from a caller with no credential.

* Nothing answers 5xx.
* A 2xx response matches the schema: the body validates against the documented schema, in the documented
  content type.
* Every error is ``application/problem+json`` with the status in the body, a title, a detail and a code.
* Without a credential every non-public operation is refused: 401 (404 for the operator API, which hides).

And the schema says so itself: every error an operation documents is problem+json, every guarded operation
documents its 401 and names its credentials (``gateway/openapi.py`` derives both from the routes).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import schemathesis
from litestar import Litestar
from litestar.routes import HTTPRoute
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.fuzz.conftest import Caller, Case, World, load_schema, schema_app

pytestmark = pytest.mark.slow

# Operations that end the caller's own session or org would turn the rest of the run into 401/404s; they are
# covered by the anonymous run here, the route walk and the account/org tests.
ENDS_THE_CALLER = {("POST", "/api/v1/auth/logout"), ("DELETE", "/api/v1/orgs/{org}"),
                   ("POST", "/api/v1/orgs/{org}/leave")}
# /readyz?deep=true answers 503 by contract while no worker polls (none does here); see tests/gateway/test_health.py.
NOT_FUZZED = {("GET", "/readyz")}
# The install manifest is fetched by `kubectl apply -f URL`: its errors are YAML comments kubectl prints as they
# are, on purpose (gateway/agent_api/install.py).
PLAIN_TEXT_ERRORS = {("GET", "/agent/v1/install/{filename}")}
# Takes no input, has no guard and asks nothing of a service: it answers 200 or not at all.
NO_ERRORS = {("GET", "/healthz")}
PROBLEM_JSON = "application/problem+json"
_PARAM = re.compile(r"\{(\w+):(\w+)\}")

schema = load_schema()
anonymous_schema = schema.exclude(lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in NOT_FUZZED)
signed_in_schema = anonymous_schema.exclude(
    lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in ENDS_THE_CALLER)


def _key(case: Case) -> tuple[str, str]:
    return case.method.upper(), case.path


def _routes(app: Litestar) -> tuple[set[tuple[str, str]], dict[str, set[str]]]:
    """(METHOD, OpenAPI path) of the routes that declare ``opt={"public": ...}``, and each path's uuid parameters."""
    public: set[tuple[str, str]] = set()
    uuids: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            path = _PARAM.sub(r"{\1}", route.path)
            uuids[path] = {name for name, kind in _PARAM.findall(route.path) if kind == "uuid"}
            for handler in route.route_handlers:
                if "public" in (handler.opt or {}):
                    public |= {(m, path) for m in handler.http_methods}
    return public, uuids


PUBLIC, UUID_PARAMS = _routes(schema_app())


def _malformed_id(case: Case) -> bool:
    """A path whose id is not a UUID matches no route: the router answers 404 before any guard runs."""
    for name in UUID_PARAMS.get(case.path, set()):
        try:
            uuid.UUID(str((case.path_parameters or {}).get(name)))
        except ValueError:
            return True
    return False


def _label(case: Case, response: schemathesis.Response) -> str:
    return f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"


def _header(response: schemathesis.Response, name: str) -> str:
    values = response.headers.get(name.lower()) or [""]  # schemathesis keeps every value of a header
    return values[0]


def check_response(case: Case, response: schemathesis.Response) -> None:
    assert response.status_code < 500, _label(case, response)
    if 200 <= response.status_code < 300:
        case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
    elif response.status_code >= 400 and _key(case) in PLAIN_TEXT_ERRORS:
        assert response.text.strip().startswith("#"), _label(case, response)
    elif response.status_code >= 400:
        assert _header(response, "content-type").startswith("application/problem+json"), _label(case, response)
        body = response.json()
        assert body["status"] == response.status_code, _label(case, response)
        assert body.get("title") and body.get("detail") and body.get("code"), _label(case, response)


@pytest.fixture(scope="module", params=["session", "api_key"])
def caller(request: pytest.FixtureRequest, world: World) -> Caller:
    chosen: Caller = getattr(world, request.param)
    return chosen


@signed_in_schema.parametrize()
def test_signed_in_callers_get_no_5xx_and_responses_that_match_the_schema(
    case: Case, caller: Caller, fuzz_app: Litestar
) -> None:
    if "org" in (case.path_parameters or {}):
        case.path_parameters["org"] = caller.org
    response = case.call(app=fuzz_app, headers=caller.headers, cookies=caller.cookies)
    check_response(case, response)


@pytest.fixture(scope="module", params=["anonymous"])  # a parameter, so each operation's test id names it
def nobody(request: pytest.FixtureRequest, world: World) -> Caller:
    # The CSRF pair any visitor has, and no session: what answers is the guard, not the CSRF check.
    return Caller(request.param, world.session.org, {"x-csrftoken": world.csrf}, {"csrftoken": world.csrf})


@anonymous_schema.parametrize()
def test_calls_without_a_credential_are_refused(case: Case, nobody: Caller, fuzz_app: Litestar) -> None:
    if "org" in (case.path_parameters or {}):
        case.path_parameters["org"] = nobody.org
    response = case.call(app=fuzz_app, headers=nobody.headers, cookies=nobody.cookies)
    check_response(case, response)
    if _key(case) in PUBLIC:
        return
    refused = {401, 400}  # 400: the framework turned a malformed body or parameter away before the guard
    if case.path.startswith("/api/v1/operator/") or _malformed_id(case):
        refused.add(404)  # the operator API may hide itself; a malformed id matches no route at all
    assert response.status_code in refused, _label(case, response)


# --- what the schema says about errors and credentials -------------------------------------------------------


def test_the_schema_documents_the_errors_the_api_answers() -> None:
    undocumented: list[str] = []
    not_problems: list[str] = []
    no_401: list[str] = []
    for method, path, op in _operations():
        errors = {code: r for code, r in op.get("responses", {}).items() if code.startswith("4")}
        if (method, path) not in NO_ERRORS and not any(PROBLEM_JSON in (r.get("content") or {})
                                                       for r in errors.values()):
            undocumented.append(f"{method} {path}")
        if (method, path) not in PLAIN_TEXT_ERRORS:
            not_problems += [f"{method} {path} {code}" for code, r in errors.items()
                             if set(r.get("content") or {}) != {PROBLEM_JSON}]
        if (method, path) not in PUBLIC and "401" not in errors:
            no_401.append(f"{method} {path}")
    assert undocumented == []
    assert not_problems == []  # e.g. Litestar's own 400 ({status_code, detail, extra} as application/json)
    assert no_401 == []


def test_the_schema_declares_how_to_authenticate() -> None:
    raw = schema.raw_schema
    schemes = raw.get("components", {}).get("securitySchemes")
    assert schemes
    guarded = [op for method, path, op in _operations() if (method, path) not in PUBLIC]
    assert all(op.get("security") or raw.get("security") for op in guarded)
    named = {name for _, _, op in _operations() for requirement in op.get("security", []) for name in requirement}
    assert named <= set(schemes)


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation object) of every operation in the served schema."""
    return [(method.upper(), path, op) for path, item in schema.raw_schema["paths"].items()
            for method, op in item.items() if method in ("get", "put", "post", "patch", "delete")]
