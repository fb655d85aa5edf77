"""The real gateway over ASGI, as in tests/gateway, built once for this folder (~0.15 s a build)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.settings import Settings
from tests.admin.helpers import browser


@pytest.fixture(scope="session")
def admin_app(settings: Settings, engine: AsyncEngine, temporal_client: Client) -> Litestar:
    return create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client))


@pytest.fixture
def app(admin_app: Litestar, db: async_sessionmaker[AsyncSession]) -> Litestar:
    """The shared app; ``db`` empties every table after each test."""
    return admin_app


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as c:
        yield c
