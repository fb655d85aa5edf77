"""The probe workflow under the time-skipping test server, with its activity stubbed by name."""

from __future__ import annotations

import uuid

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from workflows.probe.types import ProbeInput, ProbeResult
from workflows.probe.workflow import ProbeWorkflow


@activity.defn(name="system.record-probe")
async def fake_record(inp: ProbeInput) -> ProbeResult:
    return ProbeResult(probe_id=inp.probe_id, worker_identity="stub")


async def test_probe_returns_what_its_activity_recorded(time_skipping_env: WorkflowEnvironment) -> None:
    queue = f"probe-{uuid.uuid4().hex[:6]}"
    async with Worker(time_skipping_env.client, task_queue=queue, workflows=[ProbeWorkflow],
                      activities=[fake_record]):
        result = await time_skipping_env.client.execute_workflow(
            ProbeWorkflow.run, ProbeInput(probe_id="p1", message="hi"), id=f"wf-{queue}", task_queue=queue,
            result_type=ProbeResult,
        )
    assert result == ProbeResult(probe_id="p1", worker_identity="stub")
