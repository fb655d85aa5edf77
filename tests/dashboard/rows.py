"""Rows for dashboard and CLI tests: clusters with an inventory, and jobs in any state, written
straight to the tables (the scheduler is not what these tests are about)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.protocol import CommandResult
from connectors.server import commands
from connectors.server.jobs.models import Job, JobEvent
from connectors.server.models import Cluster, ClusterInventory
from tenants.db import unscoped_session, utcnow
from tenants.models import ApiKey
from tests.factories import MadeOrg, MadeUser, make_api_key

GiB = 1 << 30


async def make_cluster(
    db: async_sessionmaker[AsyncSession], org_id: uuid.UUID, name: str, *, state: str = "attached",
    cpu: tuple[int, int] = (64, 8), memory_gib: tuple[int, int] = (256, 16), gpus: dict[str, tuple[int, int]] | None = None,
    storage_gib: tuple[int, int] = (500, 100), heartbeat_age_s: int | None = 5, inventory: bool = True,
) -> uuid.UUID:
    """``cpu=(total, allocated)`` in vCPU, memory and storage in GiB, ``gpus={"A100": (total, allocated)}``."""
    now = utcnow()
    gpus = gpus or {}
    async with unscoped_session(db, reason="test rows") as s:
        cluster = Cluster(org_id=org_id, name=name, provider="kubernetes", region="eu", labels={}, state=state,
                          state_reason=f"{state} in a test", state_changed_at=now, runtime="kubernetes",
                          agent_version="0.1.0",
                          last_heartbeat_at=None if heartbeat_age_s is None else now - timedelta(seconds=heartbeat_age_s))
        s.add(cluster)
        await s.flush()
        if inventory:
            s.add(ClusterInventory(
                org_id=org_id, cluster_id=cluster.id, reported_at=now, node_count=2,
                cpu_total_millis=cpu[0] * 1000, cpu_allocated_millis=cpu[1] * 1000,
                memory_total_bytes=memory_gib[0] * GiB, memory_allocated_bytes=memory_gib[1] * GiB,
                gpu_total=sum(t for t, _ in gpus.values()), gpu_allocated=sum(a for _, a in gpus.values()),
                storage_total_bytes=storage_gib[0] * GiB, storage_allocated_bytes=storage_gib[1] * GiB,
                gpus_by_type={f"nvidia.com/gpu|{k}": {"total": t, "allocated": a} for k, (t, a) in gpus.items()},
                inventory={},
            ))
        return cluster.id


async def make_job(
    db: async_sessionmaker[AsyncSession], org_id: uuid.UUID, name: str, state: str, *,
    cluster_id: uuid.UUID | None = None, cpu: float = 1, memory_gib: float = 1, gpus: int = 0,
    gpu_type: str | None = None, reason: str = "", submitted_by: uuid.UUID | None = None,
    exit_code: int | None = None, priority: int = 50, **extra: Any,
) -> uuid.UUID:
    now = utcnow()
    started: datetime | None = now - timedelta(minutes=3) if state not in ("queued", "placed") else None
    finished = now if state in ("succeeded", "failed", "cancelled", "timed_out", "lost") else None
    async with unscoped_session(db, reason="test rows") as s:
        job = Job(org_id=org_id, name=name, submitted_by=submitted_by, image="busybox:1.36", command=["echo", "hi"],
                  args=[], env={}, cpu_millis=int(cpu * 1000), memory_bytes=int(memory_gib * GiB), gpus=gpus,
                  gpu_type=gpu_type, placement={"mode": "auto", "cluster": None, "region": None, "labels": {}},
                  priority=priority, state=state, reason=reason, cluster_id=cluster_id,
                  queued_at=now - timedelta(minutes=5), placed_at=None if state == "queued" else now,
                  started_at=started, finished_at=finished, exit_code=exit_code, updated_at=now, **extra)
        s.add(job)
        await s.flush()
        s.add(JobEvent(org_id=org_id, job_id=job.id, at=now - timedelta(minutes=5), state="queued",
                       reason="waiting for a cluster"))
        if state != "queued":
            s.add(JobEvent(org_id=org_id, job_id=job.id, at=now, state=state, reason=reason))
        return job.id


_PLANS = importlib.import_module("infra.migrations.versions.0008_jobs").PLANS


async def seed_plans(owner_conn: asyncpg.Connection) -> None:
    """The plans migration 0008 seeds; the suite's ``db`` fixture truncates every table after a test."""
    for name, title, order, caps in _PLANS:
        await owner_conn.execute("INSERT INTO plans (name, title, sort_order) VALUES ($1, $2, $3) "
                                 "ON CONFLICT DO NOTHING", name, title, order)
        for resource, cap in caps.items():
            await owner_conn.execute("INSERT INTO plan_entitlements (plan, resource, cap) VALUES ($1, $2, $3) "
                                     "ON CONFLICT DO NOTHING", name, resource, cap)


async def set_state(db: async_sessionmaker[AsyncSession], job_id: uuid.UUID, state: str, reason: str = "", *,
                    cluster_id: uuid.UUID | None = None, exit_code: int | None = None) -> None:
    """Move a job as the scheduler and the agent's reports would, with its timeline event."""
    now = utcnow()
    async with unscoped_session(db, reason="test rows") as s:
        job = await s.get(Job, job_id)
        assert job is not None
        job.state, job.reason, job.updated_at = state, reason, now
        if cluster_id is not None:
            job.cluster_id, job.placed_at = cluster_id, now
        if state == "running":
            job.started_at = now
        if state in ("succeeded", "failed", "cancelled", "timed_out", "lost"):
            job.finished_at, job.exit_code = now, exit_code
        s.add(JobEvent(org_id=job.org_id, job_id=job.id, at=now, state=state, reason=reason))


@contextlib.asynccontextmanager
async def log_agent(db: async_sessionmaker[AsyncSession], cluster_id: uuid.UUID, logs: str) -> AsyncIterator[None]:
    """Stands in for the cluster's agent: answers every command (``fetch_logs``) with ``logs``."""

    async def serve() -> None:
        while True:
            async with unscoped_session(db, reason="test agent") as s:
                for cmd in await commands.lease(s, cluster_id):
                    await commands.complete(s, cluster_id, uuid.UUID(cmd.id),
                                            CommandResult(ok=True, result={"logs": logs}))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(serve())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def user_key(db: async_sessionmaker[AsyncSession], org: MadeOrg, user: MadeUser, role: str = "member") -> str:
    """An API key a person made (``created_by``): jobs submitted with it are theirs."""
    key = await make_api_key(db, org, role=role)
    async with unscoped_session(db, reason="test: the key belongs to the user") as s:
        await s.execute(update(ApiKey).where(ApiKey.org_id == org.id, ApiKey.created_by.is_(None))
                        .values(created_by=user.id))
    return key
