"""``POST /agent/v1/job-reports``: reports of the agent's own cluster's jobs move them, itemized answers,
no report older than the last one taken turns a job back, resends change nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.protocol import JOB_REPORT_MAX_BATCH
from connectors.server.jobs.models import Job
from tenants.db import unscoped_session, utcnow
from tests.factories import make_org
from tests.jobs.conftest import Member
from tests.usage.helpers import AgentCluster, make_cluster

URL = "/agent/v1/job-reports"
T0 = datetime.now(UTC) - timedelta(minutes=10)


async def _job(db: async_sessionmaker[AsyncSession], cluster: AgentCluster, state: str = "dispatched") -> str:
    now = utcnow()
    async with unscoped_session(db, reason="test factory") as s:
        job = Job(org_id=cluster.org_id, name="train", cpu_millis=1000, memory_bytes=1 << 30, state=state,
                  cluster_id=cluster.cluster_id, queued_at=now, dispatched_at=now, updated_at=now)
        s.add(job)
        await s.flush()
        return str(job.id)


def _report(job_id: str, phase: str, at: float, **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "phase": phase, "observed_at": (T0 + timedelta(seconds=at)).isoformat(), **extra}


async def _post(http: httpx.AsyncClient, cluster: AgentCluster, *reports: dict[str, Any]) -> dict[str, Any]:
    resp = await http.post(URL, json={"reports": list(reports)}, headers=cluster.headers())
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


async def _row(owner_conn: asyncpg.Connection, job_id: str) -> tuple[str, str, int | None, int]:
    job = await owner_conn.fetchrow("SELECT state, reason, exit_code FROM jobs WHERE id = $1", uuid.UUID(job_id))
    events = await owner_conn.fetchval("SELECT count(*) FROM job_events WHERE job_id = $1", uuid.UUID(job_id))
    return job["state"], job["reason"], job["exit_code"], int(events)


async def test_reports_move_the_job_and_a_replayed_batch_changes_nothing(
        http: httpx.AsyncClient, owner: Member, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    cluster = await make_cluster(db, owner.org.id)
    job = await _job(db, cluster)
    started = (T0 + timedelta(seconds=1)).isoformat()
    running = await _post(http, cluster, _report(job, "running", 1, started_at=started))
    assert running == {"accepted": [{"job_id": job, "state": "running", "applied": True, "done": False}],
                       "rejected": []}
    batch = [_report(job, "succeeded", 5, exit_code=0, started_at=started,
                     finished_at=(T0 + timedelta(seconds=4)).isoformat())]
    ended = await _post(http, cluster, *batch)
    assert ended["accepted"] == [{"job_id": job, "state": "succeeded", "applied": True, "done": True}]
    after = await _row(owner_conn, job)
    assert after[:3] == ("succeeded", "finished (exit code 0)", 0)

    again = await _post(http, cluster, *batch)
    assert again["accepted"] == [{"job_id": job, "state": "succeeded", "applied": False, "done": True}]
    assert await _row(owner_conn, job) == after


async def test_a_report_older_than_the_last_one_taken_is_ignored(
        http: httpx.AsyncClient, owner: Member, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    cluster = await make_cluster(db, owner.org.id)
    job = await _job(db, cluster)
    await _post(http, cluster, _report(job, "running", 10))
    before = await _row(owner_conn, job)
    late = await _post(http, cluster, _report(job, "failed", 5, exit_code=1, reason="exited with code 1"),
                       _report(job, "pending", 9, reason="unschedulable: no node fits"))
    assert [(a["applied"], a["state"]) for a in late["accepted"]] == [(False, "running"), (False, "running")]
    assert await _row(owner_conn, job) == before
    # In one batch, a job's reports are taken oldest first whatever their order: the newest one wins.
    newest_last = await _post(http, cluster, _report(job, "succeeded", 30, exit_code=0),
                              _report(job, "running", 20))
    assert [a["applied"] for a in newest_last["accepted"]] == [True, True]
    assert (await _row(owner_conn, job))[0] == "succeeded"


async def test_reports_of_jobs_not_on_the_agents_cluster_are_refused_one_by_one(
        http: httpx.AsyncClient, owner: Member, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    cluster = await make_cluster(db, owner.org.id, "east")
    sibling = await make_cluster(db, owner.org.id, "west")
    stranger = await make_cluster(db, (await make_org(db)).id, "theirs")
    mine, sibling_job, stranger_job = await _job(db, cluster), await _job(db, sibling), await _job(db, stranger)
    ghost = str(uuid.uuid4())
    answer = await _post(http, cluster, _report(mine, "running", 1), _report(sibling_job, "succeeded", 1),
                         _report(stranger_job, "succeeded", 1), _report(ghost, "succeeded", 1))
    assert [a["job_id"] for a in answer["accepted"]] == [mine]
    assert {r["job_id"]: r["code"] for r in answer["rejected"]} == {
        sibling_job: "unknown_job", stranger_job: "unknown_job", ghost: "unknown_job"}
    assert (await _row(owner_conn, sibling_job))[0] == "dispatched"
    assert (await _row(owner_conn, stranger_job))[0] == "dispatched"


async def test_bad_reports_are_refused_itemized_and_the_good_ones_taken(
        http: httpx.AsyncClient, owner: Member, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    cluster = await make_cluster(db, owner.org.id)
    jobs = [await _job(db, cluster) for _ in range(5)]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    answer = await _post(
        http, cluster,
        _report(jobs[0], "running", 1),
        _report(jobs[1], "exploded", 1),
        {"job_id": jobs[2], "phase": "running", "observed_at": future},
        _report(jobs[3], "succeeded", 1, started_at=T0.isoformat(), finished_at=(T0 - timedelta(1)).isoformat()),
        _report("not-a-uuid", "running", 1),
    )
    assert [a["job_id"] for a in answer["accepted"]] == [jobs[0]]
    refused = {r["job_id"]: r for r in answer["rejected"]}
    assert set(refused) == {jobs[1], jobs[2], jobs[3], "not-a-uuid"}
    assert all(r["code"] == "invalid" and r["reason"] for r in refused.values())
    assert "clock" in refused[jobs[2]]["reason"]
    assert [(await _row(owner_conn, j))[0] for j in jobs[1:4]] == ["dispatched"] * 3


async def test_a_bad_body_is_a_problem_and_changes_nothing(
        http: httpx.AsyncClient, owner: Member, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    cluster = await make_cluster(db, owner.org.id)
    job = await _job(db, cluster)
    for content, status in ((b"{not json", 400), (b'{"reports": {"job_id": 1}}', 400),
                            (b'{"reports": [{"job_id": "x", "phase": "running"}]}', 400)):
        resp = await http.post(URL, content=content, headers=cluster.headers())
        assert resp.status_code == status, resp.text
        assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    too_many = [_report(job, "running", i) for i in range(JOB_REPORT_MAX_BATCH + 1)]
    resp = await http.post(URL, json={"reports": too_many}, headers=cluster.headers())
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("application/problem+json")
    assert (await _row(owner_conn, job))[0] == "dispatched"


async def test_a_revoked_credential_gets_401_and_changes_nothing(
        http: httpx.AsyncClient, owner: Member, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    cluster = await make_cluster(db, owner.org.id)
    job = await _job(db, cluster)
    await owner_conn.execute("UPDATE cluster_credentials SET revoked_at = now() WHERE cluster_id = $1",
                             cluster.cluster_id)
    resp = await http.post(URL, json={"reports": [_report(job, "succeeded", 1)]}, headers=cluster.headers())
    assert resp.status_code == 401 and resp.json()["code"] == "credential_revoked", resp.text
    assert (await _row(owner_conn, job))[0] == "dispatched"
