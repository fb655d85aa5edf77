"""``POST /agent/v1/usage``: validation itemized, dedupe forever, all-or-nothing batches."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.usage.ids import record_id as billing_record_id
from billing.usage.rollups import compare_rollups
from connectors.agent.usage import UsageRecord, record_id
from gateway.agent_api import usage as usage_api
from tenants.db import unscoped_session
from tests.factories import MadeOrg
from tests.usage.helpers import (
    AgentCluster,
    GiB,
    body,
    hour_ago,
    job_subject,
    make_cluster,
    make_jobs,
    records,
)


async def _totals(owner_conn: asyncpg.Connection, org_id: uuid.UUID) -> tuple[int, int, int]:
    raw = await owner_conn.fetchrow("SELECT count(*) n, coalesce(sum(quantity), 0) q FROM usage_records "
                                    "WHERE org_id = $1", org_id)
    rolled = await owner_conn.fetchval("SELECT coalesce(sum(quantity), 0) FROM usage_hourly WHERE org_id = $1", org_id)
    return int(raw["n"]), int(raw["q"]), int(rolled)


def test_agent_and_billing_compute_the_same_record_ids() -> None:
    when = datetime(2026, 5, 1, 12, 3, tzinfo=UTC)
    for subject, resource, gpu in (("j1", "vcpu", ""), ("j2", "gpu", "A100"), ("vol-1", "storage", "")):
        assert record_id(subject, resource, gpu, int(when.timestamp())) == str(
            billing_record_id(subject, resource, gpu, when))


async def test_a_batch_is_stored_once_and_its_resend_changes_nothing(
        http: httpx.AsyncClient, cluster: AgentCluster, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    jobs = await make_jobs(db, cluster, 3)
    recs = records([job_subject(j) for j in jobs], hour_ago(2), 10)
    first = await http.post("/agent/v1/usage", content=body(recs), headers=cluster.headers())
    assert first.status_code == 200, first.text
    assert first.json()["stored"] == 60 and first.json()["rejected"] == []
    after_first = await _totals(owner_conn, cluster.org_id)
    assert after_first == (60, 3 * 10 * (2000 * 60 + 4 * GiB * 60), after_first[1])
    again = await http.post("/agent/v1/usage", content=body(recs), headers=cluster.headers())
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == 60
    assert sorted(again.json()["accepted"]) == sorted(r.id for r in recs)
    assert await _totals(owner_conn, cluster.org_id) == after_first


async def test_the_same_batch_sent_concurrently_is_counted_once(
        http: httpx.AsyncClient, cluster: AgentCluster, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    jobs = await make_jobs(db, cluster, 5)
    payload = body(records([job_subject(j) for j in jobs], hour_ago(3), 40))  # 400 records
    answers = await asyncio.gather(*[http.post("/agent/v1/usage", content=payload, headers=cluster.headers())
                                     for _ in range(4)])
    assert [a.status_code for a in answers] == [200] * 4
    assert sum(a.json()["stored"] for a in answers) == 400
    n, q, rolled = await _totals(owner_conn, cluster.org_id)
    assert (n, rolled) == (400, q)


async def test_a_crash_between_staging_and_insert_leaves_nothing_and_the_retry_is_exact(
        http: httpx.AsyncClient, cluster: AgentCluster, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    jobs = await make_jobs(db, cluster, 2)
    recs = records([job_subject(j) for j in jobs], hour_ago(2), 30)
    half = len(recs) // 2
    ok = await http.post("/agent/v1/usage", content=body(recs[:half]), headers=cluster.headers())
    assert ok.status_code == 200
    before = await _totals(owner_conn, cluster.org_id)

    async def crash() -> None:
        raise RuntimeError("power cut between staging and insert")

    usage_api.HOOKS.after_staging = crash
    try:
        crashed = await http.post("/agent/v1/usage", content=body(recs), headers=cluster.headers())
        assert crashed.status_code == 500  # the agent keeps the batch and sends it again
    finally:
        usage_api.HOOKS.after_staging = None
    assert await _totals(owner_conn, cluster.org_id) == before
    retry = await http.post("/agent/v1/usage", content=body(recs), headers=cluster.headers())
    assert retry.json()["stored"] == len(recs) - half
    n, q, rolled = await _totals(owner_conn, cluster.org_id)
    assert n == len(recs) and q == rolled == sum(r.quantity for r in recs)


async def test_bad_records_come_back_itemized_and_good_ones_are_stored(
        http: httpx.AsyncClient, cluster: AgentCluster, org: MadeOrg, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    (job,) = await make_jobs(db, cluster, 1)
    other = await make_cluster(db, org.id, name="other")
    (elsewhere,) = await make_jobs(db, other, 1)
    start = hour_ago(1)
    good = records([job_subject(job)], start, 1)[0]  # vcpu

    def bad(**change: object) -> UsageRecord:
        return msgspec.structs.replace(good, **change)  # type: ignore[arg-type]

    now = datetime.now(UTC).replace(microsecond=0)
    future = now + timedelta(hours=1)
    cases = {
        "wrong_unit": bad(id="a1", unit="vcpu_seconds"),
        "negative": bad(id="a2", allocated=-1, quantity=-60),
        "quantity_mismatch": bad(id="a3", quantity=1),
        "bad_window": bad(id="a4", window_end=good.window_start),
        "window_in_future": bad(id="a5", window_start=future, window_end=future + timedelta(seconds=60)),
        "window_too_old": bad(id="a6", window_start=now - timedelta(days=500),
                              window_end=now - timedelta(days=500) + timedelta(seconds=60)),
        "unknown_job": records([job_subject(elsewhere)], start, 1)[0],
        "bad_id": bad(id=str(uuid.uuid4())),
        "unknown_resource": bad(id="a9", resource="fpga"),
    }
    resp = await http.post("/agent/v1/usage", content=body([good, *cases.values()]), headers=cluster.headers())
    assert resp.status_code == 200
    answer = resp.json()
    assert answer["accepted"] == [good.id] and answer["stored"] == 1
    codes = {r["id"]: r["code"] for r in answer["rejected"]}
    assert codes == {rec.id: code for code, rec in cases.items()}
    assert all(r["reason"] for r in answer["rejected"])
    assert (await _totals(owner_conn, cluster.org_id))[0] == 1


async def test_org_and_cluster_come_from_the_credential_not_the_body(
        http: httpx.AsyncClient, cluster: AgentCluster, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    (job,) = await make_jobs(db, cluster, 1)
    rec = msgspec.to_builtins(records([job_subject(job)], hour_ago(1), 1)[0])
    rec |= {"org_id": str(uuid.uuid4()), "cluster_id": str(uuid.uuid4())}
    resp = await http.post("/agent/v1/usage", content=msgspec.json.encode({"records": [rec]}),
                           headers=cluster.headers())
    assert resp.json()["stored"] == 1
    row = await owner_conn.fetchrow("SELECT org_id, cluster_id FROM usage_records")
    assert (row["org_id"], row["cluster_id"]) == (cluster.org_id, cluster.cluster_id)


async def test_without_a_valid_credential_nothing_is_stored(
        http: httpx.AsyncClient, cluster: AgentCluster, db: async_sessionmaker[AsyncSession],
        owner_conn: asyncpg.Connection) -> None:
    (job,) = await make_jobs(db, cluster, 1)
    payload = body(records([job_subject(job)], hour_ago(1), 1))
    headers = {**cluster.headers(), "Authorization": "Bearer mca_00000000_" + "x" * 30}
    resp = await http.post("/agent/v1/usage", content=payload, headers=headers)
    assert resp.status_code == 401 and resp.json()["code"] == "credential_invalid"
    assert await owner_conn.fetchval("SELECT count(*) FROM usage_records") == 0


async def test_rollups_equal_a_recomputation_from_raw_records(
        http: httpx.AsyncClient, cluster: AgentCluster, db: async_sessionmaker[AsyncSession]) -> None:
    jobs = await make_jobs(db, cluster, 4, gpus=2, gpu_type="A100")
    subjects = [job_subject(j, gpus=2, gpu_type="A100") for j in jobs]
    for hours_back in (3, 2):
        resp = await http.post("/agent/v1/usage", content=body(records(subjects, hour_ago(hours_back) + 1800, 45)),
                               headers=cluster.headers())
        assert resp.status_code == 200 and not resp.json()["rejected"]
    async with unscoped_session(db, reason="test: compare rollups") as s:
        assert await compare_rollups(s) == []
