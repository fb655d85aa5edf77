"""The cluster workflows under the time-skipping test server, with activities stubbed by name."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from workflows.clusters.activities import judge_validation
from workflows.clusters.types import (
    AttachInput,
    AttachResult,
    ClusterRef,
    CommandOutcome,
    DetachInput,
    EnqueueInput,
    HealthInput,
    MarkInput,
    Registered,
    StateChange,
    SweepInput,
    SweepResult,
    TokenReissued,
    ValidationCheck,
    ValidationVerdict,
    WaitCommandInput,
)
from workflows.clusters.workflow import AttachClusterWorkflow, ClusterHealthWorkflow, DetachClusterWorkflow


@dataclass
class Stubs:
    """Records what the workflows asked for; answers like a cluster whose agent does as told."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    outcomes: dict[str, CommandOutcome] = field(default_factory=dict)
    sweeps: int = 0
    online: bool = True

    def activities(self) -> list[Any]:
        stubs = self

        @activity.defn(name="clusters.mark-attaching")
        async def mark_attaching(inp: MarkInput) -> bool:
            stubs.calls.append(("attaching", inp.reason))
            return True

        @activity.defn(name="clusters.mark-attached")
        async def mark_attached(inp: MarkInput) -> bool:
            stubs.calls.append(("attached", inp.reason))
            return True

        @activity.defn(name="clusters.mark-failed")
        async def mark_failed(inp: MarkInput) -> bool:
            stubs.calls.append(("failed", inp.reason))
            return True

        @activity.defn(name="clusters.enqueue-command")
        async def enqueue(inp: EnqueueInput) -> str:
            stubs.calls.append(("enqueue", inp.dedupe_key))
            return inp.kind

        @activity.defn(name="clusters.wait-command")
        async def wait(inp: WaitCommandInput) -> CommandOutcome:
            return stubs.outcomes.get(inp.command_id, CommandOutcome(ok=True, result={"gpus": {"nvidia.com/gpu": 8}}))

        @activity.defn(name="clusters.check-validation")
        async def check(inp: ValidationCheck) -> ValidationVerdict:
            return judge_validation(inp.result, {"nvidia.com/gpu|A100": {"total": 8, "allocated": 0}})

        @activity.defn(name="clusters.sweep-heartbeats")
        async def sweep(inp: SweepInput) -> SweepResult:
            stubs.sweeps += 1
            if stubs.sweeps == 2:
                return SweepResult(disconnected=[StateChange("c1", "o1", "disconnected", "no heartbeat since 10:00:00 UTC")])
            return SweepResult()

        @activity.defn(name="clusters.agent-online")
        async def online(inp: ClusterRef) -> bool:
            return stubs.online

        @activity.defn(name="clusters.settle-jobs")
        async def settle(inp: DetachInput) -> int:
            stubs.calls.append(("settle", inp.jobs))
            return 0

        @activity.defn(name="clusters.revoke-access")
        async def revoke(inp: ClusterRef) -> int:
            stubs.calls.append(("revoke", inp.cluster_id))
            return 1

        @activity.defn(name="clusters.mark-detached")
        async def detached(inp: MarkInput) -> bool:
            stubs.calls.append(("detached", inp.reason))
            return True

        return [mark_attaching, mark_attached, mark_failed, enqueue, wait, check, sweep, online, settle, revoke,
                detached]


def _worker(env: WorkflowEnvironment, stubs: Stubs, queue: str) -> Worker:
    return Worker(env.client, task_queue=queue, activities=stubs.activities(),
                  workflows=[AttachClusterWorkflow, DetachClusterWorkflow, ClusterHealthWorkflow])


async def _start_attach(env: WorkflowEnvironment, queue: str, expires_in: timedelta) -> WorkflowHandle[Any, Any]:
    now = await env.get_current_time()
    return await env.client.start_workflow(
        "clusters.attach", AttachInput("c1", "o1", (now + expires_in).isoformat()), id=f"attach-{queue}",
        task_queue=queue, result_type=AttachResult)


async def test_attach_fails_with_a_reason_when_the_token_expires_unused(time_skipping_env: WorkflowEnvironment) -> None:
    stubs, queue = Stubs(), f"q-{uuid.uuid4().hex[:6]}"
    async with _worker(time_skipping_env, stubs, queue):
        handle = await _start_attach(time_skipping_env, queue, timedelta(hours=1))
        result = await handle.result()
    assert result == AttachResult(state="failed", reason="registration token expired")
    assert stubs.calls == [("failed", "registration token expired")]


async def test_a_reissued_token_moves_the_expiry_and_the_agent_then_attaches(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    stubs, queue = Stubs(), f"q-{uuid.uuid4().hex[:6]}"
    async with _worker(time_skipping_env, stubs, queue):
        handle = await _start_attach(time_skipping_env, queue, timedelta(minutes=5))
        now = await time_skipping_env.get_current_time()
        await handle.signal("token_reissued", TokenReissued((now + timedelta(hours=2)).isoformat()))
        await time_skipping_env.sleep(timedelta(minutes=30))  # past the first token's expiry
        assert stubs.calls == []
        await handle.signal("registered", Registered("r1", "agent 0.1.0, runtime kubernetes"))
        await handle.signal("registered", Registered("r2", "a repeat is ignored"))
        result = await handle.result()
    assert result.state == "attached"
    assert stubs.calls == [
        ("attaching", "agent registered (agent 0.1.0, runtime kubernetes); provisioning"),
        ("enqueue", "attach:r1:provision"),
        ("enqueue", "attach:r1:validate"),
        ("attached", "provisioned and validated"),
    ]


async def test_attach_fails_when_provisioning_fails_or_permissions_are_missing(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    stubs, queue = Stubs(), f"q-{uuid.uuid4().hex[:6]}"
    stubs.outcomes["provision"] = CommandOutcome(ok=False, error="namespaces is forbidden")
    async with _worker(time_skipping_env, stubs, queue):
        handle = await _start_attach(time_skipping_env, queue, timedelta(hours=1))
        await handle.signal("registered", Registered("r1"))
        assert (await handle.result()).reason == "provisioning failed: namespaces is forbidden"
        stubs.outcomes = {"validate": CommandOutcome(ok=True, result={"missing_permissions": ["create jobs"]})}
        handle = await time_skipping_env.client.start_workflow(
            "clusters.attach", AttachInput("c1", "o1", datetime.now(UTC).isoformat()), id=f"again-{queue}",
            task_queue=queue, start_signal="registered", start_signal_args=[Registered("r2")],
            result_type=AttachResult)
        result = await handle.result()
    assert result.state == "failed" and "missing permission: create jobs" in result.reason
    assert stubs.calls[-1][0] == "failed"


async def test_a_gpu_count_that_differs_from_the_inventory_is_noted_not_fatal() -> None:
    verdict = judge_validation({"gpus": {"nvidia.com/gpu|A100": 4}}, {"nvidia.com/gpu|A100": {"total": 8}})
    assert verdict.ok and verdict.notes == ["nvidia.com/gpu: nodes advertise 8, validation detected 4"]
    assert judge_validation({}, {"nvidia.com/gpu|A100": {"total": 8}}).notes == []


async def test_detach_cleans_up_before_revoking_and_marks_detached(time_skipping_env: WorkflowEnvironment) -> None:
    stubs, queue = Stubs(), f"q-{uuid.uuid4().hex[:6]}"
    async with _worker(time_skipping_env, stubs, queue):
        result = await time_skipping_env.client.execute_workflow(
            "clusters.detach", DetachInput("c1", "o1", jobs="cancel"), id=f"detach-{queue}", task_queue=queue,
            result_type=AttachResult)
        stubs.online = False
        offline = await time_skipping_env.client.execute_workflow(
            "clusters.detach", DetachInput("c2", "o1"), id=f"detach2-{queue}", task_queue=queue,
            result_type=AttachResult)
    kinds = [c[0] for c in stubs.calls]
    assert kinds[:4] == ["settle", "enqueue", "revoke", "detached"]
    assert stubs.calls[1] == ("enqueue", "detach:cleanup")
    assert result.reason == "detached: agent credential revoked; cleaned up"
    assert "the agent was offline" in offline.reason


async def test_the_health_workflow_sweeps_on_a_timer_and_records_changes(time_skipping_env: WorkflowEnvironment) -> None:
    stubs, queue = Stubs(), f"q-{uuid.uuid4().hex[:6]}"
    async with _worker(time_skipping_env, stubs, queue):
        handle = await time_skipping_env.client.start_workflow(
            "clusters.health", HealthInput(sweeps_per_run=3), id=f"health-{queue}", task_queue=queue)
        await handle.signal("reconnected", StateChange("c2", "o1", "attached", "back"))
        await time_skipping_env.sleep(timedelta(seconds=100))  # crosses a continue-as-new
        recent = await handle.query("recent_changes", result_type=list[StateChange])
        await handle.terminate()
    assert stubs.sweeps >= 5
    assert {(c.cluster_id, c.to_state) for c in recent} == {("c2", "attached"), ("c1", "disconnected")}
