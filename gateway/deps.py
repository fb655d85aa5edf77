"""Names of the values the gateway injects into handlers (Litestar wants them marked explicitly).

    async def create(self, data: ApiKeyCreate, tenant: Tenant, sessions: Sessions) -> ...
"""

from __future__ import annotations

from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.runtime import GatewayRuntime
from tenants.credentials import Identity
from tenants.scope import TenantScope
from tenants.settings import Settings

__all__ = ["AppSettings", "CurrentIdentity", "Runtime", "Sessions", "Tenant"]

Runtime = NamedDependency[GatewayRuntime]
AppSettings = NamedDependency[Settings]
Sessions = NamedDependency[async_sessionmaker[AsyncSession]]
Tenant = NamedDependency[TenantScope]
CurrentIdentity = NamedDependency[Identity]
