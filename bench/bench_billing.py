"""Closing a billing period: 1,000 orgs and 10 million raw usage records, beside a plain SQL aggregation.

Data: ``orgs`` Pay-as-you-go orgs and ``records`` raw usage records of last month (one-minute windows of
vCPU, memory and GPU for several jobs per org, levels around the free allowance), generated in SQL with
``generate_series`` straight into the partitioned ``usage_records`` (indexes dropped during the load and
rebuilt after, then ``ANALYZE``; the ids are sequential, so the primary key is appended to, not scattered).

Measured: the close as the ``billing.close-period`` workflow's ledger step does it, for every org:
``BillingActivities.write_invoice`` (metering's close marker, billable usage through the exact free
allowance sweep over raw records, rating per hour on the rate card, late usage, the invoice and its lines
written, then issued), 8 orgs at a time as the worker would run the fan-out. The Stripe push is not in
the figure (the stand-in answers in ~20 ms a call; a push is ~8 calls per invoice). Baseline: one plain SQL
``GROUP BY org, resource, GPU type`` summing the same rows. The ratio reads "times slower than the plain
aggregation".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from bench.context import BenchContext
from bench.report import Figure
from billing.ledger.periods import Period, previous_period
from billing.usage.partitions import partition_name
from tenants.db import create_app_engine, create_sessionmaker
from workflows.billing.activities import BillingActivities
from workflows.billing.types import WriteInput

__all__ = ["run"]

_CONCURRENCY = 8
_LOADERS = 2  # one per core of the reference machine

# One row per (org, k): resource = k % 3 (vcpu, memory, gpu); four jobs per org run one-minute windows
# back to back from the 2nd of the month, so the org's level crosses the free allowance now and then.
_LOAD = """
INSERT INTO {partition} (id, window_start, window_end, org_id, cluster_id, job_id, resource, gpu_type,
                           allocated, quantity, ingested_at, late)
SELECT ('b111' || lpad(to_hex(i), 28, '0'))::uuid, ws, ws + interval '60 seconds', o.id, o.id, o.id,
       (ARRAY['vcpu', 'memory', 'gpu'])[1 + k % 3], CASE WHEN k % 3 = 2 THEN 'A100' ELSE '' END,
       lvl, lvl * 60, ws, false
  FROM generate_series($1::bigint, $2::bigint - 1) AS i
  JOIN bench_billing_orgs o ON o.n = i % $3
 CROSS JOIN LATERAL (SELECT i / $3 AS k) kk
 CROSS JOIN LATERAL (SELECT $4::timestamptz + interval '1 day'
                            + ((k / 3) / 4) * interval '60 seconds' AS ws,
                            CASE k % 3 WHEN 0 THEN 1000 * (1 + (k / 3) % 4) * (1 + i % 3)
                                       WHEN 1 THEN (2 + (k / 3) % 4) * 1073741824::bigint * (1 + i % 2)
                                       ELSE 1 END AS lvl) w
"""


async def _load(dsn: str, conn: asyncpg.Connection, period: Period, orgs: int, records: int) -> list[uuid.UUID]:
    await conn.execute("DROP TABLE IF EXISTS bench_billing_orgs")
    await conn.execute("CREATE UNLOGGED TABLE bench_billing_orgs (id uuid, n int)")
    ids = [uuid.uuid4() for _ in range(orgs)]
    await conn.copy_records_to_table("bench_billing_orgs", records=[(i, n) for n, i in enumerate(ids)])
    await conn.execute("ANALYZE bench_billing_orgs")
    await conn.execute(
        "INSERT INTO orgs (id, slug, name, plan, status, created_at) SELECT id, 'bench-billing-' || n, "
        "'Bench ' || n, 'payg', 'active', now() - interval '400 days' FROM bench_billing_orgs")
    # Indexes are rebuilt after the load (measured: 4 s per million rows without them, ~7 s with the key),
    # and the rows go straight into the month's partition from one connection per core.
    await conn.execute("ALTER TABLE usage_records DROP CONSTRAINT pk_usage_records")
    await conn.execute("DROP INDEX IF EXISTS ix_usage_records_org_id_window_start")
    sql = _LOAD.format(partition=partition_name(period.start.date()))
    step = -(-records // _LOADERS)

    async def part(lo: int) -> None:
        c = await asyncpg.connect(dsn)
        try:
            await c.execute("SET synchronous_commit = off")
            await c.execute(sql, lo, min(records, lo + step), orgs, period.start)
        finally:
            await c.close()

    await asyncio.gather(*(part(lo) for lo in range(0, records, step)))
    await conn.execute("ALTER TABLE usage_records ADD CONSTRAINT pk_usage_records PRIMARY KEY (id, window_start)")
    await conn.execute("CREATE INDEX ix_usage_records_org_id_window_start ON usage_records (org_id, window_start)")
    await conn.execute("ANALYZE usage_records")
    await conn.execute("DROP TABLE bench_billing_orgs")
    return ids


async def run(ctx: BenchContext) -> list[Figure]:
    orgs = ctx.scale(1000, 100)
    records = ctx.scale(10_000_000, 300_000)
    settings = await ctx.settings()
    period = previous_period(datetime.now(UTC))
    dsn = settings.owner_database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        ids = await _load(dsn, conn, period, orgs, records)
        load_s = time.perf_counter() - started

        started = time.perf_counter()
        rows = await conn.fetch(
            "SELECT org_id, resource, gpu_type, sum(quantity) FROM usage_records WHERE window_start >= $1 "
            "AND window_start < $2 AND org_id = ANY($3::uuid[]) GROUP BY 1, 2, 3", period.start, period.end, ids)
        sql_s = time.perf_counter() - started
        assert len(rows) == 3 * orgs

        engine = create_app_engine(settings.with_(db_pool_size=_CONCURRENCY))
        acts = BillingActivities(create_sessionmaker(engine), settings)
        gate = asyncio.Semaphore(_CONCURRENCY)
        at = datetime.now(UTC).isoformat()

        async def close(org_id: uuid.UUID) -> int:
            async with gate:
                written = await acts.write_invoice(WriteInput(org_id=str(org_id), period=period, at=at))
                return written.total_cents

        started = time.perf_counter()
        totals = await asyncio.gather(*(close(i) for i in ids))
        close_s = time.perf_counter() - started
        await engine.dispose()
        assert all(t > 0 for t in totals), "every org has billable usage"
        invoices = await conn.fetchval("SELECT count(*) FROM invoices WHERE org_id = ANY($1::uuid[])", ids)
        assert invoices == orgs
    finally:
        await conn.close()
    scale = f"{orgs:,} orgs, {records / 1e6:g} M records"
    return [
        Figure(name=f"billing: close a period ({scale})", value=close_s, unit="s", higher_is_better=False,
               baseline_name="plain SQL sum over the same rows", baseline_value=sql_s,
               goal="ratio: the exact allowance sweep + rating + ledger writes vs one GROUP BY"),
        Figure(name=f"billing: per org close ({scale})", value=close_s / orgs * 1000, unit="ms",
               higher_is_better=False),
        Figure(name=f"billing: generating the rows ({scale})", value=load_s, unit="s", higher_is_better=False),
    ]
