"""The metascheduler over the real database: racing passes never place a job twice, claims not yet in
inventory count, and the lifecycle's state changes (dispatch, status, lost) do what a user would see."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.protocol import JobSpec
from connectors.server.jobs import lifecycle
from connectors.server.jobs.scheduler import commit_placements, run_pass
from connectors.server.jobs.service import submit_job
from connectors.server.jobs.spec import JobRequest, validate
from tenants.db import tenant_session, unscoped_session
from tenants.permissions import permissions_for
from tenants.scope import Principal, TenantScope
from tests.factories import make_org, make_user
from tests.jobs.conftest import cpu_nodes, gpu_nodes, make_cluster, set_plan
from workflows.jobs.activities import plan_caps


async def _org(db: async_sessionmaker[AsyncSession], plan: str = "payg") -> TenantScope:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "member"})
    await set_plan(db, org.id, plan)
    return TenantScope(org_id=org.id, principal=Principal(kind="user", id=str(user.id), display=user.email),
                       org_slug=org.slug, role="member", permissions=permissions_for("member"))


async def _submit(db: async_sessionmaker[AsyncSession], scope: TenantScope, n: int, **req: object) -> list[str]:
    ids = []
    async with tenant_session(db, scope) as s:
        for i in range(n):
            fields: dict[str, object] = {"name": f"j{i}", "image": "busybox", "cpu": 1, "memory": "1Gi", **req}
            view = await submit_job(scope, s, validate(JobRequest(**fields)), rules=None)  # type: ignore[arg-type]
            ids.append(str(view.id))
    return ids


async def _bulk(owner_conn: asyncpg.Connection, org_id: uuid.UUID, n: int) -> None:
    """Queued 1-vCPU jobs, written directly (the race is about placement, not submission)."""
    now = datetime.now(UTC)
    await owner_conn.copy_records_to_table("jobs", columns=[
        "id", "org_id", "name", "submitted_role", "command", "args", "env", "cpu_millis", "memory_bytes", "gpus",
        "placement", "priority", "on_lost", "lost_count", "state", "reason", "placement_version", "queued_at",
        "updated_at", "created_at"], records=[
        (uuid.uuid4(), org_id, f"j{i}", "member", "[]", "[]", "{}", 1000, 1 << 30, 0, '{"mode": "auto"}', 50,
         "requeue", 0, "queued", "", 0, now, now, now) for i in range(n)])


async def test_two_schedulers_racing_never_place_a_job_twice(
    db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection
) -> None:
    scope = await _org(db)
    await make_cluster(db, scope.org_id, "c1", cpu_nodes(count=2, cpus=24))
    await make_cluster(db, scope.org_id, "c2", cpu_nodes(count=2, cpus=24))
    await _bulk(owner_conn, scope.org_id, 120)
    reports = await asyncio.gather(*(run_pass(db, caps_provider=plan_caps) for _ in range(2)))
    rows = await owner_conn.fetch("SELECT j.id, j.state, j.placement_version, count(e.id) AS placed_events "
                                  "FROM jobs j LEFT JOIN job_events e ON e.job_id = j.id AND e.state = 'placed' "
                                  "GROUP BY j.id")
    placed = [r for r in rows if r["state"] == "placed"]
    assert len(placed) == 96  # 4 nodes x 24 vCPU: both passes saw the same room
    assert all(r["placement_version"] == 1 and r["placed_events"] == 1 for r in placed)
    assert sum(len(r.placed) for r in reports) == 96  # each placement won by exactly one scheduler
    waiting = [r for r in rows if r["state"] == "queued"]
    assert len(waiting) == 24


async def test_a_stale_placement_loses_the_compare_and_set(
    db: async_sessionmaker[AsyncSession]
) -> None:
    scope = await _org(db)
    cluster = await make_cluster(db, scope.org_id, "c1", cpu_nodes())
    [job_id] = await _submit(db, scope, 1)
    from connectors.server.jobs.placement import Placement
    stale = Placement(job_id=job_id, version=0, cluster_id=str(cluster), node="cpu-0")
    async with unscoped_session(db, reason="test") as s:
        assert len(await commit_placements(s, [stale])) == 1
    async with unscoped_session(db, reason="test") as s:
        assert await commit_placements(s, [stale]) == []  # version moved on: no second placement


async def test_placed_jobs_hold_capacity_before_the_inventory_shows_them(
    db: async_sessionmaker[AsyncSession]
) -> None:
    scope = await _org(db)
    await make_cluster(db, scope.org_id, "small", cpu_nodes(cpus=4))
    await _submit(db, scope, 4, cpu=2)
    first = await run_pass(db, caps_provider=plan_caps)
    second = await run_pass(db, caps_provider=plan_caps)  # same inventory: the two placed jobs still count
    assert (len(first.placed), len(second.placed)) == (2, 0)


async def test_free_plan_caps_count_across_clusters(db: async_sessionmaker[AsyncSession]) -> None:
    scope = await _org(db, plan="free")
    await make_cluster(db, scope.org_id, "a", cpu_nodes(cpus=6))
    await make_cluster(db, scope.org_id, "b", cpu_nodes(cpus=6))
    await _submit(db, scope, 3, cpu=3)
    report = await run_pass(db, caps_provider=plan_caps)
    assert len(report.placed) == 2 and report.waiting == 1


async def test_dispatch_sends_start_job_with_gpu_toleration_selector_and_limits(
    db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection
) -> None:
    scope = await _org(db)
    cluster = await make_cluster(db, scope.org_id, "gpu", gpu_nodes(free=4))
    [job_id] = await _submit(db, scope, 1, gpus=2, gpu_type="A100", priority=90)
    await run_pass(db, caps_provider=plan_caps)
    async with tenant_session(db, scope) as s:
        assert await lifecycle.dispatch(s, uuid.UUID(job_id)) == "dispatched"
    async with tenant_session(db, scope) as s:
        assert await lifecycle.dispatch(s, uuid.UUID(job_id)) == "dispatched"  # a retry changes nothing
    [cmd] = await owner_conn.fetch("SELECT kind, dedupe_key, payload::text AS payload, cluster_id FROM agent_commands")
    assert (cmd["kind"], cmd["dedupe_key"], cmd["cluster_id"]) == ("start_job", job_id, cluster)
    spec = msgspec.json.decode(cmd["payload"], type=JobSpec)
    assert (spec.gpus, spec.gpu_resource, spec.priority_class) == (2, "nvidia.com/gpu", "metacloud-high")
    assert spec.node_selector == {"nvidia.com/gpu.product": "A100-SXM4-80GB"}
    assert [(t.key, t.effect) for t in spec.tolerations] == [("nvidia.com/gpu", "NoSchedule")]


async def test_kubernetes_failures_reach_the_job_as_plain_reasons(
    db: async_sessionmaker[AsyncSession]
) -> None:
    scope = await _org(db)
    await make_cluster(db, scope.org_id, "c", cpu_nodes())
    ids = await _submit(db, scope, 4)
    await run_pass(db, caps_provider=plan_caps)
    statuses: list[dict[str, Any]] = [
        {"phase": "pending", "reason": "image pull failed: manifest unknown"},
        {"phase": "failed", "reason": "OOMKilled: the job used more memory than its limit", "exit_code": 137},
        {"phase": "failed", "reason": "ran longer than its max runtime (activeDeadlineSeconds)"},
        {"phase": "running", "started_at": datetime.now(UTC).isoformat()},
    ]
    async with tenant_session(db, scope) as s:
        for job_id in ids:
            await lifecycle.dispatch(s, uuid.UUID(job_id))
        states = [await lifecycle.apply_status(s, uuid.UUID(j), st) for j, st in zip(ids, statuses, strict=True)]
        assert states == ["dispatched", "failed", "timed_out", "running"]
    async with tenant_session(db, scope) as s:
        rows = (await s.execute(text("SELECT state, reason, exit_code FROM jobs WHERE id = ANY(:ids) "
                                     "ORDER BY array_position(:ids, id)"), {"ids": [uuid.UUID(i) for i in ids]})).all()
    assert rows[0].reason == "image pull failed: manifest unknown"
    assert (rows[1].reason, rows[1].exit_code) == ("OOMKilled: the job used more memory than its limit", 137)


async def test_a_lost_job_is_requeued_once_then_marked_lost(
    db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection
) -> None:
    scope = await _org(db)
    await make_cluster(db, scope.org_id, "c", cpu_nodes())
    [job_id] = await _submit(db, scope, 1)
    jid = uuid.UUID(job_id)
    for expected in ("queued", "lost"):
        await run_pass(db, caps_provider=plan_caps)
        async with tenant_session(db, scope) as s:
            await lifecycle.dispatch(s, jid)
            assert await lifecycle.mark_lost(s, jid, "its cluster has been disconnected") == expected
    events = await owner_conn.fetch("SELECT state FROM job_events WHERE job_id = $1 ORDER BY id", jid)
    assert [e["state"] for e in events] == ["queued", "placed", "dispatched", "lost", "queued", "placed",
                                            "dispatched", "lost"]
    keys = await owner_conn.fetch("SELECT dedupe_key FROM agent_commands ORDER BY created_at")
    assert [k["dedupe_key"] for k in keys] == [job_id, f"{job_id}:1"]  # the second start is a new command
