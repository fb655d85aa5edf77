from __future__ import annotations

import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.settings import Settings
from tests.gateway.conftest import client

__all__ = ["app", "client"]


@pytest.fixture(scope="package")
def shared_app(settings: Settings, engine: AsyncEngine, temporal_client: Client) -> Litestar:
    """One real gateway for the package: building it costs ~0.3 s, and it holds no per-test state."""
    return create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client))


@pytest.fixture
def app(shared_app: Litestar, db: async_sessionmaker[AsyncSession]) -> Litestar:
    return shared_app  # ``db`` empties every table after each test
