"""The app engine's pool: a connection that died while idle (a database restart, an idle timeout of a
proxy) is replaced before use, without the three round trips ``pool_pre_ping`` would add to every
request."""

from __future__ import annotations

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tenants.db import create_app_engine, ping_after_idle
from tenants.settings import Settings


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("select pg_backend_pid()"))).scalar_one())


async def test_a_connection_killed_while_idle_is_replaced_before_use(
    settings: Settings, owner_conn: asyncpg.Connection,
) -> None:
    engine = create_app_engine(settings)
    ping_after_idle(engine, 0.0)  # every checkout counts as "after idle" here
    try:
        first = await _backend_pid(engine)
        assert await owner_conn.fetchval("select pg_terminate_backend($1)", first)
        second = await _backend_pid(engine)  # no error: the dead connection was dropped at checkout
        assert second != first
    finally:
        await engine.dispose()


async def test_a_connection_in_steady_use_is_not_pinged(settings: Settings, owner_conn: asyncpg.Connection) -> None:
    """Within the idle window nothing is checked, so a killed connection surfaces as a disconnect error
    (which the gateway answers with 503 + Retry-After, and which invalidates the pool)."""
    engine = create_app_engine(settings)
    try:
        first = await _backend_pid(engine)
        await owner_conn.fetchval("select pg_terminate_backend($1)", first)
        failed = False
        try:
            await _backend_pid(engine)
        except Exception as exc:  # the disconnect, as SQLAlchemy raises it
            failed = bool(getattr(exc, "connection_invalidated", False))
        assert failed, "the dead connection was used without a disconnect error: was it pinged?"
        assert await _backend_pid(engine) != first  # the pool was invalidated: a fresh connection
    finally:
        await engine.dispose()
