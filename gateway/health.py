"""Liveness and readiness: ``/healthz`` says the process is up, ``/readyz`` that it can serve."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from litestar import Response, get
from litestar.params import FromQuery
from sqlalchemy import text
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from gateway.deps import Runtime
from gateway.runtime import GatewayRuntime
from workflows.probe.types import ProbeInput, ProbeResult
from workflows.probe.workflow import ProbeWorkflow

__all__ = ["healthz", "readyz"]


@get("/healthz", tags=["health"], summary="The process is up", opt={"public": "liveness probe"}, sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check_database(runtime: GatewayRuntime) -> dict[str, Any]:
    try:
        async with asyncio.timeout(2):
            async with runtime.engine.connect() as conn:
                await conn.execute(text("select 1"))
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": f"database unreachable ({type(exc).__name__})"}


async def _check_temporal(runtime: GatewayRuntime) -> dict[str, Any]:
    try:
        client = await runtime.temporal.get(timeout=2)
        async with asyncio.timeout(2):
            await client.service_client.check_health()
        return {"ok": True, "namespace": runtime.settings.temporal_namespace}
    except Exception as exc:
        runtime.temporal.client = None  # reconnect next time
        return {"ok": False, "error": f"temporal unreachable ({type(exc).__name__})"}


async def _check_worker(runtime: GatewayRuntime) -> dict[str, Any]:
    """Deep check: a durable round trip through a worker and back to the database."""
    try:
        client = await runtime.temporal.get(timeout=2)
        queue = runtime.settings.temporal_task_queue
        pollers = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=runtime.settings.temporal_namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        if not pollers.pollers:
            return {"ok": False, "error": f"no worker is polling task queue {queue!r}"}
        probe_id = str(uuid.uuid4())
        result: ProbeResult = await client.execute_workflow(
            ProbeWorkflow.run,
            ProbeInput(probe_id=probe_id, message="readyz"),
            id=f"probe-{probe_id}",
            task_queue=runtime.settings.temporal_task_queue,
            execution_timeout=timedelta(seconds=10),
        )
        return {"ok": True, "worker": result.worker_identity}
    except Exception as exc:
        return {"ok": False, "error": f"no worker completed the probe ({type(exc).__name__})"}


@get("/readyz", tags=["health"], summary="Database and Temporal reachable",
     opt={"public": "readiness probe for load balancers"})
async def readyz(runtime: Runtime, deep: FromQuery[bool] = False) -> Response[dict[str, Any]]:
    db, tmp = await asyncio.gather(_check_database(runtime), _check_temporal(runtime))
    checks = {"database": db, "temporal": tmp}
    if deep and tmp["ok"]:
        checks["worker"] = await _check_worker(runtime)
    ok = all(c["ok"] for c in checks.values())
    return Response(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": "5"},
    )
