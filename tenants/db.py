"""The database kernel: declarative base, tenant mixin, engines and scoped transactions.

Two ways into the database, both explicit:

* ``tenant_session(sessions, scope)`` opens a transaction with ``app.org_id`` set to the scope's
  org: row-level security lets it see and write that org's rows only.
* ``unscoped_session(sessions, reason=...)`` opens a transaction that may cross tenants (login by
  email, token redemption, the operator console, sweeps). It is named loudly on purpose.

A session opened any other way has neither variable set and RLS shows it no tenant rows at all:
forgetting the scope fails closed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, MetaData, Uuid, event, func, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from tenants.scope import TenantScope
from tenants.settings import Settings

__all__ = [
    "Base",
    "TenantOwned",
    "Timestamped",
    "create_app_engine",
    "create_sessionmaker",
    "new_id",
    "tenant_session",
    "unscoped_session",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), uuid.UUID: Uuid()}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), nullable=False)


class TenantOwned:
    """Mixin for every row that belongs to one org. Its table must be under RLS (see ``tenants.rls``)."""

    @declared_attr
    def org_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True, nullable=False)


IDLE_PING_S = 10.0


def create_app_engine(settings: Settings, *, url: str | None = None) -> AsyncEngine:
    """Engine for the application role (never the owner: RLS must apply)."""
    engine = create_async_engine(
        settings.sqlalchemy_url(url or settings.resolved_app_database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_recycle=1800,
        # Statement parameters can hold what people typed (and hashed secrets): keep them out of
        # exception messages, which reach the logs.
        hide_parameters=True,
    )
    ping_after_idle(engine, IDLE_PING_S)
    return engine


def ping_after_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Check a pooled connection before use only if it sat idle for ``idle_s``.

    ``pool_pre_ping`` pings at every checkout, and on asyncpg a ping is three round trips (BEGIN, ``;``,
    ROLLBACK): more than the queries of a typical API request. A connection in steady use is alive; one
    that broke between uses (a database restart) fails its statement as a disconnect, which invalidates
    the whole pool and answers 503 with Retry-After (``gateway.errors``), so the next request gets a
    fresh connection. A dead idle connection is replaced here before anyone sees it.
    """
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _idle_since(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # the pool discards this connection and checks out another
            raise DisconnectionError("a pooled connection died while idle") from exc


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


_SET_SCOPE = text(
    "select set_config('app.org_id', :org_id, true), set_config('app.unscoped', :unscoped, true)"
)


@asynccontextmanager
async def tenant_session(
    sessions: async_sessionmaker[AsyncSession], scope: TenantScope
) -> AsyncIterator[AsyncSession]:
    """A transaction that sees one org's rows; commits on success, rolls back on error."""
    async with sessions() as session, session.begin():
        await session.execute(_SET_SCOPE, {"org_id": str(scope.org_id), "unscoped": "off"})
        yield session


@asynccontextmanager
async def unscoped_session(
    sessions: async_sessionmaker[AsyncSession], *, reason: str
) -> AsyncIterator[AsyncSession]:
    """A transaction that may read and write every org's rows. ``reason`` documents the call site."""
    if not reason:
        raise ValueError("unscoped_session needs a reason")
    async with sessions() as session, session.begin():
        await session.execute(_SET_SCOPE, {"org_id": "", "unscoped": "on"})
        yield session
