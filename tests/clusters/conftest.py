from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.settings import Settings
from tests.factories import MadeOrg, MadeUser, make_api_key, make_org, make_user
from tests.temporal_helpers import wait_for_poller
from workflows.registry import Dependencies
from workflows.worker import build_worker


@pytest.fixture
def queue() -> str:
    return f"clusters-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def csettings(settings: Settings, queue: str) -> Settings:
    return settings.with_(temporal_task_queue=queue, public_url="http://metacloud.example.com")


@pytest.fixture
def app(csettings: Settings, engine: AsyncEngine, temporal_client: Client,
        db: async_sessionmaker[AsyncSession]) -> Litestar:
    return create_app(csettings, engine=engine, temporal=TemporalHandle(csettings, client=temporal_client))


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class Admin:
    org: MadeOrg
    user: MadeUser
    headers: dict[str, str]

    def url(self, tail: str = "") -> str:
        return f"/api/v1/orgs/{self.org.slug}/clusters{tail}"


@pytest.fixture
async def admin(db: async_sessionmaker[AsyncSession]) -> Admin:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})
    key = await make_api_key(db, org, role="admin")
    return Admin(org=org, user=user, headers={"Authorization": f"Bearer {key}"})


WorkerFactory = Callable[[], Awaitable[asyncio.Task[None]]]


@pytest.fixture
async def start_worker(temporal_client: Client, csettings: Settings, queue: str,
                       db: async_sessionmaker[AsyncSession]) -> AsyncIterator[WorkerFactory]:
    """Start a worker with every registered workflow on this test's queue; stopped after the test."""
    tasks: list[asyncio.Task[None]] = []

    async def start() -> asyncio.Task[None]:
        worker = build_worker(temporal_client, Dependencies(settings=csettings, sessions=db), task_queue=queue)
        task = asyncio.create_task(worker.run())
        tasks.append(task)
        await wait_for_poller(temporal_client, queue)
        return task

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
