"""Traces for HTTP, SQL and Temporal, with the trace id in every log line of the request."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from litestar import get
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.deps import Runtime
from gateway.observability import JsonFormatter
from gateway.runtime import TemporalHandle
from tenants.settings import Settings
from tests.temporal_helpers import wait_for_poller
from workflows.client import connect
from workflows.registry import Dependencies
from workflows.worker import build_worker

log = logging.getLogger("tests.observability")


@get("/test/traced", opt={"public": "test route"})
async def traced(runtime: Runtime) -> dict[str, str]:
    async with runtime.sessions() as s:
        await s.execute(text("select 42"))
    log.info("inside the request")
    return {"ok": "yes"}


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def test_request_sql_and_workflow_spans_share_the_trace_in_the_logs(
    settings: Settings, engine: AsyncEngine, db: async_sessionmaker[AsyncSession],
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
) -> None:
    traced_settings = settings.with_(otel_exporter="console")
    temporal = await connect(traced_settings)  # with the tracing interceptor
    app = create_app(traced_settings, engine=engine, temporal=TemporalHandle(traced_settings, client=temporal),
                     extra_route_handlers=[traced], span_exporter=exporter)
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        with caplog.at_level(logging.INFO, logger="tests.observability"):
            resp = await c.get("/test/traced")
        worker = build_worker(temporal, Dependencies(settings=traced_settings, sessions=db))
        async with worker:
            await wait_for_poller(temporal, traced_settings.temporal_task_queue)
            deep = await c.get("/readyz", params={"deep": "true"})
    assert resp.status_code == 200
    provider.force_flush()  # type: ignore[attr-defined]
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert any(n.startswith("GET /test/traced") for n in names), names
    assert deep.status_code == 200, deep.text
    assert any(n.lower().startswith("select") for n in names), names  # the SQL span
    assert any(n.startswith("StartWorkflow:system.probe") for n in names), names
    assert any(n.startswith("RunActivity:system.record-probe") for n in names), names

    http_span = next(s for s in spans if s.name.startswith("GET /test/traced") and s.parent is None)
    trace_id = format(http_span.context.trace_id, "032x")
    record = next(r for r in caplog.records if r.getMessage() == "inside the request")
    line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == trace_id
    assert line["request_id"] == resp.headers["x-request-id"]
