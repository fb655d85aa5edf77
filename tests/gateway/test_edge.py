"""What every response carries: request ids, problem+json errors, security headers, no stack traces."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from litestar import get
from litestar.params import FromQuery
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from temporalio.client import Client

from gateway.app import create_app
from gateway.deps import Runtime
from gateway.observability import JsonFormatter
from gateway.runtime import TemporalHandle
from tenants.errors import Conflict, InvalidInput
from tenants.settings import Settings


@get("/test/boom", sync_to_thread=False)
def boom() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@get("/test/conflict", sync_to_thread=False)
def conflict() -> None:
    raise Conflict("That slug is taken; pick another.")


@get("/test/invalid", sync_to_thread=False)
def invalid() -> None:
    raise InvalidInput("Check the form.", field_errors={"email": "Enter an email address."})


@get("/test/typed", sync_to_thread=False)
def typed(count: FromQuery[int]) -> dict[str, int]:
    return {"count": count}


@pytest.fixture
async def tclient(settings: Settings, engine: AsyncEngine, temporal_client: Client,
                  db: async_sessionmaker[AsyncSession]) -> httpx.AsyncClient:
    app = create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client),
                     extra_route_handlers=[boom, conflict, invalid, typed])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t")


async def test_request_id_is_echoed_or_made(tclient: httpx.AsyncClient) -> None:
    given = await tclient.get("/healthz", headers={"x-request-id": "abc12345-from-lb"})
    assert given.headers["x-request-id"] == "abc12345-from-lb"
    made = await tclient.get("/healthz", headers={"x-request-id": "bad id with spaces\n"})
    assert made.headers["x-request-id"] != "bad id with spaces\n"
    assert len(made.headers["x-request-id"]) == 16


async def test_unhandled_error_is_problem_json_without_internals(
    tclient: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        resp = await tclient.get("/test/boom")
    assert resp.status_code == 500
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["request_id"] == resp.headers["x-request-id"]
    assert "hunter2" not in resp.text and "Traceback" not in resp.text
    # ...while the operator finds the stack trace in the log, under the same request id
    record = next(r for r in caplog.records if r.getMessage() == "unhandled error")
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == body["request_id"]
    assert "RuntimeError" in line["exc"]


async def test_domain_errors_map_to_their_status(tclient: httpx.AsyncClient) -> None:
    resp = await tclient.get("/test/conflict")
    assert resp.status_code == 409
    assert resp.json()["detail"] == "That slug is taken; pick another."
    resp = await tclient.get("/test/invalid")
    assert resp.status_code == 422
    assert resp.json()["errors"] == [{"field": "email", "message": "Enter an email address."}]


async def test_bad_parameter_is_a_400_that_names_the_field(tclient: httpx.AsyncClient) -> None:
    resp = await tclient.get("/test/typed", params={"count": "many"})
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "count" in resp.json()["detail"]


async def test_unknown_route_is_problem_json_404(tclient: httpx.AsyncClient) -> None:
    resp = await tclient.get("/nope")
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"


async def test_security_headers_on_every_response(tclient: httpx.AsyncClient) -> None:
    resp = await tclient.get("/healthz")
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in resp.headers  # plain HTTP in local dev


async def test_database_down_is_503_with_retry_hint(settings: Settings, temporal_client: Client,
                                                    tmp_path: object) -> None:
    dead = create_async_engine(f"postgresql+asyncpg://nobody@/nothing?host={tmp_path}", pool_pre_ping=False)
    app = create_app(settings, engine=dead, temporal=TemporalHandle(settings, client=temporal_client),
                     extra_route_handlers=[_db_route()])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        resp = await c.get("/test/db")
    await dead.dispose()
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "5"
    assert resp.json()["code"] == "upstream_unavailable"


def _db_route() -> object:
    @get("/test/db")
    async def db_route(runtime: Runtime) -> dict[str, str]:
        async with runtime.sessions() as s:
            await s.execute(text("select 1"))
        return {"ok": "yes"}

    return db_route
