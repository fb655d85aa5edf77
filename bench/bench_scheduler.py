"""The metascheduler: placements per second, and submit-to-dispatched latency.

1. Placement. 100 orgs with 10 attached clusters each (1,000 clusters; per cluster 2 CPU nodes of 32
   vCPU and 2 GPU nodes with 8 A100 each, tainted) and 100 queued jobs each (10,000 jobs: 80 % CPU jobs
   of 1-16 vCPU, 20 % GPU jobs of 1-4 A100), so some wait and their reasons are computed too.
   * ``scheduler.pass_placements_per_s``: the pure placement pass over the in-memory snapshot. Baseline:
     a naive first-fit over the same snapshot (every job scans every node of its org, no cursor, bounds
     or memo) in the same run.
   * ``scheduler.full_pass_placements_per_s``: the same pass with the database: snapshot read, placement
     and the compare-and-set commit of every placement (one ``UPDATE ... FROM unnest``) plus the waiting
     reasons. Baseline: a bare ``UPDATE jobs SET state = 'placed' WHERE id = ANY(...)`` of as many rows.
2. Latency. The real gateway in process, a Temporal worker running the scheduler and the job lifecycle
   workflows, one attached cluster: from the start of ``POST /jobs`` to the ``start_job`` command row's
   insert (seen by ``LISTEN`` on the cluster's command channel). Baseline: a bare ``INSERT`` round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import msgspec
from temporalio.worker import Worker

from bench.context import BenchContext
from bench.load import percentile
from bench.report import Figure
from connectors.protocol import GpuCapacity, Inventory, NodeInventory, Taint
from connectors.server.capacity import summarize
from connectors.server.commands import channel_for
from connectors.server.jobs.placement import OrgState, PassOptions, PendingJob, place_all
from connectors.server.jobs.reasons import gpu_matches
from connectors.server.jobs.scheduler import run_pass
from connectors.server.jobs.snapshot import read_snapshot
from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.credentials import format_api_key
from tenants.db import create_app_engine, create_sessionmaker, unscoped_session
from tenants.security import hash_token, new_token
from workflows.jobs.activities import plan_caps
from workflows.jobs.client import ensure_scheduler, scheduler_workflow_id
from workflows.jobs.types import SchedulerInput
from workflows.registry import Dependencies, build_registry

GiB = 1 << 30
ORGS, CLUSTERS_PER_ORG, JOBS_PER_ORG = 100, 10, 100
_json = msgspec.json.Encoder()


def cluster_inventory() -> Inventory:
    cpu = [NodeInventory(name=f"cpu-{i}", cpu_allocatable_millis=32_000, memory_allocatable_bytes=128 * GiB,
                         cpu_allocated_millis=2_000, memory_allocated_bytes=4 * GiB) for i in range(2)]
    gpu = [NodeInventory(name=f"gpu-{i}", cpu_allocatable_millis=96_000, memory_allocatable_bytes=1000 * GiB,
                         gpus=[GpuCapacity(resource="nvidia.com/gpu", model="A100-SXM4-80GB", allocatable=8)],
                         taints=[Taint(key="nvidia.com/gpu", effect="NoSchedule", value="present")],
                         labels={"nvidia.com/gpu.product": "A100-SXM4-80GB"}) for i in range(2)]
    return Inventory(nodes=cpu + gpu)


async def _seed(owner_dsn: str, orgs: int, clusters: int, jobs: int) -> list[uuid.UUID]:
    rng = random.Random(5)
    now = datetime.now(UTC)
    inv = cluster_inventory()
    s = summarize(inv)
    inv_json, gpus_json = _json.encode(inv).decode(), _json.encode(s.gpus_by_type).decode()
    conn = await asyncpg.connect(owner_dsn)
    org_ids = [uuid.uuid4() for _ in range(orgs)]
    try:
        await conn.copy_records_to_table("orgs", columns=["id", "slug", "name", "plan"],
                                         records=[(o, f"bench-{o.hex[:10]}", "Bench", "payg") for o in org_ids])
        cluster_rows, inv_rows, job_rows = [], [], []
        for o in org_ids:
            for c in range(clusters):
                cid = uuid.uuid4()
                cluster_rows.append((cid, o, f"c{c}", "eks", "eu-west-1", "{}", "attached", "", now, now))
                inv_rows.append((cid, o, now, s.node_count, s.cpu_total_millis, s.cpu_allocated_millis,
                                 s.memory_total_bytes, s.memory_allocated_bytes, s.gpu_total, s.gpu_allocated, 0, 0,
                                 gpus_json, inv_json))
            for j in range(jobs):
                gpu = rng.random() < 0.2
                cpu = rng.choice((1, 2, 4, 8, 16)) * 1000
                job_rows.append((uuid.uuid4(), o, f"job-{j}", "member", "busybox", "[]", "[]", "{}", cpu,
                                 cpu // 1000 * 2 * GiB, rng.randint(1, 4) if gpu else 0, "A100" if gpu else None,
                                 '{"mode": "auto"}', rng.randint(0, 100), "requeue", 0, "queued", "", 0, now, now, now))
        await conn.copy_records_to_table("clusters", columns=[
            "id", "org_id", "name", "provider", "region", "labels", "state", "state_reason", "state_changed_at",
            "created_at"], records=cluster_rows)
        await conn.copy_records_to_table("cluster_inventories", columns=[
            "cluster_id", "org_id", "reported_at", "node_count", "cpu_total_millis", "cpu_allocated_millis",
            "memory_total_bytes", "memory_allocated_bytes", "gpu_total", "gpu_allocated", "storage_total_bytes",
            "storage_allocated_bytes", "gpus_by_type", "inventory"], records=inv_rows)
        await conn.copy_records_to_table("jobs", columns=[
            "id", "org_id", "name", "submitted_role", "image", "command", "args", "env", "cpu_millis", "memory_bytes",
            "gpus", "gpu_type", "placement", "priority", "on_lost", "lost_count", "state", "reason",
            "placement_version", "queued_at", "updated_at", "created_at"], records=job_rows)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return org_ids


def naive_first_fit(orgs: dict[str, OrgState], jobs: list[PendingJob]) -> int:
    """Every job scans every node of its org in order; the first that fits takes it."""
    placed = 0
    for job in sorted(jobs, key=lambda j: (-j.priority, j.queued_at)):
        org = orgs[job.org_id]
        done = False
        for cluster in org.clusters:
            for node in cluster.nodes:
                if node.cpu_free < job.cpu_millis or node.memory_free < job.memory_bytes:
                    continue
                if job.gpus:
                    slot = next((s for s in node.gpus if s.free >= job.gpus and gpu_matches(s.resource, s.model,
                                                                                             job.gpu_type)), None)
                    if slot is None:
                        continue
                    slot.free -= job.gpus
                elif node.gpu_tainted:
                    continue
                node.cpu_free -= job.cpu_millis
                node.memory_free -= job.memory_bytes
                placed += 1
                done = True
                break
            if done:
                break
    return placed


async def _placement(ctx: BenchContext) -> list[Figure]:
    settings = await ctx.settings()
    orgs = ctx.scale(full=ORGS, quick=20)
    await _seed(settings.owner_database_url, orgs, CLUSTERS_PER_ORG, JOBS_PER_ORG)
    engine = create_app_engine(settings)
    sessions = create_sessionmaker(engine)
    try:
        async with unscoped_session(sessions, reason="bench: snapshot") as s:
            snap = await read_snapshot(s, plan_caps)
        async with unscoped_session(sessions, reason="bench: snapshot") as s:
            snap_naive = await read_snapshot(s, plan_caps)
        now = time.time()
        started = time.perf_counter()
        result = place_all(snap.orgs, snap.jobs, now, PassOptions())
        pure_s = time.perf_counter() - started
        started = time.perf_counter()
        naive_placed = naive_first_fit(snap_naive.orgs, snap_naive.jobs)
        naive_s = time.perf_counter() - started
        report = await run_pass(sessions, caps_provider=plan_caps)
        full_s = report.read_s + report.place_s + report.commit_s
        ids = [uuid.UUID(p.job_id) for p in report.placed]
        conn = await asyncpg.connect(settings.owner_database_url)
        try:
            started = time.perf_counter()
            await conn.execute("UPDATE jobs SET state = 'placed' WHERE id = ANY($1::uuid[])", ids)
            bare_s = time.perf_counter() - started
        finally:
            await conn.close()
    finally:
        await engine.dispose()
    print(f"  {orgs * CLUSTERS_PER_ORG} clusters, {len(snap.jobs)} queued: pass placed {len(result.placements)} "
          f"(naive {naive_placed}), {len(result.waiting)} wait with reasons; full pass: read {report.read_s:.3f} s, "
          f"place {report.place_s:.3f} s, commit {report.commit_s:.3f} s", file=sys.stderr)
    return [
        Figure("scheduler.pass_placements_per_s", len(result.placements) / pure_s, "placements/s",
               "scheduler.naive_first_fit_placements_per_s", naive_placed / naive_s,
               goal=f"{orgs * CLUSTERS_PER_ORG} clusters, {len(snap.jobs)} pending jobs, reasons included"),
        Figure("scheduler.full_pass_placements_per_s", len(report.placed) / full_s, "placements/s",
               "scheduler.bare_bulk_update_rows_per_s", len(ids) / bare_s if bare_s else None,
               goal="snapshot read + placement + compare-and-set commit"),
    ]


async def _api_key(owner_dsn: str) -> tuple[str, str, uuid.UUID]:
    org_id, user_id, cluster_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    slug = f"lat-{org_id.hex[:8]}"
    prefix = new_token()[:8].lower().replace("-", "a").replace("_", "b")
    raw = format_api_key(prefix, new_token())
    inv = Inventory(nodes=[NodeInventory(name="n", cpu_allocatable_millis=10**9, memory_allocatable_bytes=1 << 50)])
    s = summarize(inv)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute("INSERT INTO orgs (id, slug, name, plan) VALUES ($1, $2, 'Latency', 'payg')", org_id, slug)
        await conn.execute("INSERT INTO users (id, email, name) VALUES ($1, $2, 'bench')", user_id, f"{slug}@bench")
        await conn.execute("INSERT INTO memberships (id, org_id, user_id, role) VALUES ($1, $2, $3, 'member')",
                           uuid.uuid4(), org_id, user_id)
        await conn.execute("INSERT INTO api_keys (id, org_id, name, prefix, secret_hash, role, created_by) "
                           "VALUES ($1, $2, 'bench', $3, $4, 'member', $5)", uuid.uuid4(), org_id, "mc_" + prefix,
                           hash_token(raw), user_id)
        await conn.execute("INSERT INTO clusters (id, org_id, name, provider, region, labels, state, state_reason, "
                           "state_changed_at) VALUES ($1, $2, 'lat', 'eks', '', '{}', 'attached', '', $3)",
                           cluster_id, org_id, now)
        await conn.execute(
            "INSERT INTO cluster_inventories (cluster_id, org_id, reported_at, node_count, cpu_total_millis, "
            "cpu_allocated_millis, memory_total_bytes, memory_allocated_bytes, gpu_total, gpu_allocated, "
            "storage_total_bytes, storage_allocated_bytes, gpus_by_type, inventory) "
            "VALUES ($1, $2, $3, 1, $4, 0, $5, 0, 0, 0, 0, 0, '{}', $6)", cluster_id, org_id, now,
            s.cpu_total_millis, s.memory_total_bytes, _json.encode(inv).decode())
    finally:
        await conn.close()
    return slug, raw, cluster_id


@contextlib.asynccontextmanager
async def _explain_timeout(owner: Any, job_id: str) -> Any:
    try:
        yield
    except TimeoutError:
        row = await owner.fetchrow("SELECT state, reason FROM jobs WHERE id = $1", uuid.UUID(job_id))
        raise AssertionError(f"job {job_id} not dispatched within 30 s: {dict(row) if row else 'missing'}") from None


async def _latency(ctx: BenchContext) -> list[Figure]:
    settings = (await ctx.settings()).with_(temporal_task_queue=f"bench-{uuid.uuid4().hex[:6]}")
    client = await ctx.temporal()
    settings = settings.with_(temporal_address=client.service_client.config.target_host)
    owner = await asyncpg.connect(settings.owner_database_url)
    await owner.execute("DELETE FROM jobs")  # the placement benchmark's queue would be in every pass
    slug, key, cluster_id = await _api_key(settings.owner_database_url)
    engine = create_app_engine(settings)
    sessions = create_sessionmaker(engine)
    registry = build_registry(Dependencies(settings=settings, sessions=sessions))
    worker = Worker(client, task_queue=settings.temporal_task_queue, workflows=list(registry.workflows),
                    activities=list(registry.activities), max_concurrent_activities=200)
    app = create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=client))
    samples = ctx.scale(full=200, quick=30)
    latencies: list[float] = []
    wake = asyncio.Event()
    listener = await asyncpg.connect(settings.owner_database_url)
    await listener.add_listener(channel_for(cluster_id), lambda *_: wake.set())
    body: dict[str, Any] = {"name": "lat", "image": "busybox", "command": ["true"], "resources": {"cpu": 0.1,
                                                                                                  "memory": "64Mi"}}
    try:
        async with worker, app.lifespan():
            await ensure_scheduler(client, settings.temporal_task_queue, SchedulerInput(period_s=1.0))
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                headers = {"Authorization": f"Bearer {key}"}
                for i in range(samples + 5):
                    started = datetime.now(UTC)
                    resp = await http.post(f"/api/v1/orgs/{slug}/jobs", json=body, headers=headers)
                    assert resp.status_code == 201, resp.text
                    job_id = resp.json()["id"]
                    inserted_at = None
                    async with _explain_timeout(owner, job_id), asyncio.timeout(30):
                        while inserted_at is None:
                            # the command channel also carries status polls: check the start_job row itself
                            inserted_at = await owner.fetchval(
                                "SELECT created_at FROM agent_commands WHERE dedupe_key = $1 AND kind = 'start_job'",
                                job_id)
                            if inserted_at is None:
                                wake.clear()
                                with contextlib.suppress(TimeoutError):
                                    await asyncio.wait_for(wake.wait(), 0.05)
                    if i >= 5:  # warm-up: workers, pools, prepared statements
                        latencies.append((inserted_at - started).total_seconds())
                    # No agent answers here: cancel so its workflow stops polling (and loading this process).
                    await http.post(f"/api/v1/orgs/{slug}/jobs/{job_id}/cancel", headers=headers)
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(scheduler_workflow_id(settings.temporal_task_queue)).terminate()
        inserts: list[float] = []
        await owner.execute("CREATE TEMP TABLE bench_rt (id uuid PRIMARY KEY, at timestamptz)")
        for _ in range(samples):
            t0 = time.perf_counter()
            await owner.execute("INSERT INTO bench_rt VALUES ($1, now())", uuid.uuid4())
            inserts.append(time.perf_counter() - t0)
    finally:
        await listener.close()
        await owner.close()
        await engine.dispose()
    return [
        Figure("scheduler.submit_to_dispatched_p50", percentile(latencies, 50) * 1000, "ms",
               "scheduler.bare_insert_round_trip_p50", percentile(inserts, 50) * 1000, higher_is_better=False,
               goal="API submit -> start_job command row"),
        Figure("scheduler.submit_to_dispatched_p99", percentile(latencies, 99) * 1000, "ms",
               "scheduler.bare_insert_round_trip_p99", percentile(inserts, 99) * 1000, higher_is_better=False),
    ]


async def run(ctx: BenchContext) -> list[Figure]:
    return [*await _placement(ctx), *await _latency(ctx)]
