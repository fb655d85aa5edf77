from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from billing.usage.models import RateCard
from billing.usage.rates import create_rate_card
from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.db import unscoped_session
from tenants.settings import Settings
from tests.factories import MadeOrg, MadeUser, make_org, make_user
from tests.usage.helpers import AgentCluster, make_cluster

# The migration seeds this card; the `db` fixture empties every table after a test, so tests that price
# usage put it back (same list prices as infra/migrations/versions/0009_usage.py).
PAYG = {"vcpu_hour_micros": 40_000, "memory_gib_hour_micros": 5_000, "gpu_default_hour_micros": 1_200_000,
        "storage_gib_month_micros": 100_000, "gpu_hour_micros": {"A100": 2_500_000}}


@pytest.fixture(scope="module")
def shared_app(settings: Settings, engine: AsyncEngine, temporal_client: Client) -> Litestar:
    """Building the app costs about a second; the tests of a module share one (it holds no state of theirs)."""
    return create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client))


@pytest.fixture
def app(shared_app: Litestar, db: async_sessionmaker[AsyncSession]) -> Litestar:
    return shared_app  # with `db`: every table is emptied after the test


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as c:
        yield c


@pytest.fixture
async def owner(db: async_sessionmaker[AsyncSession]) -> MadeUser:
    return await make_user(db)


@pytest.fixture
async def org(db: async_sessionmaker[AsyncSession], owner: MadeUser) -> MadeOrg:
    return await make_org(db, members={owner.id: "owner"})


@pytest.fixture
async def cluster(db: async_sessionmaker[AsyncSession], org: MadeOrg) -> AgentCluster:
    return await make_cluster(db, org.id)


@pytest.fixture
async def payg_card(db: async_sessionmaker[AsyncSession]) -> None:
    async with unscoped_session(db, reason="test: the seeded list prices") as s:
        await s.execute(delete(RateCard))  # the migration's seed, in the session's first test
        await create_rate_card(s, plan="payg", effective_from=datetime(2024, 1, 1, tzinfo=UTC), allow_past=True,
                               **PAYG)  # type: ignore[arg-type]
