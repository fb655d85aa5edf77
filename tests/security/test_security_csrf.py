"""CSRF: every cookie-authenticated write is refused without the token.

Routes are enumerated from the app itself (as the lead's route walk does), so a write route added tomorrow is
covered the day it lands. Only the machine endpoints (``/agent/``, ``/webhooks/``) are exempt, and those must
not accept the session cookie as a credential at all.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from litestar import Litestar
from litestar.routes import HTTPRoute
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.security import csrf_config
from tenants.settings import Settings
from tests.factories import MadeOrg, MadeUser, make_api_key, make_org, make_user, sign_in

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


@dataclass(frozen=True)
class Write:
    method: str
    path: str

    def url(self, org: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, kind = m.group(1), m.group(2) or "str"
            if name == "org":
                return org
            return {"uuid": str(uuid.uuid4()), "int": "1"}.get(kind, "x")

        return _PARAM.sub(sub, self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def writes(app: Litestar) -> Iterator[Write]:
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in sorted(set(handler.http_methods) & WRITES):
                yield Write(method, route.path)


def _exempt(settings: Settings, path: str) -> bool:
    return any(path.startswith(prefix) for prefix in csrf_config(settings).exclude or [])


async def _signed_in_without_token(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> tuple[MadeUser, MadeOrg]:
    user = await make_user(db, operator=True)  # operator too, so operator routes reach their handlers
    org = await make_org(db, members={user.id: "owner"})
    await sign_in(client, db, user, settings)  # session cookie + csrftoken cookie + x-csrftoken header
    del client.headers["x-csrftoken"]  # ...which a forged cross-site request cannot send
    return user, org


def _is_csrf_refusal(resp: httpx.Response) -> bool:
    return resp.status_code == 403 and "csrf" in resp.text.lower()


async def test_every_cookie_authenticated_write_without_the_token_is_refused(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    _, org = await _signed_in_without_token(client, db, settings)
    checked, wrong = 0, []
    for w in writes(app):
        if _exempt(settings, w.path):
            continue
        # a form post as a forged page would send it, and the same as JSON
        kwargs: dict[str, Any]
        for kwargs in ({"data": {"x": "1"}}, {"json": {}}):
            resp = await client.request(w.method, w.url(org.slug), **kwargs)
            checked += 1
            if not _is_csrf_refusal(resp):
                wrong.append(f"{w} -> {resp.status_code} {resp.text[:80]}")
    assert wrong == []
    assert checked > 40, "the walk found suspiciously few write routes"


async def test_a_wrong_token_is_refused_like_a_missing_one(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    _, org = await _signed_in_without_token(client, db, settings)
    resp = await client.post("/api/v1/orgs", json={"name": "Forged"}, headers={"x-csrftoken": "not-the-token"})
    assert _is_csrf_refusal(resp)
    page = await client.post(f"/orgs/{org.slug}/invites", data={"email": "x@example.com", "_csrf_token": "nope"})
    assert _is_csrf_refusal(page)


async def test_the_token_lets_the_same_write_through(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await _signed_in_without_token(client, db, settings)
    token = client.cookies.get("csrftoken")
    assert token
    resp = await client.post("/api/v1/orgs", json={"name": "Real One"}, headers={"x-csrftoken": token})
    assert resp.status_code == 201, resp.text


async def test_a_bearer_header_does_not_switch_csrf_off_for_a_request_that_also_has_the_session_cookie(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    _, org = await _signed_in_without_token(client, db, settings)
    key = await make_api_key(db, org, role="admin")
    resp = await client.post(f"/api/v1/orgs/{org.slug}/invites", json={"email": "mallory@example.com"},
                             headers={"Authorization": f"Bearer {key}"})
    assert _is_csrf_refusal(resp)


async def test_an_api_key_alone_needs_no_csrf_token(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(db)
    key = await make_api_key(db, org, role="admin")
    resp = await client.post(f"/api/v1/orgs/{org.slug}/invites", json={"email": "grace@example.com"},
                             headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 201, resp.text


async def test_the_csrf_exempt_machine_endpoints_do_not_accept_the_session_cookie(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    _, org = await _signed_in_without_token(client, db, settings)
    exempt = [w for w in writes(app) if _exempt(settings, w.path)]
    assert exempt, "expected the agent API to be exempt"
    accepted = []
    for w in exempt:
        resp = await client.request(w.method, w.url(org.slug), json={})
        # 400/401/404/422/426 all mean "no": what matters is that a browser's cookie did not act
        if resp.status_code < 300:
            accepted.append(f"{w} -> {resp.status_code}")
    assert accepted == []
