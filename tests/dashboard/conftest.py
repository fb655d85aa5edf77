from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.settings import Settings
from tests.dashboard.rows import seed_plans


@pytest.fixture
async def app(settings: Settings, engine: AsyncEngine, temporal_client: Client,
              db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection) -> Litestar:
    """The real gateway; its own task queue, so workflows it starts never meet another test's worker."""
    await seed_plans(owner_conn)
    mine = settings.with_(temporal_task_queue=f"g-{uuid.uuid4().hex[:8]}")
    return create_app(mine, engine=engine, temporal=TemporalHandle(mine, client=temporal_client))


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
