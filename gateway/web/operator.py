"""The operator console pages: every org (search, suspend, restore) and every user. 404 for everyone else."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Redirect, Template

from gateway.api.operator import Offset  # one bound for the API and the pages
from gateway.auth import client_ip, require_operator
from gateway.deps import CurrentIdentity, Sessions
from gateway.web.context import page_context
from tenants import operators
from tenants.db import unscoped_session
from tenants.errors import Conflict, InvalidInput, NotFound

__all__ = ["operator_orgs_page", "operator_restore", "operator_suspend", "operator_users_page"]

PAGE_SIZE = 50


def _back(q: str, offset: str | int, flash: str) -> Redirect:
    params = {"flash": flash} | ({"q": q} if q else {}) | ({"offset": str(offset)} if str(offset) not in {"", "0"} else {})
    return Redirect("/operator", query_params=params, status_code=303)


async def _orgs_page(
    request: Request[Any, Any, Any], identity: CurrentIdentity, sessions: Sessions, *, q: str, offset: int,
    errors: dict[str, str] | None = None, reasons: dict[str, str] | None = None, status: int = 200,
) -> Template:
    actor = operators.operator_principal(identity)
    async with unscoped_session(sessions, reason="operator console lists every org") as s:
        page = await operators.list_orgs(s, actor, q=q, limit=PAGE_SIZE, offset=offset)
    context = await page_context(request, page=page, q=q, errors=errors or {}, reasons=reasons or {},
                                 prev_offset=max(0, offset - PAGE_SIZE) if offset > 0 else None,
                                 next_offset=offset + PAGE_SIZE if offset + PAGE_SIZE < page.total else None)
    return Template(template_name="operator/orgs.html", context=context, status_code=status)


@get("/operator", guards=[require_operator], include_in_schema=False)
async def operator_orgs_page(
    request: Request[Any, Any, Any], identity: CurrentIdentity, sessions: Sessions, q: FromQuery[str] = "",
    offset: Offset = 0,
) -> Template:
    return await _orgs_page(request, identity, sessions, q=q, offset=offset)


@post("/operator/orgs/{org_id:uuid}/suspend", guards=[require_operator], include_in_schema=False)
async def operator_suspend(
    org_id: FromPath[uuid.UUID], request: Request[Any, Any, Any], data: URLEncodedBody[dict[str, str]],
    identity: CurrentIdentity, sessions: Sessions,
) -> Response[Any]:
    actor = operators.operator_principal(identity)
    q, offset = data.get("q", ""), data.get("offset", "0")
    try:
        async with unscoped_session(sessions, reason="operator suspends an org") as s:
            org = await operators.suspend_org(s, actor, org_id, reason=data.get("reason", ""), ip=client_ip(request))
    except InvalidInput as exc:
        key = str(org_id)
        return await _orgs_page(request, identity, sessions, q=q, offset=int(offset) if offset.isdigit() else 0,
                                errors={key: exc.field_errors.get("reason", exc.message)},
                                reasons={key: data.get("reason", "")}, status=422)
    except (Conflict, NotFound) as exc:
        return _back(q, offset, exc.message)
    return _back(q, offset, f"{org.slug} is suspended.")


@post("/operator/orgs/{org_id:uuid}/restore", guards=[require_operator], include_in_schema=False)
async def operator_restore(
    org_id: FromPath[uuid.UUID], request: Request[Any, Any, Any], data: URLEncodedBody[dict[str, str]],
    identity: CurrentIdentity, sessions: Sessions,
) -> Redirect:
    actor = operators.operator_principal(identity)
    q, offset = data.get("q", ""), data.get("offset", "0")
    try:
        async with unscoped_session(sessions, reason="operator restores an org") as s:
            org = await operators.restore_org(s, actor, org_id, ip=client_ip(request))
    except (Conflict, NotFound) as exc:
        return _back(q, offset, exc.message)
    return _back(q, offset, f"{org.slug} is restored.")


@get("/operator/users", guards=[require_operator], include_in_schema=False)
async def operator_users_page(
    request: Request[Any, Any, Any], identity: CurrentIdentity, sessions: Sessions, q: FromQuery[str] = "",
    offset: Offset = 0,
) -> Template:
    actor = operators.operator_principal(identity)
    async with unscoped_session(sessions, reason="operator console lists every user") as s:
        page = await operators.list_users(s, actor, q=q, limit=PAGE_SIZE, offset=offset)
    context = await page_context(request, page=page, q=q,
                                 prev_offset=max(0, offset - PAGE_SIZE) if offset > 0 else None,
                                 next_offset=offset + PAGE_SIZE if offset + PAGE_SIZE < page.total else None)
    return Template(template_name="operator/users.html", context=context)
