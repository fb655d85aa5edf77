"""Connecting to Temporal: one place, used by the gateway and the worker."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from tenants.settings import Settings

__all__ = ["connect"]


async def connect(settings: Settings, *, address: str | None = None) -> Client:
    target = address or settings.temporal_address
    if not target:
        raise RuntimeError("TEMPORAL_ADDRESS is not resolved: start the dev server or set it")
    interceptors = [TracingInterceptor()] if settings.otel_exporter != "none" else []
    return await Client.connect(
        target,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=settings.temporal_tls,
        interceptors=interceptors,
    )
