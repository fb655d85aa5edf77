"""The Temporal worker SIGKILLed right after a job is submitted (while the job is being placed and
dispatched), then replaced: the real gateway, the Temporal dev server, ``metacloud worker`` as a
subprocess, and the real agent with its Kubernetes runtime against the emulator. The job still starts,
with one ``start_job`` command and one Kubernetes Job. (The emulator runs no pods, so the job ends
``dispatched`` with its Kubernetes Job created, as in tests/jobs/test_jobs_e2e.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from connectors.runtimes.kubernetes import KubernetesRuntime
from tenants.settings import Settings
from tests.clusters.helpers import eventually
from tests.connectors.kube_emulator import kube_emulator
from tests.jobs.conftest import Member, connected_agent, set_plan

NS = "metacloud-jobs"
METACLOUD = Path(sys.executable).parent / "metacloud"

Spawn = Callable[[], subprocess.Popen[bytes]]


@pytest.fixture
def spawn_worker(jsettings: Settings, queue: str, tmp_path: Path) -> Iterator[Spawn]:
    """``metacloud worker`` processes on this test's database and task queue; all killed afterwards."""
    env = {**os.environ, "METACLOUD_ENV": "test", "DATABASE_URL": jsettings.database_url or "",
           "APP_DATABASE_URL": jsettings.resolved_app_database_url, "TEMPORAL_ADDRESS": jsettings.temporal_address or "",
           "TEMPORAL_TASK_QUEUE": queue, "METACLOUD_STATE_DIR": str(tmp_path / "state"), "OTEL_EXPORTER": "none"}
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
        proc = subprocess.Popen([str(METACLOUD), "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _pollers(client: Client, queue: str) -> int:
    request = DescribeTaskQueueRequest(namespace="default", task_queue=TaskQueue(name=queue),
                                       task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
    return len((await client.workflow_service.describe_task_queue(request)).pollers)


@pytest.fixture
async def cleanup_workflows(temporal_client: Client, queue: str) -> AsyncIterator[None]:
    yield
    for workflow_id in (f"jobs-scheduler-{queue}",):
        with contextlib.suppress(Exception):
            await temporal_client.get_workflow_handle(workflow_id).terminate("test over")


async def test_worker_killed_during_dispatch_the_job_still_starts_once(
    http: httpx.AsyncClient, owner: Member, spawn_worker: Spawn, temporal_client: Client, queue: str,
    owner_conn: asyncpg.Connection, cleanup_workflows: None, db: Any, tmp_path: Path,
) -> None:
    first = spawn_worker()
    await eventually(lambda: _has_poller(temporal_client, queue), timeout=30, every=0.2)
    await set_plan(db, owner.org.id, "payg")
    async with kube_emulator() as kube:
        runtime = KubernetesRuntime(host=kube.url, request_timeout_s=5)
        try:
            async with connected_agent(http, owner, runtime, tmp_path / "agent", name="gpu-prod",
                                       provider="kubernetes"):
                resp = await http.post(owner.url(), headers=owner.headers, json={
                    "name": "finetune", "image": "python:3.12", "command": ["python", "train.py"],
                    "resources": {"cpu": 2, "memory": "4Gi"}})
                assert resp.status_code == 201, resp.text
                job_id = resp.json()["id"]
                first.send_signal(signal.SIGKILL)  # no shutdown: in-flight activities and tasks just vanish
                assert first.wait(5) == -signal.SIGKILL
                spawn_worker()

                seen: list[str] = []

                async def started() -> bool:
                    job = (await http.get(owner.url(f"/{job_id}"), headers=owner.headers)).json()
                    seen.append(f"{job['state']}: {job.get('reason')}")
                    # The emulator runs no pods: "dispatched" with its Kubernetes Job created is as far as it goes.
                    created = bool(kube.names("batch/v1/jobs", NS))
                    return job["state"] in ("dispatched", "running", "succeeded") and created
                try:
                    await eventually(started, timeout=60, every=0.3)
                except TimeoutError:
                    pytest.fail(f"the job never started; last seen {seen[-1:]} kube={kube.names('batch/v1/jobs', NS)}")
                await asyncio.sleep(2.0)  # room for a duplicate to show up, were one coming
        finally:
            await runtime.aclose()
        job_names = kube.names("batch/v1/jobs", NS)

    # Nothing lost, nothing twice: one start command, one Kubernetes Job, one dispatch in the history.
    commands = await owner_conn.fetch(
        "SELECT dedupe_key, state FROM agent_commands WHERE kind = 'start_job' AND payload->>'job_id' = $1", job_id)
    assert [r["dedupe_key"] for r in commands] == [job_id], commands
    assert len(job_names) == 1, job_names
    job = (await http.get(owner.url(f"/{job_id}"), headers=owner.headers)).json()
    # A second dispatch would be a second transition into "dispatched"; later "dispatched" events are status
    # updates from the cluster (the reason changed, e.g. "waiting for a pod to be created").
    states = [e["state"] for e in job["events"]]
    transitions = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert transitions.count("dispatched") == 1, job["events"]
    assert sum(e["reason"].startswith("sent to the agent") for e in job["events"]) == 1, job["events"]


async def _has_poller(client: Client, queue: str) -> bool:
    return await _pollers(client, queue) > 0
