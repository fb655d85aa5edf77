"""The OpenAPI schema's account of errors and credentials (``gateway.openapi``) against what the API does.

Real error responses of each kind the schema documents are checked against the schema as served: the status is
documented for that operation, as ``application/problem+json``, and the body validates against the documented
schema. The declarations are checked on the schema of apps built here: the cookie names follow the settings, and a
route added to the app is documented from its guard and path without anyone writing it down.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from litestar import get
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.auth import require
from gateway.openapi import AGENT, API_KEY, SESSION
from tenants.permissions import Permission
from tenants.settings import Settings
from tests.factories import add_member, ensure_csrf, make_api_key, make_org, make_user, sign_in

PROBLEM_JSON = "application/problem+json"


async def _served_schema(client: httpx.AsyncClient) -> dict[str, Any]:
    resp = await client.get("/schema/openapi.json")
    assert resp.status_code == 200
    schema: dict[str, Any] = resp.json()
    return schema


def _assert_documented(schema: dict[str, Any], method: str, path: str, resp: httpx.Response) -> dict[str, Any]:
    """``resp`` is an answer the schema documents for the operation, in content type and body; returns the body."""
    documented = schema["paths"][path][method.lower()]["responses"]
    status = str(resp.status_code)
    assert status in documented, f"{method} {path} answered {status}, documented: {sorted(documented)}"
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.text
    body_schema = documented[status]["content"][PROBLEM_JSON]["schema"]
    body: dict[str, Any] = resp.json()
    Draft202012Validator({**body_schema, "components": schema["components"]}).validate(body)
    return body


async def test_the_errors_the_api_answers_are_documented_with_the_body_they_have(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    schema = await _served_schema(client)
    owner = await make_user(db)
    org = await make_org(db, members={owner.id: "owner"})
    viewer = await make_user(db)
    await add_member(db, org, viewer, "viewer")
    stranger = await make_org(db)
    await ensure_csrf(client)

    def check(method: str, path: str, resp: httpx.Response, status: int) -> dict[str, Any]:
        assert resp.status_code == status, resp.text
        return _assert_documented(schema, method, path, resp)

    check("GET", "/api/v1/me", await client.get("/api/v1/me"), 401)
    key = await make_api_key(db, org)
    check("GET", "/api/v1/me", await client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}), 403)
    check("GET", "/api/v1/orgs/{org}/members", await client.get(f"/api/v1/orgs/{stranger.slug}/members"), 401)
    check("GET", "/agent/v1/commands", await client.get("/agent/v1/commands"), 426)

    await sign_in(client, db, owner, settings)
    invalid = check("POST", "/api/v1/orgs", await client.post("/api/v1/orgs", json={"name": 5}), 400)
    assert invalid["errors"]
    check("POST", "/api/v1/orgs", await client.post("/api/v1/orgs", json={"name": "a"}), 422)
    check("GET", "/api/v1/orgs/{org}/members", await client.get(f"/api/v1/orgs/{stranger.slug}/members"), 404)
    check("DELETE", "/api/v1/orgs/{org}/members/{member_id}",
          await client.delete(f"/api/v1/orgs/{org.slug}/members/{uuid.uuid4()}"), 404)
    invites = f"/api/v1/orgs/{org.slug}/invites"
    assert (await client.post(invites, json={"email": "ada@example.com"})).status_code == 201
    check("POST", "/api/v1/orgs/{org}/invites", await client.post(invites, json={"email": "ada@example.com"}), 409)

    await sign_in(client, db, viewer, settings)
    check("POST", "/api/v1/orgs/{org}/invites", await client.post(invites, json={"email": "bob@example.com"}), 403)


async def test_a_rate_limited_signup_is_documented(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]) -> None:
    schema = await _served_schema(client)
    await ensure_csrf(client)
    signup = {"email": "ada@example.com", "password": "a long and uncommon passphrase 7"}
    answers = [(await client.post("/api/v1/auth/signup", json=signup)).status_code for _ in range(5)]
    assert answers == [202] * 5
    limited = await client.post("/api/v1/auth/signup", json=signup)
    assert limited.status_code == 429, limited.text
    _assert_documented(schema, "POST", "/api/v1/auth/signup", limited)


def _schema_of(settings: Settings, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = create_app(settings, **extra).openapi_schema.to_schema()
    return schema


@pytest.mark.parametrize("https", [False, True])
def test_the_session_scheme_names_the_cookie_and_the_csrf_header_the_app_uses(settings: Settings, https: bool) -> None:
    url = "https://metacloud.example" if https else "http://127.0.0.1:8000"
    schemes = _schema_of(settings.with_(public_url=url))["components"]["securitySchemes"]
    session = schemes[SESSION]
    assert (session["type"], session["in"]) == ("apiKey", "cookie")
    assert session["name"] == ("__Host-mc_session" if https else "mc_session")
    assert "x-csrftoken" in session["description"]
    assert ("__Host-csrftoken" if https else "`csrftoken`") in session["description"]
    assert {schemes[API_KEY]["scheme"], schemes[AGENT]["scheme"]} == {"bearer"}


def test_a_new_route_is_documented_from_its_guard_and_path(settings: Settings) -> None:
    @get("/api/v1/orgs/{org:str}/widgets/{widget_id:uuid}", guards=[require(Permission.CLUSTERS_READ)],
         sync_to_thread=False)
    def widget(org: FromPath[str], widget_id: FromPath[uuid.UUID]) -> dict[str, str]:
        return {}

    op = _schema_of(settings, extra_route_handlers=[widget])["paths"]["/api/v1/orgs/{org}/widgets/{widget_id}"]["get"]
    errors = {status: r for status, r in op["responses"].items() if status.startswith("4")}
    assert set(errors) == {"400", "401", "403", "404"}
    assert all(set(r["content"]) == {PROBLEM_JSON} for r in errors.values())
    assert "clusters:read" in errors["403"]["description"]
    assert "no such widget" in errors["404"]["description"]
    assert op["security"] == [{SESSION: []}, {API_KEY: []}]
