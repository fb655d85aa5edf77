"""Row-level security: the catalog audit, and what the app role can actually see."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from tenants.db import tenant_session, unscoped_session
from tenants.models import Org
from tenants.rls import APP_ROLE, audit_rls, enable_tenant_rls_sql
from tenants.scope import TenantScope
from tenants.settings import Settings


async def _audit(owner_url: str, setup: list[str] | None = None) -> list[str]:
    """Run the audit as the owner, optionally after DDL that is rolled back afterwards."""
    engine = create_async_engine(Settings().sqlalchemy_url(owner_url), poolclass=NullPool)
    async with engine.connect() as conn:
        trans = await conn.begin()
        for stmt in setup or []:
            await conn.execute(text(stmt))
        problems = await conn.run_sync(audit_rls)
        await trans.rollback()
    await engine.dispose()
    return [str(p) for p in problems]


async def test_every_tenant_table_of_the_migrated_schema_is_under_forced_rls(owner_url: str) -> None:
    assert await _audit(owner_url) == []


async def test_audit_catches_a_tenant_table_without_policy(owner_url: str) -> None:
    problems = await _audit(owner_url, ["CREATE TABLE forgotten (id int, org_id uuid)"])
    assert "forgotten: row level security is not enabled" in problems
    assert "forgotten: row level security is not FORCEd (the owner would bypass it)" in problems
    assert "forgotten: no tenant_isolation policy" in problems


async def test_audit_catches_enabled_but_not_forced(owner_url: str) -> None:
    stmts = ["CREATE TABLE half_done (id int, org_id uuid)", *enable_tenant_rls_sql("half_done")]
    stmts = [s for s in stmts if "FORCE" not in s]
    problems = await _audit(owner_url, stmts)
    assert problems == ["half_done: row level security is not FORCEd (the owner would bypass it)"]


async def test_audit_accepts_a_table_set_up_with_the_helper(owner_url: str) -> None:
    stmts = ["CREATE TABLE done_right (id int, org_id uuid)", *enable_tenant_rls_sql("done_right")]
    assert await _audit(owner_url, stmts) == []


async def test_audit_catches_a_policy_that_ignores_the_tenant(owner_url: str) -> None:
    stmts = [
        "CREATE TABLE wide_open (id int, org_id uuid)",
        "ALTER TABLE wide_open ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE wide_open FORCE ROW LEVEL SECURITY",
        "CREATE POLICY tenant_isolation ON wide_open USING (true)",
    ]
    assert await _audit(owner_url, stmts) == ["wide_open: tenant_isolation policy does not compare with app.org_id"]


async def test_app_role_is_neither_superuser_nor_bypassrls(owner_conn: asyncpg.Connection) -> None:
    row = await owner_conn.fetchrow("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", APP_ROLE)
    assert row is not None and row["rolsuper"] is False and row["rolbypassrls"] is False


async def test_app_connects_as_the_app_role(db: async_sessionmaker[AsyncSession]) -> None:
    async with db() as s:
        assert (await s.execute(text("select current_user"))).scalar_one() == APP_ROLE


async def _two_orgs(db: async_sessionmaker[AsyncSession]) -> tuple[uuid.UUID, uuid.UUID]:
    a, b = uuid.uuid4(), uuid.uuid4()
    async with unscoped_session(db, reason="test setup") as s:
        s.add_all([Org(id=a, slug=f"a-{a.hex[:6]}", name="A"), Org(id=b, slug=f"b-{b.hex[:6]}", name="B")])
    return a, b


async def test_scoped_session_sees_only_its_own_org(db: async_sessionmaker[AsyncSession]) -> None:
    a, _b = await _two_orgs(db)
    async with tenant_session(db, TenantScope.for_system(a, "test")) as s:
        ids = set((await s.execute(select(Org.id))).scalars())
    assert ids == {a}


async def test_session_without_scope_sees_no_tenant_rows(db: async_sessionmaker[AsyncSession]) -> None:
    await _two_orgs(db)
    async with db() as s:
        assert (await s.execute(select(Org.id))).scalars().all() == []


async def test_pooled_connection_does_not_leak_the_previous_scope(db: async_sessionmaker[AsyncSession]) -> None:
    a, _ = await _two_orgs(db)
    for _ in range(3):  # the pool hands back the same connection; the local setting must be gone
        async with tenant_session(db, TenantScope.for_system(a, "test")) as s:
            await s.execute(select(Org.id))
        async with db() as s:
            assert (await s.execute(select(Org.id))).scalars().all() == []


async def test_scoped_session_cannot_write_another_orgs_row(db: async_sessionmaker[AsyncSession]) -> None:
    a, _ = await _two_orgs(db)
    intruder = uuid.uuid4()
    with pytest.raises(DBAPIError, match="row-level security"):
        async with tenant_session(db, TenantScope.for_system(a, "test")) as s:
            s.add(Org(id=intruder, slug="intruder", name="X"))
    async with unscoped_session(db, reason="test check") as s:
        assert (await s.execute(select(Org).where(Org.id == intruder))).first() is None


async def test_unscoped_session_needs_a_reason(db: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(ValueError, match="reason"):
        async with unscoped_session(db, reason=""):
            pass
