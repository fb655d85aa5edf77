"""End to end: the real gateway (ASGI), the real Temporal dev server with a worker running the cluster
workflows, and an agent: the real one with its Kubernetes runtime against the Kubernetes API emulator
(nodes with GPUs and taints), or the protocol stand-in where a test needs to steer the agent."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import asyncpg
import httpx
from temporalio.client import Client

from connectors.agent.config import AgentConfig
from connectors.agent.loop import Agent
from connectors.runtimes.kubernetes import KubernetesRuntime
from tests.clusters.conftest import Admin, WorkerFactory
from tests.clusters.helpers import FakeAgent, eventually
from tests.connectors.kube_emulator import kube_emulator
from workflows.clusters import client as wf
from workflows.clusters.types import HealthInput, StateChange


async def _create(http: httpx.AsyncClient, admin: Admin, name: str = "gpu-prod") -> tuple[str, str]:
    resp = await http.post(admin.url(), json={"name": name, "provider": "kubernetes"}, headers=admin.headers)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], resp.json()["install"]["token"]


async def _cluster(http: httpx.AsyncClient, admin: Admin, cluster_id: str) -> dict:  # type: ignore[type-arg]
    resp = await http.get(admin.url(f"/{cluster_id}"), headers=admin.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _in_state(http: httpx.AsyncClient, admin: Admin, cluster_id: str, state: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bool((await _cluster(http, admin, cluster_id))["state"] == state)
    return check


async def test_the_agent_on_kubernetes_attaches_with_its_gpus_and_stops_when_detached(
    http: httpx.AsyncClient, admin: Admin, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    await start_worker()
    cluster_id, token = await _create(http, admin)
    async with kube_emulator() as kube:
        runtime = KubernetesRuntime(host=kube.url, request_timeout_s=5)
        config = AgentConfig(server_url="http://testserver", token=token, state_dir=tmp_path, runtime="kubernetes",
                             heartbeat_interval_s=0.3, command_wait_s=2)
        agent = Agent(config, runtime, http)
        stop = asyncio.Event()
        run = asyncio.create_task(agent.run(stop))
        try:
            await eventually(_in_state(http, admin, cluster_id, "attached"), timeout=30)
            attached = await _cluster(http, admin, cluster_id)
            assert kube.get("v1/namespaces", None, "metacloud-jobs") is not None  # provisioned

            detach = await http.post(admin.url(f"/{cluster_id}/detach"), json={"jobs": "cancel"},
                                     headers=admin.headers)
            assert detach.status_code == 202 and detach.json()["state"] == "detaching"
            exit_code = await asyncio.wait_for(run, timeout=30)
        finally:
            stop.set()
            await asyncio.gather(run, return_exceptions=True)
            await runtime.aclose()
    cap = attached["capacity"]
    assert (cap["node_count"], cap["gpu_total"]) == (3, 16)
    assert cap["gpus_by_type"] == {"nvidia.com/gpu|A100-SXM4-80GB": {"total": 16, "allocated": 0}}
    assert attached["runtime"] == "kubernetes" and attached["agent_version"] == "0.1.0"
    assert exit_code == 3 and "detached or its agent credential revoked" in (agent.exit_line or "")
    done = await _cluster(http, admin, cluster_id)
    assert done["state"] == "detached" and "cleaned up" in done["state_reason"]
    assert [(e["from_state"], e["to_state"]) for e in reversed(done["history"])] == [
        (None, "pending"), ("pending", "attaching"), ("attaching", "attached"), ("attached", "detaching"),
        ("detaching", "detached"),
    ]
    assert (await http.delete(admin.url(f"/{cluster_id}"), headers=admin.headers)).status_code == 204


async def test_heartbeat_loss_disconnects_with_a_reason_and_a_heartbeat_reattaches(
    http: httpx.AsyncClient, admin: Admin, start_worker: WorkerFactory, temporal_client: Client, queue: str
) -> None:
    await start_worker()
    # The health sweep at test speed (the gateway's own ensure_health then finds it running).
    await wf.ensure_health(temporal_client, queue, HealthInput(interval_s=0.2, ttl_s=0.6, grace_s=0.4,
                                                               restart_grace_s=0.0))
    cluster_id, token = await _create(http, admin)
    agent = FakeAgent(http, token)
    assert (await agent.register()).status_code == 200
    await agent.serve(_in_state(http, admin, cluster_id, "attached"))

    await eventually(_in_state(http, admin, cluster_id, "disconnected"), timeout=10)  # the agent went quiet
    lost = await _cluster(http, admin, cluster_id)
    assert re.fullmatch(r"no heartbeat since \d\d:\d\d:\d\d UTC \(agent stopped, or network/proxy blocks outbound "
                        r"HTTPS\)", lost["state_reason"])
    assert (await agent.heartbeat()).status_code == 200
    back = await _cluster(http, admin, cluster_id)
    assert back["state"] == "attached" and "back online" in back["state_reason"]
    health = temporal_client.get_workflow_handle(wf.health_workflow_id(queue))
    async def told() -> bool:
        recent = await health.query("recent_changes", result_type=list[StateChange])
        return {c.to_state for c in recent if c.cluster_id == cluster_id} == {"disconnected", "attached"}
    await eventually(told, timeout=5)


async def test_a_worker_killed_mid_attach_and_restarted_still_attaches_exactly_once(
    http: httpx.AsyncClient, admin: Admin, start_worker: WorkerFactory, owner_conn: asyncpg.Connection
) -> None:
    first = await start_worker()
    cluster_id, token = await _create(http, admin)
    agent = FakeAgent(http, token)
    assert (await agent.register()).status_code == 200

    async def provision_queued() -> bool:
        return bool(await owner_conn.fetchval("SELECT count(*) FROM agent_commands WHERE cluster_id = $1 "
                                              "AND kind = 'provision'", uuid.UUID(cluster_id)))
    await eventually(provision_queued)
    first.cancel()  # the worker dies without draining: its wait for the provision result is cut off
    await asyncio.gather(first, return_exceptions=True)
    [cmd] = await agent.poll()
    await agent.ack(cmd["id"])
    await agent.result(cmd["id"], ok=True, result={"namespace": "metacloud-jobs"})

    await start_worker()
    kinds = await agent.serve(_in_state(http, admin, cluster_id, "attached"), timeout=40)
    assert kinds == ["validate"]
    events = await owner_conn.fetch("SELECT to_state FROM cluster_events WHERE cluster_id = $1 ORDER BY id",
                                    uuid.UUID(cluster_id))
    assert [e["to_state"] for e in events] == ["pending", "attaching", "attached"]
    provisions = await owner_conn.fetchval("SELECT count(*) FROM agent_commands WHERE cluster_id = $1",
                                           uuid.UUID(cluster_id))
    assert provisions == 2  # one provision and one validate: nothing enqueued twice
