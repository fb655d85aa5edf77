"""One table from errors to HTTP: every failure leaves as ``application/problem+json``.

The body says what went wrong in words a person can act on, carries the request id, and never a
stack trace; the stack trace goes to the log, tied to the same request id and trace id.
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict
from urllib.parse import quote, urlencode

import asyncpg
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.observability import current_request_id, current_trace_id
from tenants.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    Unauthenticated,
    UpstreamUnavailable,
)

__all__ = ["PROBLEM_JSON", "FieldProblem", "Problem", "exception_handlers", "problem"]

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"

# domain error -> (status, title)
STATUS: dict[type[DomainError], tuple[int, str]] = {
    NotFound: (404, "Not found"),
    Conflict: (409, "Conflict"),
    PermissionDenied: (403, "Forbidden"),
    Unauthenticated: (401, "Authentication required"),
    InvalidInput: (422, "Invalid input"),
    QuotaExceeded: (402, "Plan limit reached"),
    RateLimited: (429, "Too many requests"),
    UpstreamUnavailable: (503, "Temporarily unavailable"),
}


class FieldProblem(TypedDict):
    field: str
    message: str


class _ProblemCore(TypedDict):
    type: str
    title: str
    status: int
    detail: str
    code: str


# Optional members by ``total=False``: with postponed annotations, Python 3.11 does not see ``NotRequired``.
class Problem(_ProblemCore, total=False):
    """The body ``problem()`` sends (RFC 9457 problem details), as the OpenAPI schema documents it.

    ``code`` is the stable name to branch on (``type`` is its URL); ``errors`` lists the fields of an invalid
    request; ``trace_id`` comes with a 500. A domain error may add members of its own (``org``,
    ``min_agent_version``), so clients must accept members not listed here.
    """

    request_id: str
    errors: list[FieldProblem]
    trace_id: str


def _page_or_none(request: Request[Any, Any, Any] | None, status: int, title: str, detail: str) -> Response[Any] | None:
    """Browsers asking for pages get a page (or the login form), API clients get problem+json."""
    from gateway.web.context import is_page_request

    if request is None or not is_page_request(request):
        return None
    if status == 401:
        return Redirect(path="/login?" + urlencode({"next": request.url.path}))
    return Template(
        template_name="error.html",
        context={"title": title, "detail": detail, "request_id": current_request_id(), "user": None, "org": None},
        status_code=status,
    )


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    code: str,
    headers: dict[str, str] | None = None,
    request: Request[Any, Any, Any] | None = None,
    **extra: Any,
) -> Response[Any]:
    page = _page_or_none(request, status, title, detail)
    if page is not None:
        return page
    body: dict[str, Any] = {
        "type": f"https://docs.metacloud.dev/errors/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": current_request_id() or None,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(
        {k: v for k, v in body.items() if v is not None},
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _status_for(exc: DomainError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 400, "Bad request"


def _sso_required_redirect(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any] | None:
    """A browser whose session is not from the org's IdP is sent to the org's SSO sign-in page."""
    from gateway.web.context import is_page_request

    org = exc.extra.get("org")
    if exc.code != "sso_required" or not isinstance(org, str) or not is_page_request(request):
        return None
    return Redirect(path=f"/orgs/{quote(org, safe='')}/sso/login?" + urlencode({"next": request.url.path}))


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    redirect = _sso_required_redirect(request, exc)
    if redirect is not None:
        return redirect
    status, title = _status_for(exc)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = dict(exc.extra)
    if isinstance(exc, RateLimited | UpstreamUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, InvalidInput) and exc.field_errors:
        extra["errors"] = [{"field": k, "message": v} for k, v in exc.field_errors.items()]
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return problem(status, title, exc.message, code=exc.code, headers=headers or None, request=request, **extra)


def validation_handler(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append({"field": item.get("key") or item.get("source") or "", "message": item.get("message", "")})
    detail = "The request is not valid: " + "; ".join(
        f"{e['field']}: {e['message']}" if e["field"] else str(e["message"]) for e in errors
    ) if errors else (exc.detail or "The request is not valid.")
    return problem(400, "Invalid request", detail, code="invalid_request", errors=errors or None)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, NotAuthorizedException):
        return problem(401, "Authentication required", exc.detail, code="unauthenticated",
                       headers={"WWW-Authenticate": "Bearer"}, request=request)
    title = {404: "Not found", 405: "Method not allowed", 403: "Forbidden", 413: "Request too large"}.get(
        status, "Request failed"
    )
    code = {404: "not_found", 405: "method_not_allowed", 403: "forbidden", 413: "too_large"}.get(status, "http_error")
    headers = dict(exc.headers or {})
    return problem(status, title, exc.detail, code=code, headers=headers or None, request=request)


_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout, ConnectionError, OSError,
                asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError)


def _is_unavailable(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DBAPIError) and cur.connection_invalidated:
            return True
        if isinstance(cur, _UNAVAILABLE):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


# Text PostgreSQL cannot store (a NUL character, a byte sequence that is not UTF-8, more than the column holds)
# comes from the request: the caller can fix it, so it is a 400, not a 500 (found by tests/fuzz).
_UNSTORABLE_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError,
                    asyncpg.StringDataRightTruncationError)


def _unstorable_text(exc: BaseException) -> str | None:
    """The name of the database's complaint when ``exc`` comes from text it cannot store, else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, _UNSTORABLE_TEXT):
            return type(cur).__name__
        cur = cur.__cause__ or cur.__context__
    return None


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    bad_text = _unstorable_text(exc)
    if bad_text is not None:
        # Without exc_info: the statement's parameters in the traceback may hold what the caller sent.
        log.warning("the database refused text from the request",
                    extra={"path": request.url.path, "error": bad_text})
        return problem(400, "Invalid request",
                       "The request holds text that cannot be stored: a NUL character (\\u0000), bytes that are not "
                       "UTF-8, or a value longer than the field allows. Remove it and retry.",
                       code="invalid_request", request=request)
    if _is_unavailable(exc):
        log.warning("dependency unavailable", exc_info=exc, extra={"path": request.url.path})
        return problem(503, "Temporarily unavailable",
                       "A service this request needs is not reachable right now. Please retry shortly.",
                       code="upstream_unavailable", headers={"Retry-After": "5"}, request=request)
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path, "method": request.method})
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "Internal error",
        "Something went wrong on our side. It has been logged; quote the request id if you contact support.",
        code="internal",
        request=request,
        trace_id=current_trace_id() or None,
    )


exception_handlers: dict[type[Exception] | int, Any] = {
    DomainError: domain_error_handler,
    ValidationException: validation_handler,
    HTTPException: http_exception_handler,
    Exception: internal_error_handler,
}
