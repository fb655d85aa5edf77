"""Liveness, readiness and the durable round trip gateway -> Temporal -> worker -> database."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.settings import Settings
from tests.temporal_helpers import wait_for_poller
from workflows.registry import Dependencies
from workflows.worker import build_worker


async def test_healthz_answers_while_the_process_is_up(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_readyz_reports_database_and_temporal(client: httpx.AsyncClient) -> None:
    resp = await client.get("/readyz")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["temporal"]["ok"] is True


async def test_readyz_names_the_dependency_that_is_down(settings: Settings, engine: AsyncEngine,
                                                        db: async_sessionmaker[AsyncSession]) -> None:
    unreachable = settings.with_(temporal_address="127.0.0.1:1")  # nothing listens on port 1
    app = create_app(unreachable, engine=engine, temporal=TemporalHandle(unreachable))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        resp = await c.get("/readyz")
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "5"
    body = resp.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["temporal"]["ok"] is False
    assert "temporal unreachable" in body["checks"]["temporal"]["error"]


async def test_deep_readyz_runs_a_workflow_through_a_worker_into_the_database(
    app: Litestar, client: httpx.AsyncClient, settings: Settings, temporal_client: Client,
    db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
) -> None:
    worker = build_worker(temporal_client, Dependencies(settings=settings, sessions=db))
    async with worker:
        await wait_for_poller(temporal_client, settings.temporal_task_queue)
        resp = await client.get("/readyz", params={"deep": "true"})
    assert resp.status_code == 200, resp.text
    worker_check = resp.json()["checks"]["worker"]
    assert worker_check["ok"] is True
    rows = await owner_conn.fetch("SELECT message, worker_identity FROM system_probes")
    assert [r["message"] for r in rows] == ["readyz"]
    assert rows[0]["worker_identity"] == worker_check["worker"]


async def test_deep_readyz_without_a_worker_is_not_ready(
    settings: Settings, engine: AsyncEngine, temporal_client: Client, db: async_sessionmaker[AsyncSession]
) -> None:
    lonely = settings.with_(temporal_task_queue=f"nobody-listens-{uuid.uuid4().hex[:6]}")
    app = create_app(lonely, engine=engine, temporal=TemporalHandle(lonely, client=temporal_client))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        resp = await c.get("/readyz", params={"deep": "true"})
    assert resp.status_code == 503
    worker = resp.json()["checks"]["worker"]
    assert worker["ok"] is False
    assert worker["error"] == f"no worker is polling task queue {lonely.temporal_task_queue!r}"


async def test_openapi_schema_is_served(client: httpx.AsyncClient) -> None:
    resp = await client.get("/schema/openapi.json")
    assert resp.status_code == 200
    schema = resp.json()
    assert schema["openapi"].startswith("3.1")
    assert "/readyz" in schema["paths"]
