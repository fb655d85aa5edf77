"""Usage ingest throughput: records/s through ``POST /agent/v1/usage`` against a raw COPY of the same rows.

The records are what agents send: 2 resources (vCPU, memory) x 60-s windows of jobs on 4 clusters, in
batches of 5,000 (the agent's default), each batch pre-encoded as the agent's spool stores it. Four
agents upload at once, each waiting for its answer before the next batch (the agent's backpressure).
Every batch goes the whole way: credential check, JSON decoding, validation (units, windows, job on the
cluster, deterministic ids), COPY into staging, insert with dedupe into the partitioned table and the
hourly rollup upsert, one transaction each, in-process over ASGI (no TLS or sockets).

The baseline, in the same run and database: one ``COPY`` of the identical rows into ``usage_records``
as the table owner (no validation, no dedupe, no rollups), then the table is emptied for the real run.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import msgspec

from bench.context import BenchContext
from bench.report import Figure
from connectors.agent.spool import Subject
from connectors.agent.usage import UsageRecord, window_records
from connectors.protocol import AGENT_VERSION, AGENT_VERSION_HEADER
from connectors.server.credentials import format_credential
from gateway.app import create_app
from tenants.db import create_app_engine

AGENTS = 4
BATCH = 5_000
GiB = 1 << 30


async def _seed(dsn: str, jobs_per_cluster: int) -> tuple[uuid.UUID, list[tuple[uuid.UUID, str, list[uuid.UUID]]]]:
    org_id = uuid.uuid4()
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    clusters = []
    try:
        await conn.execute("INSERT INTO orgs (id, slug, name, plan) VALUES ($1, $2, 'Bench', 'payg')", org_id,
                           f"bench-{org_id.hex[:8]}")
        for i in range(AGENTS):
            # a random prefix: other benchmarks share this database and its unique credential prefixes
            pid = secrets.token_hex(4)
            cid, raw = uuid.uuid4(), format_credential(pid, secrets.token_urlsafe(32))
            await conn.execute("INSERT INTO clusters (id, org_id, name, provider, region, labels, state, state_reason, "
                               "state_changed_at, created_at) VALUES ($1, $2, $3, 'eks', 'x', '{}', 'attached', '', "
                               "$4, $4)", cid, org_id, f"c{i}", now)
            await conn.execute("INSERT INTO cluster_credentials (id, org_id, cluster_id, prefix, secret_hash, "
                               "created_at) VALUES ($1, $2, $3, $4, $5, $6)", uuid.uuid4(), org_id, cid,
                               f"mca_{pid}", hashlib.sha256(raw.encode()).hexdigest(), now)
            job_ids = [uuid.uuid4() for _ in range(jobs_per_cluster)]
            await conn.copy_records_to_table(
                "jobs", columns=["id", "org_id", "name", "cpu_millis", "memory_bytes", "gpus", "state", "reason",
                                 "cluster_id", "queued_at", "updated_at", "created_at", "submitted_role", "command",
                                 "args", "env", "placement", "priority", "on_lost", "lost_count", "placement_version"],
                records=[(j, org_id, "train", 4000, 16 * GiB, 0, "running", "", cid, now, now, now, "member", "[]",
                          "[]", "{}", "{}", 50, "requeue", 0, 0) for j in job_ids])
            clusters.append((cid, raw, job_ids))
    finally:
        await conn.close()
    return org_id, clusters


def _records(job_ids: list[uuid.UUID], windows: int, start: int) -> list[UsageRecord]:
    subjects = [Subject(subject=str(j), kind="job", spec={"cpu_millis": 4000, "memory_bytes": 16 * GiB, "gpus": 0},
                        started_at=start, metered_until=None, finished_at=None) for j in job_ids]
    out: list[UsageRecord] = []
    for w in range(windows):
        for s in subjects:
            out += window_records(s, start + 60 * w, start + 60 * (w + 1))
    return out


def _bodies(records: list[UsageRecord]) -> list[bytes]:
    enc = msgspec.json.Encoder()
    return [b'{"records":[' + b",".join(enc.encode(r) for r in records[i:i + BATCH]) + b"]}"
            for i in range(0, len(records), BATCH)]


async def _raw_copy(dsn: str, org_id: uuid.UUID, per_cluster: list[tuple[uuid.UUID, list[UsageRecord]]]) -> float:
    now = datetime.now(UTC)
    rows = [(uuid.UUID(r.id), r.window_start, r.window_end, org_id, cid, uuid.UUID(r.job_id or ""), None, r.resource,
             r.gpu_type, r.allocated, r.quantity, now, False) for cid, recs in per_cluster for r in recs]
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("usage_records", records=rows, columns=[
            "id", "window_start", "window_end", "org_id", "cluster_id", "job_id", "volume", "resource", "gpu_type",
            "allocated", "quantity", "ingested_at", "late"])
        elapsed = time.perf_counter() - started
        await conn.execute("TRUNCATE usage_records, usage_hourly")
    finally:
        await conn.close()
    return len(rows) / elapsed


async def run(ctx: BenchContext) -> list[Figure]:
    settings = await ctx.settings()
    dsn = settings.owner_database_url
    windows = ctx.scale(full=500, quick=100)
    jobs_per_cluster = 25
    total = AGENTS * jobs_per_cluster * windows * 2
    now = int(datetime.now(UTC).timestamp())
    start = now - now % 3600 - 3600 * (windows // 60 + 2)
    org_id, clusters = await _seed(dsn, jobs_per_cluster)
    per_cluster = [(cid, _records(jobs, windows, start)) for cid, _, jobs in clusters]
    bodies = [(raw, _bodies(recs)) for (_, raw, _), (_, recs) in zip(clusters, per_cluster, strict=True)]

    copy_rate = await _raw_copy(dsn, org_id, per_cluster)

    engine = create_app_engine(settings)
    app = create_app(settings, engine=engine)
    try:
        async with app.lifespan():
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as client:

                async def agent(credential: str, batches: list[bytes]) -> int:
                    # the agent's headers (connectors.agent.usage.client_sender): no gzip of the id list
                    headers = {AGENT_VERSION_HEADER: AGENT_VERSION, "authorization": f"Bearer {credential}",
                               "content-type": "application/json", "accept-encoding": "identity"}
                    stored = 0
                    for b in batches:  # the next batch only after the answer, as the agent does
                        resp = await client.post("/agent/v1/usage", content=b, headers=headers)
                        if resp.status_code != 200 or resp.json()["rejected"]:
                            raise RuntimeError(f"upload failed: {resp.status_code} {resp.text[:300]}")
                        stored += resp.json()["stored"]
                    return stored

                started = time.perf_counter()
                stored = sum(await asyncio.gather(*[agent(raw, b) for raw, b in bodies]))
                elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    if stored != total:
        raise RuntimeError(f"stored {stored} of {total} records")
    http_rate = total / elapsed
    return [
        Figure(name=f"usage ingest, POST /agent/v1/usage ({total:,} records, {AGENTS} agents, batches of {BATCH:,})",
               value=round(http_rate), unit="records/s", baseline_name="raw COPY of the same rows",
               baseline_value=round(copy_rate), goal="ratio <= 2.86 (at least 0.35 of raw COPY)"),
    ]
