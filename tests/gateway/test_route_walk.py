"""Walk every route of the real app (enumerated from the app itself, so a new route is covered
the day it is added):

* every route is guarded by ``gateway.auth`` or explicitly declares ``opt={"public": reason}``;
* every ``{org}`` route answers a member of another org with 404 and leaks nothing of it;
* every ``require(permission)`` route lets exactly the roles of the permission matrix through.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.routes import HTTPRoute
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from tenants.permissions import MATRIX, Role
from tenants.settings import Settings
from tests.factories import MadeOrg, add_member, ensure_csrf, make_api_key, make_org, make_user, sign_in

SKIP_PREFIXES = ("/schema", "/static")
_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # template, e.g. /api/v1/orgs/{org:str}/members/{member_id:uuid}
    guards: tuple[Any, ...]
    opt: dict[str, Any]

    @property
    def permission(self) -> str | None:
        for g in self.guards:
            perm = getattr(g, "permission", None)
            if perm is not None:
                return str(perm)
        return None

    @property
    def has_org(self) -> bool:
        return any(name == "org" for name, _ in _PARAM.findall(self.path))

    def url(self, org: str, fill: dict[str, str] | None = None) -> str:
        def sub(m: re.Match[str]) -> str:
            name, kind = m.group(1), m.group(2) or "str"
            if name == "org":
                return org
            if fill and name in fill:
                return fill[name]
            return {"uuid": str(uuid.uuid4()), "int": "1"}.get(kind, "x")

        return _PARAM.sub(sub, self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def endpoints(app: Litestar) -> Iterator[Endpoint]:
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith(SKIP_PREFIXES):
            continue
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods):
                if method in {"HEAD", "OPTIONS"}:
                    continue
                guards = tuple(g for layer in handler.ownership_layers for g in (layer.guards or []))
                yield Endpoint(method, route.path, guards, dict(handler.opt or {}))


async def _call(client: httpx.AsyncClient, ep: Endpoint, url: str) -> httpx.Response:
    kwargs: dict[str, Any] = {}
    if ep.method in {"POST", "PUT", "PATCH"}:
        kwargs["json"] = {}
    return await client.request(ep.method, url, headers={"accept": "application/json"}, **kwargs)


def test_every_route_is_guarded_or_declared_public(app: Litestar) -> None:
    unguarded = [str(ep) for ep in endpoints(app) if ep.permission is None and "public" not in ep.opt]
    assert unguarded == [], "routes with neither a gateway.auth guard nor opt={'public': reason}"


def test_org_routes_take_the_org_from_the_path_and_are_guarded_by_permission(app: Litestar) -> None:
    wrong = [str(ep) for ep in endpoints(app)
             if ep.has_org and "public" not in ep.opt and ep.permission in {None, "user", "operator"}]
    assert wrong == [], "an {org} route must use require(Permission.X), which resolves the org and the role"


async def _org_with_data(db: async_sessionmaker[AsyncSession]) -> tuple[MadeOrg, list[str]]:
    """Org A with a member, an admin and an API key; returns the strings that must never leak."""
    owner = await make_user(db, f"a-owner-{secrets.token_hex(3)}@alpha.example")
    org = await make_org(db, members={owner.id: "owner"}, slug=f"alpha-{secrets.token_hex(3)}")
    member = await make_user(db, f"a-member-{secrets.token_hex(3)}@alpha.example")
    await add_member(db, org, member, "member")
    key = await make_api_key(db, org, role="admin")
    return org, [org.slug, owner.email, member.email, key[:11], str(org.id)]


async def test_member_of_another_org_gets_404_on_every_org_route_and_sees_nothing_of_it(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    alpha, secrets_of_alpha = await _org_with_data(db)
    intruder = await make_user(db, "intruder@beta.example")
    beta = await make_org(db, members={intruder.id: "owner"}, slug="beta-org")
    await sign_in(client, db, intruder, settings)
    alpha_ids = [secrets_of_alpha[-1]]

    org_routes = [ep for ep in endpoints(app) if ep.has_org and "public" not in ep.opt]
    leaks, not_404 = [], []
    for ep in org_routes:
        resp = await _call(client, ep, ep.url(alpha.slug))
        if resp.status_code != 404:
            not_404.append(f"{ep} -> {resp.status_code}")
        # and through the intruder's own org, with alpha's ids in every id slot
        uuid_params = {name: alpha_ids[0] for name, kind in _PARAM.findall(ep.path) if kind == "uuid"}
        if ep.method == "GET" or uuid_params:
            own = await _call(client, ep, ep.url(beta.slug, uuid_params))
            for s in secrets_of_alpha:
                if s in own.text:
                    leaks.append(f"{ep} via {beta.slug} shows {s!r}")
    assert not_404 == []
    assert leaks == []


@pytest.mark.parametrize("role", [r.value for r in Role])
async def test_roles_get_exactly_the_permissions_of_the_matrix(
    role: str, app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    await sign_in(client, db, user, settings)
    allowed = {str(p) for p in MATRIX[Role(role)]}
    wrong = []
    for ep in endpoints(app):
        if not ep.has_org or ep.permission in {None, "user", "operator"} or "public" in ep.opt:
            continue
        # a fresh org per call: an allowed call may change or delete what it touches
        org = await make_org(db, members={user.id: role})
        resp = await _call(client, ep, ep.url(org.slug))
        forbidden = resp.status_code == 403
        if (ep.permission in allowed) == forbidden:
            wrong.append(f"{ep} ({ep.permission}) as {role} -> {resp.status_code}")
    assert wrong == []


async def test_api_keys_get_exactly_their_roles_permissions(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    wrong = []
    for role in ("viewer", "member"):
        allowed = {str(p) for p in MATRIX[Role(role)]}
        for ep in endpoints(app):
            if not ep.has_org or ep.permission in {None, "user", "operator"} or "public" in ep.opt:
                continue
            if not ep.path.startswith("/api/"):
                continue
            org = await make_org(db)
            key = await make_api_key(db, org, role=role)
            resp = await client.request(ep.method, ep.url(org.slug), json={} if ep.method in {"POST", "PUT", "PATCH"}
                                        else None, headers={"Authorization": f"Bearer {key}"})
            if (ep.permission in allowed) == (resp.status_code == 403):
                wrong.append(f"{ep} ({ep.permission}) as {role} key -> {resp.status_code}")
    assert wrong == []


async def test_anonymous_callers_get_401_on_every_guarded_api_route(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(db)
    await ensure_csrf(client)  # a browser has the CSRF token even before signing in: we want the 401
    wrong = []
    for ep in endpoints(app):
        if "public" in ep.opt or not ep.path.startswith("/api/"):
            continue
        resp = await client.request(ep.method, ep.url(org.slug), headers={"accept": "application/json"},
                                    json={} if ep.method in {"POST", "PUT", "PATCH"} else None)
        if resp.status_code != 401 and not (ep.permission == "operator" and resp.status_code == 404):
            wrong.append(f"{ep} -> {resp.status_code}")
    assert wrong == []


def test_the_walk_sees_the_routes_it_should(app: Litestar) -> None:
    paths = {ep.path for ep in endpoints(app)}
    assert "/healthz" in paths and "/readyz" in paths


def test_the_walk_catches_an_unguarded_route(settings: Settings) -> None:
    @get("/api/v1/orgs/{org:str}/oops", sync_to_thread=False)
    def oops(org: FromPath[str]) -> dict[str, str]:
        return {}

    app = create_app(settings, extra_route_handlers=[oops])
    found = [str(ep) for ep in endpoints(app) if ep.permission is None and "public" not in ep.opt]
    assert found == ["GET /api/v1/orgs/{org:str}/oops"]
