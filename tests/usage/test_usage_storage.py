"""Storage of usage: partitions under RLS, retention, rollup rebuilds, and late usage after a close."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from billing.usage.partitions import (
    drop_expired_partitions,
    forget_known_partitions,
    maintain,
    partition_name,
)
from billing.usage.periods import Period, mark_period_closed
from billing.usage.queries import billable_usage, late_usage_since
from billing.usage.rates import card_timeline
from billing.usage.rollups import compare_rollups
from gateway.cli import main as cli_main
from tenants.db import tenant_session, unscoped_session
from tenants.rls import audit_rls
from tenants.scope import TenantScope
from tenants.settings import Settings
from tests.factories import MadeOrg, make_org
from tests.usage.helpers import AgentCluster, GiB, body, hour_ago, job_subject, make_jobs, records


async def _ingest(http: httpx.AsyncClient, c: AgentCluster, recs: list) -> dict:  # type: ignore[type-arg]
    resp = await http.post("/agent/v1/usage", content=body(recs), headers=c.headers())
    assert resp.status_code == 200 and not resp.json()["rejected"], resp.text
    answer: dict = resp.json()  # type: ignore[type-arg]
    return answer


async def test_every_usage_partition_is_under_forced_rls_including_ones_made_later(
        db: async_sessionmaker[AsyncSession], owner_url: str, owner_conn: asyncpg.Connection, org: MadeOrg,
        cluster: AgentCluster, http: httpx.AsyncClient) -> None:
    far = date(2031, 1, 1)
    forget_known_partitions()
    try:
        async with unscoped_session(db, reason="test: a partition made by the app role") as s:
            await s.execute(text("SELECT usage_ensure_partition(:m)"), {"m": far})
            await maintain(s, retention_days=400)
        engine = create_async_engine(Settings().sqlalchemy_url(owner_url), poolclass=NullPool)
        async with engine.connect() as conn:
            problems = await conn.run_sync(audit_rls)
        await engine.dispose()
        assert problems == []
        parts = await owner_conn.fetch("SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_inherits i "
                                       "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'usage_records'::regclass")
        assert partition_name(far) in {p["relname"] for p in parts}
        assert all(p["relrowsecurity"] and p["relforcerowsecurity"] for p in parts)
        # read the partition directly as another org: nothing
        (job,) = await make_jobs(db, cluster, 1)
        await _ingest(http, cluster, records([job_subject(job)], hour_ago(1), 2))
        month = datetime.fromtimestamp(hour_ago(1), UTC)
        stranger = await make_org(db)
        for who, expected in ((stranger.id, 0), (org.id, 4)):
            async with tenant_session(db, TenantScope.for_system(who, "test")) as s:
                n = (await s.execute(text(f'SELECT count(*) FROM "{partition_name(month)}"'))).scalar_one()
            assert n == expected
    finally:
        await owner_conn.execute(f'DROP TABLE IF EXISTS "{partition_name(far)}"')
        forget_known_partitions()


async def test_retention_drops_old_raw_partitions_and_keeps_rollups(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, org: MadeOrg) -> None:
    old = date(2020, 3, 1)
    async with unscoped_session(db, reason="test") as s:
        await s.execute(text("SELECT usage_ensure_partition(:m)"), {"m": old})
    at = datetime(2020, 3, 5, 10, tzinfo=UTC)
    await owner_conn.execute(
        "INSERT INTO usage_records VALUES ($1, $2, $3, $4, $5, $6, NULL, 'vcpu', '', 1000, 60000, $2, false)",
        uuid.uuid4(), at, at + timedelta(minutes=1), org.id, uuid.uuid4(), uuid.uuid4())
    await owner_conn.execute("INSERT INTO usage_hourly VALUES ($1, $2, $3, 'vcpu', '', 60000, 1)", org.id, at,
                             uuid.uuid4())
    async with unscoped_session(db, reason="test: retention") as s:
        dropped = await drop_expired_partitions(s, now=datetime.now(UTC), retention_days=400)
    assert partition_name(old) in dropped
    assert partition_name(datetime.now(UTC)) not in dropped
    assert await owner_conn.fetchval("SELECT to_regclass($1) IS NULL", partition_name(old))
    assert await owner_conn.fetchval("SELECT sum(quantity) FROM usage_hourly WHERE org_id = $1", org.id) == 60000


async def test_rebuild_rollups_command_restores_what_raw_records_say(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        cluster: AgentCluster, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    jobs = await make_jobs(db, cluster, 2)
    await _ingest(http, cluster, records([job_subject(j) for j in jobs], hour_ago(3) + 1800, 60))
    await owner_conn.execute("UPDATE usage_hourly SET quantity = quantity + 1")  # a bug we want to repair
    await owner_conn.execute("DELETE FROM usage_hourly WHERE resource = 'memory'")
    monkeypatch.setenv("DATABASE_URL", settings.owner_database_url)
    assert await asyncio.to_thread(cli_main, ["usage-admin", "rebuild-rollups", "--check"]) == 1
    assert "rollup rows differ" in capsys.readouterr().out
    assert await asyncio.to_thread(cli_main, ["usage-admin", "rebuild-rollups"]) == 0
    async with unscoped_session(db, reason="test: compare rollups") as s:
        assert await compare_rollups(s) == []
    assert await asyncio.to_thread(cli_main, ["usage-admin", "rebuild-rollups", "--check"]) == 0


async def test_usage_arriving_after_a_close_is_flagged_and_carried_exactly_once(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        org: MadeOrg, cluster: AgentCluster, payg_card: None) -> None:
    start = hour_ago(3)
    (on_time,) = await make_jobs(db, cluster, 1, cpu_millis=12_000, memory_bytes=8 * GiB)
    (late,) = await make_jobs(db, cluster, 1, cpu_millis=4_000, memory_bytes=8 * GiB)
    await _ingest(http, cluster, records([job_subject(on_time, cpu_millis=12_000, memory_bytes=8 * GiB)], start, 60))
    scope = TenantScope.for_system(org.id, "billing cycle")
    month = datetime.fromtimestamp(start, UTC).date().replace(day=1)
    async with tenant_session(db, scope) as s:
        closed = await mark_period_closed(s, org.id, month)
        again = await mark_period_closed(s, org.id, month)
    assert again == closed
    answer = await _ingest(http, cluster, records([job_subject(late, cpu_millis=4_000, memory_bytes=8 * GiB)], start, 60))
    assert answer["stored"] == 120  # accepted, never dropped
    assert await owner_conn.fetchval("SELECT count(*) FROM usage_records WHERE late") == 120
    async with tenant_session(db, scope) as s:
        timeline = await card_timeline(s, org.id, "free")
        period = Period.month(month)
        as_closed = (await billable_usage(s, org.id, period, timeline, ingested_before=closed)).totals()
        carried = await late_usage_since(s, org.id, since=closed, timeline=timeline)
        carried_again = await late_usage_since(s, org.id, since=datetime.now(UTC), timeline=timeline)
    assert as_closed[("vcpu", "")].billable == 4000 * 3600  # 12 vCPU for an hour, 8 free: the closed invoice
    (adj,) = carried
    assert adj.period_start == month
    # the late job adds 4 vCPU at moments already above the allowance: all of it billable; its 8 GiB on top of
    # 8 GiB reach the 16 GiB allowance exactly, so no memory is billable
    assert adj.added[("vcpu", "")].billable == 4000 * 3600 and adj.added[("memory", "")].billable == 0
    assert adj.added[("memory", "")].gross == 8 * GiB * 3600
    assert adj.amount_cents == 16  # 4 vCPU-hours x $0.04
    assert carried_again == []
