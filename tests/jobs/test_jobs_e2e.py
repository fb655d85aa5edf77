"""End to end: the real gateway (ASGI), the Temporal dev server with a worker running every workflow
(cluster attach, the metascheduler, job lifecycles), and the real agent with its Kubernetes runtime
against the Kubernetes API emulator (two tainted A100 nodes and a CPU node)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.runtimes.kubernetes import KubernetesRuntime
from tests.clusters.helpers import eventually
from tests.connectors.kube_emulator import kube_emulator
from tests.jobs.conftest import Member, WorkerFactory, connected_agent, set_plan

NS = "metacloud-jobs"


async def _get(http: httpx.AsyncClient, who: Member, url: str) -> dict[str, Any]:
    resp = await http.get(url, headers=who.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def test_a_gpu_job_runs_on_the_gpu_pool_is_cancelled_and_a_free_org_waits_with_the_reason(
    http: httpx.AsyncClient, owner: Member, start_worker: WorkerFactory, db: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    await start_worker()
    await set_plan(db, owner.org.id, "payg")
    async with kube_emulator() as kube:
        runtime = KubernetesRuntime(host=kube.url, request_timeout_s=5)
        try:
            async with connected_agent(http, owner, runtime, tmp_path, name="gpu-prod",
                                       provider="kubernetes"):
                resp = await http.post(owner.url(), headers=owner.headers, json={
                    "name": "finetune", "image": "nvcr.io/nvidia/pytorch:24.01-py3", "command": ["python", "train.py"],
                    "resources": {"cpu": 8, "memory": "64Gi", "gpus": 2, "gpu_type": "A100"}})
                assert resp.status_code == 201, resp.text
                job_id = resp.json()["id"]

                async def created() -> bool:
                    return bool(kube.names("batch/v1/jobs", NS))
                await eventually(created, timeout=20)
                [name] = kube.names("batch/v1/jobs", NS)
                manifest = kube.get("batch/v1/jobs", NS, name)
                assert manifest is not None
                pod = manifest["spec"]["template"]["spec"]
                container = pod["containers"][0]
                assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
                assert container["image"] == "nvcr.io/nvidia/pytorch:24.01-py3"
                assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
                assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100-SXM4-80GB"}
                job = await _get(http, owner, owner.url(f"/{job_id}"))
                assert job["cluster"]["name"] == "gpu-prod"
                assert job["state"] in ("dispatched", "running")
                assert [e["state"] for e in job["events"]][:3] == ["queued", "placed", "dispatched"]

                cancelled = await http.post(owner.url(f"/{job_id}/cancel"), headers=owner.headers)
                assert cancelled.json()["state"] == "cancelled"

                async def deleted() -> bool:
                    return not kube.names("batch/v1/jobs", NS)
                await eventually(deleted, timeout=20)

                await set_plan(db, owner.org.id, "free")
                wide = await http.post(owner.url(), headers=owner.headers, json={
                    "name": "wide", "image": "python:3.12", "command": ["python", "-c", "pass"],
                    "resources": {"cpu": 10, "memory": "8Gi"}})
                wide_id = wide.json()["id"]
                expected = (f"Free plan allows 8 vCPU at once; this job asks 10 vCPU — upgrade at "
                            f"/orgs/{owner.org.slug}/billing")

                async def explained() -> bool:
                    return bool((await _get(http, owner, owner.url(f"/{wide_id}")))["reason"] == expected)
                await eventually(explained, timeout=15)
                assert (await _get(http, owner, owner.url(f"/{wide_id}")))["state"] == "queued"
        finally:
            await runtime.aclose()
