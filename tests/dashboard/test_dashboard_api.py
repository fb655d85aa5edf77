"""The dashboard JSON, org and operator, against real rows."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.settings import Settings
from tests.dashboard.world import GiB, make_world
from tests.factories import make_user, sign_in


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def by_name(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in board["resources"]["clusters"]}


async def test_org_dashboard_counts_active_and_pending_jobs_and_capacity_per_cluster_and_in_total(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    w = await make_world(db)
    resp = await client.get(f"/api/v1/orgs/{w.a.slug}/dashboard", headers=bearer(w.a_key))
    assert resp.status_code == 200, resp.text
    board = resp.json()

    assert board["jobs"]["active"] == 2  # running + dispatched
    assert board["jobs"]["pending"] == 2  # queued + placed
    assert board["jobs"]["by_state"]["succeeded"] == 1 and board["jobs"]["by_state"]["failed"] == 1
    assert board["jobs"]["by_state"]["cancelled"] == 0

    clusters = by_name(board)
    assert set(clusters) == {"gpu-a", "cpu-b", "old-c"}
    gpu = clusters["gpu-a"]
    assert gpu["cpu"] == {"assigned": 8.0, "total": 64.0}  # the cluster reports more than our 4 vCPU job holds
    assert gpu["gpus"] == {"assigned": 2, "total": 8}  # our job holds 2; the last heartbeat saw 1
    assert gpu["gpus_by_type"] == {"A100": {"assigned": 2, "total": 8}}
    assert gpu["storage_bytes"] == {"assigned": 100 * GiB, "total": 500 * GiB}
    assert gpu["state"] == "attached" and gpu["last_heartbeat_at"] is not None
    cpu = clusters["cpu-b"]
    assert cpu["cpu"] == {"assigned": 3.0, "total": 16.0}  # dispatched 2 + placed 1 > reported 2
    assert cpu["memory_bytes"] == {"assigned": 5 * GiB, "total": 64 * GiB}
    assert clusters["old-c"]["state"] == "disconnected"

    total = board["resources"]["total"]  # attached clusters only: old-c's 32 vCPU cannot take work
    assert total["cpu"] == {"assigned": 11.0, "total": 80.0}
    assert total["memory_bytes"] == {"assigned": 21 * GiB, "total": 320 * GiB}
    assert total["gpus"] == {"assigned": 2, "total": 8}
    assert total["storage_bytes"] == {"assigned": 200 * GiB, "total": 1000 * GiB}

    plan = board["plan"]
    assert plan["name"] == "free"
    assert plan["caps"] == {"cpu": 8.0, "memory_bytes": 16 * GiB, "gpus": 0}
    assert plan["in_use"] == {"cpu": 7.0, "memory_bytes": 13 * GiB, "gpus": 2}  # placed + dispatched + running


async def test_org_b_dashboard_never_counts_org_a_jobs_or_clusters(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    w = await make_world(db)
    board = (await client.get(f"/api/v1/orgs/{w.b.slug}/dashboard", headers=bearer(w.b_key))).json()
    assert board["jobs"]["active"] == 1 and board["jobs"]["pending"] == 0
    assert sum(board["jobs"]["by_state"].values()) == 1
    assert [c["name"] for c in board["resources"]["clusters"]] == ["b-one"]
    assert board["resources"]["total"]["cpu"] == {"assigned": 2.0, "total": 8.0}
    assert board["plan"]["in_use"]["cpu"] == 2.0
    # and org A's dashboard is not there for org B's key
    other = await client.get(f"/api/v1/orgs/{w.a.slug}/dashboard", headers=bearer(w.b_key))
    assert other.status_code == 404


async def test_operator_dashboard_adds_up_every_org_and_names_the_orgs_using_most(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    operator = await make_user(db, operator=True)
    await sign_in(client, db, operator, settings)
    resp = await client.get("/api/v1/operator/dashboard")
    assert resp.status_code == 200, resp.text
    board = resp.json()
    assert board["jobs"]["active"] == 3 and board["jobs"]["pending"] == 2
    assert board["resources"]["cpu"] == {"assigned": 13.0, "total": 88.0}
    assert board["clusters_by_state"] == {"attached": 3, "disconnected": 1}
    assert [(c["org_slug"], c["name"]) for c in board["clusters_needing_attention"]] == [(w.a.slug, "old-c")]
    assert [(o["slug"], o["cpu"]) for o in board["top_orgs_by_cpu"]] == [(w.a.slug, 7.0), (w.b.slug, 2.0)]
    assert [(o["slug"], o["gpus"]) for o in board["top_orgs_by_gpu"]] == [(w.a.slug, 2)]
    assert board["top_orgs_by_cpu"][0]["active_jobs"] == 2 and board["top_orgs_by_cpu"][0]["pending_jobs"] == 2


async def test_operator_dashboard_does_not_exist_for_org_owners_or_anonymous(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    w = await make_world(db)
    assert (await client.get("/api/v1/operator/dashboard")).status_code in (401, 404)
    assert (await client.get("/api/v1/operator/dashboard", headers=bearer(w.a_key))).status_code == 404
    await sign_in(client, db, w.a_owner, settings)
    assert (await client.get("/api/v1/operator/dashboard")).status_code == 404
    assert (await client.get("/operator/dashboard", headers={"accept": "text/html"})).status_code == 404
