from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.cli_client import Context, run
from gateway.runtime import TemporalHandle
from tenants.settings import Settings
from tests.dashboard.rows import seed_plans

SERVER = "http://testserver"


@pytest.fixture
async def app(settings: Settings, engine: AsyncEngine, temporal_client: Client,
              db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection) -> Litestar:
    """The real gateway; its own task queue, so workflows it starts never meet another test's worker."""
    await seed_plans(owner_conn)
    mine = settings.with_(temporal_task_queue=f"g-{uuid.uuid4().hex[:8]}")
    return create_app(mine, engine=engine, temporal=TemporalHandle(mine, client=temporal_client))


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    """Runs ``metacloud <argv>`` in-process against the app (httpx.ASGITransport), with its own credentials file."""

    app: Litestar
    config_path: Path
    poll_interval: float = 0.05

    async def __call__(self, *argv: str, stdin: str = "", prompt: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        ctx = Context(out=out, err=err, stdin=io.StringIO(stdin), env={}, config_path=self.config_path,
                      transport=httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
                      poll_interval=self.poll_interval, prompt=lambda _: prompt)
        code = await run(list(argv), ctx)
        return Result(code=code, out=out.getvalue(), err=err.getvalue())

    async def login(self, org: str, key: str) -> Result:
        return await self("login", "--server", SERVER, "--org", org, "--api-key-stdin", stdin=key + "\n")


@pytest.fixture
def cli(app: Litestar, tmp_path: Path) -> Cli:
    return Cli(app=app, config_path=tmp_path / "metacloud" / "credentials.json")
