"""Connecting to Temporal: one place, used by the gateway and the worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.service import TLSConfig

from tenants.settings import Settings

__all__ = ["connect"]


async def connect(settings: Settings, *, address: str | None = None) -> Client:
    target = address or settings.temporal_address
    if not target:
        raise RuntimeError("TEMPORAL_ADDRESS is not resolved: start the dev server or set it")
    interceptors = [TracingInterceptor()] if settings.otel_exporter != "none" else []
    tls: bool | TLSConfig = settings.temporal_tls
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        # Temporal Cloud with mTLS: the namespace's client certificate.
        cert, key = await asyncio.gather(
            asyncio.to_thread(Path(settings.temporal_tls_cert).read_bytes),
            asyncio.to_thread(Path(settings.temporal_tls_key).read_bytes),
        )
        tls = TLSConfig(client_cert=cert, client_private_key=key)
    return await Client.connect(
        target,
        namespace=settings.temporal_namespace,
        api_key=settings.temporal_api_key,
        tls=tls,
        interceptors=interceptors,
    )
