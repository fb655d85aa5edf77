"""``create_app(settings)``: the one place the gateway is assembled."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry.sdk.trace.export import SpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth import provide_identity, provide_scope, session_cookie_name
from gateway.errors import exception_handlers
from gateway.observability import (
    RequestIdMiddleware,
    configure_tracing,
    install_log_context,
    instrument_engine,
)
from gateway.openapi import ProblemDocs, openapi_config
from gateway.routes import route_handlers
from gateway.runtime import GatewayRuntime, TemporalHandle
from gateway.security import CookieCsrfMiddleware, csrf_config, security_headers_hook
from gateway.web.config import static_files, template_config
from tenants.db import create_app_engine, create_sessionmaker
from tenants.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    temporal: TemporalHandle | None = None,
    extra_route_handlers: Sequence[Any] = (),
    span_exporter: SpanExporter | None = None,
) -> Litestar:
    install_log_context()
    provider = configure_tracing(settings, span_exporter)
    owns_engine = engine is None
    engine = engine or create_app_engine(settings)
    if provider is not None:
        instrument_engine(engine, provider)
    runtime = GatewayRuntime(
        settings=settings,
        engine=engine,
        sessions=create_sessionmaker(engine),
        temporal=temporal or TemporalHandle(settings),
    )

    async def _shutdown() -> None:
        if owns_engine:
            await engine.dispose()

    plugins: list[Any] = [ProblemDocs(settings)]
    if provider is not None:
        plugins.append(OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=provider)))

    return Litestar(
        route_handlers=[*route_handlers(), static_files(), *extra_route_handlers],
        state=State({"runtime": runtime}),
        dependencies={
            "runtime": Provide(lambda: runtime, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "sessions": Provide(lambda: runtime.sessions, sync_to_thread=False),
            "tenant": Provide(provide_scope),
            "identity": Provide(provide_identity),
        },
        middleware=[
            DefineMiddleware(RequestIdMiddleware),
            DefineMiddleware(
                CookieCsrfMiddleware, config=csrf_config(settings), session_cookie=session_cookie_name(settings)
            ),
        ],
        # A send hook, not a middleware: it also covers the 404/405 the router answers by itself.
        before_send=[security_headers_hook(settings.https)],
        template_config=template_config(),
        exception_handlers=exception_handlers,
        openapi_config=openapi_config(settings),
        plugins=plugins,
        compression_config=CompressionConfig(backend="gzip", minimum_size=1024),
        on_shutdown=[_shutdown],
        debug=False,
        logging_config=None,
    )
