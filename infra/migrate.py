"""Apply Alembic migrations as the database owner."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tenants.settings import Settings

__all__ = ["alembic_config", "upgrade", "upgrade_async"]

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", settings.sqlalchemy_url(settings.owner_database_url).replace("%", "%%"))
    cfg.attributes["app_db_password"] = settings.app_db_password
    return cfg


async def upgrade_async(settings: Settings, revision: str = "heads") -> None:
    """Upgrade from inside a running event loop (tests, the dev stack)."""
    cfg = alembic_config(settings)
    engine = create_async_engine(settings.sqlalchemy_url(settings.owner_database_url), poolclass=NullPool)

    def _go(conn: Connection) -> None:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        # One migrator at a time across replicas (Helm runs a job, but make dev may race it).
        await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7423001)")
        await conn.run_sync(_go)
    await engine.dispose()


def upgrade(settings: Settings, revision: str = "heads") -> None:
    asyncio.run(upgrade_async(settings, revision))
