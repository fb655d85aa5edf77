"""The Done-when test of re-deriving usage: an agent pod that is replaced (upgrade, drained node) starts with an
EMPTY state folder, and still every second of a job that kept running is stored once: none lost, none twice.

The Kubernetes API emulator (the official client) holds the Job the first agent started; the real ingest
endpoint stores what both agents upload. The second agent starts its usage reporter as the agent does, which
adopts the Job from the cluster and meters it again from its start: the windows the first pod uploaded come
out with the same ids (the gateway says so: duplicates), the ones lost with its spool are stored now.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
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
from connectors.agent.commands import CommandExecutor
from connectors.agent.config import AgentConfig
from connectors.agent.usage import GPU_PRODUCT_LABEL, UsageAck, UsageReporter, UsageUploader, client_sender
from connectors.protocol import Command
from connectors.runtimes._kube_jobs import JOB_ID_LABEL, job_name
from connectors.runtimes.kubernetes import KubernetesRuntime
from tests.connectors.kube_emulator import GPU_MODEL, KubeEmulator, kube_emulator
from tests.usage.helpers import AgentCluster, GiB, hour_ago, make_jobs

NS = "metacloud-jobs"
CPU, MEMORY, GPUS = 1500, 2 * GiB, 1


class Clock:
    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


class Recorded(httpx.AsyncBaseTransport):
    """The real app; the answers to usage uploads are kept to read what the gateway said of each batch."""

    def __init__(self, app: Litestar) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.acks: list[UsageAck] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        if request.url.path == "/agent/v1/usage" and response.status_code == 200:
            self.acks.append(msgspec.json.decode(content, type=UsageAck))
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    def totals(self) -> tuple[int, int]:
        """(stored, duplicates) over the answers so far; then forget them."""
        stored, duplicates = sum(a.stored for a in self.acks), sum(a.duplicates for a in self.acks)
        self.acks.clear()
        return stored, duplicates


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with kube_emulator(nodes=False) as emulator:
        yield emulator


@pytest.fixture
async def gateway(app: Litestar) -> AsyncIterator[Recorded]:
    yield Recorded(app)


def _client(gateway: Recorded, cluster: AgentCluster, state_dir: Path) -> AgentClient:
    config = AgentConfig(server_url="http://testserver", state_dir=state_dir)
    return AgentClient(config, httpx.AsyncClient(transport=gateway, timeout=60), credential=cluster.credential)


async def _upload(reporter: UsageReporter, client: AgentClient) -> None:
    uploader = UsageUploader(reporter.spool, client_sender(client))
    while reporter.spool.count:
        assert await uploader.upload_once() > 0
    assert reporter.spool.rejected() == []


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


async def test_a_new_agent_pod_with_an_empty_state_folder_meters_the_running_job_with_no_gap_and_no_double_count(
        gateway: Recorded, cluster: AgentCluster, db: async_sessionmaker[AsyncSession], kube: KubeEmulator,
        owner_conn: asyncpg.Connection, tmp_path: Path) -> None:
    (job,) = await make_jobs(db, cluster, 1, cpu_millis=CPU, memory_bytes=MEMORY, gpus=GPUS, gpu_type=GPU_MODEL)
    job_id = str(job)
    t0 = hour_ago(2)
    clock = Clock(t0 + 20)

    # --- pod 1: starts the job through its command executor, meters, uploads part of it, then goes away
    pod1 = tmp_path / "pod-1"
    runtime1 = KubernetesRuntime(host=kube.url, request_timeout_s=5)
    first = UsageReporter(pod1, runtime1, clock=clock)
    started = await CommandExecutor(runtime1, jobs=first).execute(Command(id="c-1", kind="start_job", payload={
        "job_id": job_id, "name": "train", "image": "pytorch:2.4", "cpu_millis": CPU, "memory_bytes": MEMORY,
        "gpus": GPUS, "node_selector": {GPU_PRODUCT_LABEL: GPU_MODEL}}))
    assert started.ok, started.error
    start = t0 + 35  # the Job controller starts it; its pod runs
    kube.patch("batch/v1/jobs", NS, job_name(job_id), {"status": {"startTime": _iso(start), "active": 1}})
    kube.add_pod(NS, f"{job_name(job_id)}-x7k2p", labels={JOB_ID_LABEL: job_id}, phase="Running")

    clock.at = t0 + 200
    assert await first.meter.tick() == 3 * 3  # [35, 60), [60, 120), [120, 180) x vCPU, memory, GPU
    client1 = _client(gateway, cluster, pod1)
    await _upload(first, client1)
    assert gateway.totals() == (9, 0)
    clock.at = t0 + 320
    assert await first.meter.tick() == 2 * 3  # [180, 240), [240, 300): spooled, never uploaded
    first.close()
    await client1.http.aclose()
    await runtime1.aclose()
    shutil.rmtree(pod1)  # the pod is replaced: its emptyDir, and the spool in it, are gone

    # --- pod 2: an empty state folder; its usage reporter starts as the agent starts it
    clock.at = t0 + 500
    pod2 = tmp_path / "pod-2"
    runtime2 = KubernetesRuntime(host=kube.url, request_timeout_s=5)
    second = UsageReporter(pod2, runtime2, clock=clock)
    client2 = _client(gateway, cluster, pod2)
    running = asyncio.create_task(second.run(client2))
    try:
        async with asyncio.timeout(30):
            while not gateway.acks or second.spool.count:  # noqa: ASYNC110 - its first tick, then its upload
                await asyncio.sleep(0.05)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    # [35, 60) and seven whole windows up to 480, x3: the first pod's 9 were duplicates, the rest new
    assert gateway.totals() == (5 * 3, 3 * 3)

    # --- the job ends; pod 2 meters it to its end
    end = t0 + 530
    kube.patch("batch/v1/jobs", NS, job_name(job_id), {"status": {"succeeded": 1, "active": 0, "completionTime": _iso(end),
                                                                  "conditions": [{"type": "Complete", "status": "True"}]}})
    kube.patch("v1/pods", NS, f"{job_name(job_id)}-x7k2p", {"status": {"phase": "Succeeded"}})
    clock.at = t0 + 600
    assert await second.meter.tick() == 3  # [480, 530)
    await _upload(second, client2)
    assert second.spool.subjects() == []
    assert await second.meter.adopt() and second.spool.subjects() == []  # the finished Job is not metered again
    second.close()
    await client2.http.aclose()
    await runtime2.aclose()

    rows = await owner_conn.fetch(
        "SELECT id, resource, gpu_type, allocated, quantity, window_start, window_end FROM usage_records "
        "WHERE job_id = $1 ORDER BY resource, window_start", job)
    assert len({r["id"] for r in rows}) == len(rows) == 9 * 3
    for resource, allocated in (("vcpu", CPU), ("memory", MEMORY), ("gpu", GPUS)):
        mine = [r for r in rows if r["resource"] == resource]
        bounds = [(int(r["window_start"].timestamp()), int(r["window_end"].timestamp())) for r in mine]
        assert bounds[0][0] == start and bounds[-1][1] == end
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # back to back: no gap, no overlap
        assert {r["allocated"] for r in mine} == {allocated}
        assert sum(r["quantity"] for r in mine) == allocated * (end - start)
    assert {r["gpu_type"] for r in rows if r["resource"] == "gpu"} == {GPU_MODEL}
    hourly = await owner_conn.fetchval("SELECT sum(quantity) FROM usage_hourly WHERE org_id = $1", cluster.org_id)
    assert hourly == sum(r["quantity"] for r in rows)  # the duplicates added nothing to the rollups either
