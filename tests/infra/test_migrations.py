"""The migrations are the schema: what Alembic builds must equal what the models declare."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import infra.migrations.env_models  # noqa: F401 - registers every table on Base.metadata
from billing.usage.partitions import alembic_include_object
from tenants.db import Base
from tenants.settings import Settings


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": alembic_include_object})
    return list(compare_metadata(ctx, Base.metadata))


async def test_migrated_schema_matches_the_models(owner_url: str) -> None:
    engine = create_async_engine(Settings().sqlalchemy_url(owner_url), poolclass=NullPool)
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    await engine.dispose()
    assert diff == [], f"models and migrations disagree; write a migration: {diff}"
