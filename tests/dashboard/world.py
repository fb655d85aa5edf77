"""Two orgs with clusters and jobs in every interesting state, for the dashboard and CLI tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.dashboard.rows import make_cluster, make_job
from tests.factories import MadeOrg, MadeUser, make_api_key, make_org, make_user

GiB = 1 << 30


@dataclass
class World:
    a: MadeOrg
    a_owner: MadeUser
    a_key: str
    b: MadeOrg
    b_owner: MadeUser
    b_key: str
    jobs: dict[str, uuid.UUID]
    clusters: dict[str, uuid.UUID]


async def make_world(db: async_sessionmaker[AsyncSession]) -> World:
    a_owner, b_owner = await make_user(db), await make_user(db)
    a = await make_org(db, members={a_owner.id: "owner"})
    b = await make_org(db, members={b_owner.id: "owner"})
    clusters = {
        "gpu-a": await make_cluster(db, a.id, "gpu-a", cpu=(64, 8), memory_gib=(256, 16), gpus={"A100": (8, 1)},
                                    storage_gib=(500, 100)),
        "cpu-b": await make_cluster(db, a.id, "cpu-b", cpu=(16, 2), memory_gib=(64, 4), storage_gib=(500, 100)),
        "old-c": await make_cluster(db, a.id, "old-c", state="disconnected", cpu=(32, 0), heartbeat_age_s=600),
        "b-one": await make_cluster(db, b.id, "b-one", cpu=(8, 0), memory_gib=(32, 0), storage_gib=(0, 0)),
    }
    jobs = {
        "train": await make_job(db, a.id, "train", "running", cluster_id=clusters["gpu-a"], cpu=4, memory_gib=8,
                                gpus=2, gpu_type="A100", submitted_by=a_owner.id),
        "prep": await make_job(db, a.id, "prep", "dispatched", cluster_id=clusters["cpu-b"], cpu=2, memory_gib=4),
        "big": await make_job(db, a.id, "big", "queued", cpu=10, memory_gib=2,
                              reason=f"Free plan: 8 vCPU in use of 8 — upgrade at /orgs/{a.slug}/billing"),
        "warm": await make_job(db, a.id, "warm", "placed", cluster_id=clusters["cpu-b"], cpu=1, memory_gib=1,
                               reason="pulling the image"),
        "done": await make_job(db, a.id, "done", "succeeded", cluster_id=clusters["cpu-b"], exit_code=0),
        "oops": await make_job(db, a.id, "oops", "failed", cluster_id=clusters["cpu-b"], exit_code=3,
                               reason="the command exited with code 3"),
        "b-job": await make_job(db, b.id, "b-job", "running", cluster_id=clusters["b-one"], cpu=2, memory_gib=2),
    }
    return World(a=a, a_owner=a_owner, a_key=await make_api_key(db, a, role="member"), b=b, b_owner=b_owner,
                 b_key=await make_api_key(db, b, role="viewer"), jobs=jobs, clusters=clusters)
