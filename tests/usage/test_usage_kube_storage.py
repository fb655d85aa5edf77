"""Storage end to end: the agent meters the Bound claims of its Kubernetes cluster (the API emulator, the
official client), the real ingest endpoint takes the records, and the org's usage shows them as storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.agent.client import AgentClient
from connectors.agent.config import AgentConfig
from connectors.agent.usage import UsageRecord, UsageReporter, UsageUploader, client_sender
from connectors.runtimes.kubernetes import KubernetesRuntime
from tenants.settings import Settings
from tests.connectors.kube_emulator import KubeEmulator, kube_emulator
from tests.connectors.kube_volumes import CLAIMS, claim, declare_claims
from tests.factories import MadeOrg, MadeUser, make_api_key, sign_in
from tests.usage.helpers import AgentCluster, GiB, body, hour_ago, job_subject, make_jobs, records

pytestmark = pytest.mark.usefixtures("payg_card")

NS = "metacloud-jobs"
UID = "5f0c6a1e-8d2b-4c1e-9a57-3b1f2e4d6c70"


class Clock:
    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with kube_emulator(nodes=False) as emulator:
        declare_claims(emulator)
        yield emulator


@pytest.fixture
async def runtime(kube: KubeEmulator) -> AsyncIterator[KubernetesRuntime]:
    rt = KubernetesRuntime(host=kube.url, request_timeout_s=5)
    yield rt
    await rt.aclose()


async def _upload(app: Litestar, cluster: AgentCluster, reporter: UsageReporter) -> None:
    """Drain the spool into the real gateway as the agent does (batches, acknowledged ids leave)."""
    config = AgentConfig(server_url="http://testserver", state_dir=reporter.state_dir)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, timeout=60) as http:
        uploader = UsageUploader(reporter.spool, client_sender(AgentClient(config, http, credential=cluster.credential)))
        while reporter.spool.count:
            assert await uploader.upload_once() > 0
    assert reporter.spool.rejected() == []


async def test_a_bound_claim_is_metered_resized_and_ended_and_shows_as_storage(
        app: Litestar, http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], org: MadeOrg, owner: MadeUser,
        cluster: AgentCluster, kube: KubeEmulator, runtime: KubernetesRuntime, owner_conn: asyncpg.Connection,
        settings: Settings, tmp_path: Path) -> None:
    t0 = hour_ago(2)
    kube.add(CLAIMS, claim(NS, "data", uid=UID, size="10Gi"))
    kube.add(CLAIMS, claim(NS, "waiting", uid="uid-pending", size="50Gi", phase="Pending"))  # holds nothing yet
    kube.add(CLAIMS, claim("team-a", "elsewhere", uid="uid-elsewhere", size="1Ti"))  # not the agent's namespace
    clock = Clock(t0 + 10)
    reporter = UsageReporter(tmp_path, runtime, clock=clock)
    meter = reporter.meter

    assert await meter.tick() == 0  # first seen at t0+10
    clock.at = t0 + 190
    assert await meter.tick() == 3  # [10, 60), [60, 120), [120, 180) at 10 GiB
    kube.patch(CLAIMS, NS, "data", {"status": {"capacity": {"storage": "20Gi"}}})  # volume expansion done
    clock.at = t0 + 200
    await meter.tick()
    clock.at = t0 + 250
    await meter.tick()
    await asyncio.to_thread(runtime.core.delete_namespaced_persistent_volume_claim, "data", NS)
    clock.at = t0 + 270
    await meter.tick()
    clock.at = t0 + 400
    await meter.tick()
    clock.at = t0 + 900
    assert await meter.tick() == 0  # deleted: no longer metered
    assert reporter.spool.subjects() == []

    spooled = [msgspec.json.decode(r.body, type=UsageRecord) for r in reporter.spool.oldest(1000)]
    windows = sorted((int(r.window_start.timestamp()) - t0, int(r.window_end.timestamp()) - t0, r.allocated // GiB)
                     for r in spooled)
    assert windows == [(10, 60, 10), (60, 120, 10), (120, 180, 10), (180, 200, 10), (200, 240, 20), (240, 270, 20)]
    assert {(r.resource, r.volume, r.job_id) for r in spooled} == {("storage", UID, None)}
    assert all(r.quantity == r.allocated * int((r.window_end - r.window_start).total_seconds()) for r in spooled)
    expected = 10 * GiB * 190 + 20 * GiB * 70

    await _upload(app, cluster, reporter)
    reporter.close()
    stored = await owner_conn.fetch("SELECT volume, job_id, resource, quantity FROM usage_records WHERE org_id = $1",
                                    org.id)
    assert len(stored) == 6 and {(s["volume"], s["job_id"], s["resource"]) for s in stored} == {(UID, None, "storage")}
    assert sum(s["quantity"] for s in stored) == expected

    day = datetime.fromtimestamp(t0, UTC).date().isoformat()
    key = await make_api_key(db, org, role="viewer")
    resp = await http.get(f"/api/v1/orgs/{org.slug}/usage", params={"from": day, "to": day},
                          headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    usage = resp.json()
    assert usage["totals"]["storage"]["base_quantity"] == expected
    assert usage["totals"]["storage"]["unit"] == "GiB-months" and usage["totals"]["storage"]["base_unit"] == "byte_seconds"
    [by_cluster] = usage["by_cluster"]
    assert by_cluster["usage"]["storage"]["base_quantity"] == expected
    [line] = [ln for ln in usage["cost_lines"] if ln["key"] == "storage"]
    assert line["billable"]["base_quantity"] == expected and line["unit_price_usd"] == "0.1"  # all of it billable

    await sign_in(http, db, owner, settings)
    page = await http.get(f"/orgs/{org.slug}/usage", params={"from": day, "to": day}, headers={"accept": "text/html"})
    assert page.status_code == 200 and "Storage" in page.text and "GiB-months" in page.text


async def test_ingest_wants_storage_to_name_a_volume_and_compute_to_name_a_job(
        http: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], cluster: AgentCluster) -> None:
    (job,) = await make_jobs(db, cluster, 1, cpu_millis=1000, memory_bytes=GiB)
    [vcpu, _memory] = records([job_subject(job, cpu_millis=1000, memory_bytes=GiB)], hour_ago(1), 1)
    storage = msgspec.structs.replace(vcpu, resource="storage", unit="byte_seconds", allocated=GiB,
                                      quantity=GiB * 60)
    cases = {
        "storage naming a job": storage,
        "storage naming a job and a volume": msgspec.structs.replace(storage, volume="pvc-1"),
        "vcpu naming a volume": msgspec.structs.replace(vcpu, job_id=None, volume="pvc-1"),
        "vcpu naming nothing": msgspec.structs.replace(vcpu, job_id=None),
    }
    resp = await http.post("/agent/v1/usage", content=body(list(cases.values())), headers=cluster.headers())
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["stored"] == 0 and answer["accepted"] == []
    assert [r["code"] for r in answer["rejected"]] == ["bad_subject"] * len(cases)
