"""What the fuzzer found, pinned as plain tests so it stays fixed whatever the fuzzer draws next time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.settings import Settings
from tests.factories import make_org, make_user, sign_in


@pytest.fixture
async def operator(settings: Settings, engine: AsyncEngine, temporal_client: Client,
                   db: async_sessionmaker[AsyncSession]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cast(Any, app)), base_url="http://t") as client:
        user = await make_user(db, operator=True)
        await make_org(db, members={user.id: "owner"})
        await sign_in(client, db, user, settings)
        yield client


async def test_a_nul_character_in_a_search_is_a_400_not_a_500(operator: httpx.AsyncClient) -> None:
    resp = await operator.get("/api/v1/operator/users", params={"q": "ada\x00"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "invalid_request"
    assert "NUL" in resp.json()["detail"]


async def test_a_nul_character_in_a_json_body_is_refused_not_a_500(operator: httpx.AsyncClient) -> None:
    resp = await operator.post("/api/v1/orgs", json={"name": "Ada\x00Labs"})
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
