"""The real app, twice: as in local dev (plain HTTP) and as deployed (``public_url`` on https)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.settings import Settings

HTTPS_URL = "https://metacloud.example.com"


def transport(app: Litestar) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=cast(Any, app))  # httpx's ASGI type is narrower than Litestar's


def make_app(settings: Settings, engine: AsyncEngine, temporal_client: Client) -> Litestar:
    return create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client))


@pytest.fixture(scope="module")
def readonly_client_factory(settings: Settings, engine: AsyncEngine, temporal_client: Client) -> Any:
    """Clients on apps for tests that write nothing (so no table needs emptying after them): http and https."""

    def make(https: bool) -> httpx.AsyncClient:
        s = settings.with_(public_url=HTTPS_URL) if https else settings
        return httpx.AsyncClient(transport=transport(make_app(s, engine, temporal_client)),
                                 base_url=HTTPS_URL if https else "http://testserver")

    return make


@pytest.fixture
def app(settings: Settings, engine: AsyncEngine, temporal_client: Client,
        db: async_sessionmaker[AsyncSession]) -> Litestar:
    return make_app(settings, engine, temporal_client)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=transport(app), base_url="http://testserver") as c:
        yield c


@pytest.fixture
def https_settings(settings: Settings) -> Settings:
    return settings.with_(public_url=HTTPS_URL)


@pytest.fixture
def https_app(https_settings: Settings, engine: AsyncEngine, temporal_client: Client,
              db: async_sessionmaker[AsyncSession]) -> Litestar:
    return make_app(https_settings, engine, temporal_client)


@pytest.fixture
async def https_client(https_app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    # The TLS terminator in front of the gateway speaks https to the browser; the ASGI scope says so too.
    async with httpx.AsyncClient(transport=transport(https_app), base_url=HTTPS_URL) as c:
        yield c
