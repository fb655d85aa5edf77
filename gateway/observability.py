"""Structured JSON logs, request ids and OpenTelemetry traces, set up once per process.

Every log line carries the request id and the trace id of the span it was written in, so an
operator can go from a user's error (which shows the request id) to the stack trace in the logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import weakref
from datetime import UTC, datetime
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

from tenants.settings import Settings

__all__ = [
    "JsonFormatter",
    "RequestIdMiddleware",
    "configure_logging",
    "configure_tracing",
    "current_request_id",
    "current_trace_id",
    "install_log_context",
    "instrument_engine",
]

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

# Attributes every LogRecord has; anything else passed via extra= goes into the JSON.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def current_request_id() -> str:
    return request_id_var.get()


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


_CONTEXT_FIELDS = ("request_id", "trace_id", "span_id")
_factory_installed = False


def install_log_context() -> None:
    """Stamp every LogRecord with the request id and trace ids current when it is created
    (a handler may format it later, outside the request's context)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = trace.get_current_span().get_span_context()
        record.request_id = request_id_var.get() or None
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _CONTEXT_FIELDS:
            entry[key] = getattr(record, key, None)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _CONTEXT_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps({k: v for k, v in entry.items() if v is not None}, default=str)


def configure_logging(settings: Settings) -> None:
    install_log_context()
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # uvicorn's access log repeats what our request log says.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False


_configured_provider: TracerProvider | None = None
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()


def configure_tracing(settings: Settings, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Install a tracer provider once per process; ``otel_exporter`` picks console, OTLP or none
    (``exporter`` overrides it, for tests). The OpenTelemetry API allows one global provider."""
    global _configured_provider
    if settings.otel_exporter == "none" and exporter is None:
        return None
    if _configured_provider is not None:
        return _configured_provider
    if exporter is None:
        if settings.otel_exporter == "console":
            exporter = ConsoleSpanExporter(out=sys.stderr)
        elif settings.otel_exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint) if settings.otel_endpoint else OTLPSpanExporter()
        else:
            return None
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured_provider = provider
    return provider


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    """SQL spans for one engine (once: instrumenting twice would double every span)."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    if engine.sync_engine in _instrumented:
        return
    # The instrumentation declares sqlalchemy < 2.1 but its engine-event hooks work on 2.1 (the SQL
    # span test checks it), so skip its version gate rather than pin an older SQLAlchemy.
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True)
    _instrumented.add(engine.sync_engine)


class RequestIdMiddleware:
    """Takes a well-formed ``X-Request-ID`` from the caller or makes one; echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    rid = candidate
                break
        rid = rid or secrets.token_hex(8)
        token = request_id_var.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers  # type: ignore[typeddict-unknown-key]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
