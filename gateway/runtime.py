"""What one gateway process holds: settings, the database pool and a lazy Temporal client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from tenants.errors import UpstreamUnavailable
from tenants.settings import Settings
from workflows.client import connect

__all__ = ["GatewayRuntime", "TemporalHandle"]


@dataclass
class TemporalHandle:
    """Connects on first use, so the gateway starts (and says why it is not ready) while Temporal is down."""

    settings: Settings
    client: Client | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self, *, timeout: float = 3.0) -> Client:
        if self.client is not None:
            return self.client
        async with self._lock:
            if self.client is None:
                try:
                    self.client = await asyncio.wait_for(connect(self.settings), timeout)
                except Exception as exc:
                    raise UpstreamUnavailable(
                        "The workflow engine (Temporal) is not reachable; retry in a few seconds."
                    ) from exc
            return self.client


@dataclass
class GatewayRuntime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    temporal: TemporalHandle
