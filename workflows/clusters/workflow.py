"""The cluster workflows (deterministic code only: time from ``workflow.now()``, I/O in activities).

* ``clusters.attach`` (id ``cluster-attach-{cluster_id}``), started when the cluster is created:
  waits for the ``registered`` signal or the token's expiry (``token_reissued`` moves it), marks the
  cluster ``attaching``, has the agent ``provision`` then ``validate`` through the command queue,
  judges the validation and marks it ``attached`` (compare-and-set: exactly once).
* ``clusters.detach`` (id ``cluster-detach-{cluster_id}``): settles jobs, asks the agent to clean up
  while it still can authenticate, revokes its access, marks ``detached``.
* ``clusters.health`` (one per task queue): sweeps stale heartbeats every 15 s and is told of
  reconnects by the gateway; it is where state changes fan out to other workflows (jobs, issue 5).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
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

__all__ = ["PROVISION_PAYLOAD", "AttachClusterWorkflow", "ClusterHealthWorkflow", "DetachClusterWorkflow"]

# Provisioning with the runtime's defaults: the jobs namespace, its service account and priority classes
# (Kubernetes), the jobs folder (local). Keys the runtimes understand: "quota" ({"requests.cpu": "64"}),
# "priority_classes" ([{name, value}]); plan caps will fill "quota".
PROVISION_PAYLOAD: dict[str, Any] = {}
JOBS_NAMESPACE = "metacloud-jobs"

_SHORT = timedelta(seconds=30)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
_WAIT_HEARTBEAT = timedelta(seconds=10)


async def _act(name: str, arg: Any, result_type: type[Any]) -> Any:
    return await workflow.execute_activity(name, arg, result_type=result_type, start_to_close_timeout=_SHORT,
                                           retry_policy=_RETRY)


async def _run_command(cluster_id: str, org_id: str, kind: str, dedupe_key: str, payload: dict[str, Any],
                       timeout_s: int) -> CommandOutcome:
    """Queue a command (idempotent on ``dedupe_key``) and wait for the agent's result."""
    command_id: str = await _act("clusters.enqueue-command",
                                 EnqueueInput(cluster_id=cluster_id, org_id=org_id, kind=kind,
                                              dedupe_key=dedupe_key, payload=payload), str)
    deadline = workflow.now() + timedelta(seconds=timeout_s)
    outcome: CommandOutcome = await workflow.execute_activity(
        "clusters.wait-command",
        WaitCommandInput(command_id=command_id, org_id=org_id, deadline=deadline.isoformat()),
        result_type=CommandOutcome,
        start_to_close_timeout=timedelta(seconds=timeout_s + 60),
        heartbeat_timeout=_WAIT_HEARTBEAT,
        retry_policy=_RETRY,
    )
    return outcome


@workflow.defn(name="clusters.attach")
class AttachClusterWorkflow:
    def __init__(self) -> None:
        self._registered: Registered | None = None
        self._expires_at: datetime | None = None
        self._expiry_moved = False
        self._phase = "waiting for the agent"

    @workflow.signal(name="registered")
    def registered(self, sig: Registered) -> None:
        if self._registered is None:  # a repeated signal (the gateway re-sends while pending) changes nothing
            self._registered = sig

    @workflow.signal(name="token_reissued")
    def token_reissued(self, sig: TokenReissued) -> None:
        self._expires_at = datetime.fromisoformat(sig.expires_at)
        self._expiry_moved = True

    @workflow.query(name="phase")
    def phase(self) -> str:
        return self._phase

    @workflow.run
    async def run(self, inp: AttachInput) -> AttachResult:
        cid, org = inp.cluster_id, inp.org_id
        if self._expires_at is None:
            self._expires_at = datetime.fromisoformat(inp.token_expires_at)
        while self._registered is None:
            remaining = (self._expires_at - workflow.now()).total_seconds()
            if remaining <= 0:
                reason = "registration token expired"
                await _act("clusters.mark-failed", MarkInput(cid, org, reason), bool)
                return AttachResult(state="failed", reason=reason)
            self._expiry_moved = False
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._registered is not None or self._expiry_moved,
                                              timeout=timedelta(seconds=remaining))
        reg = self._registered
        self._phase = "provisioning"
        attaching: bool = await _act("clusters.mark-attaching",
                                     MarkInput(cid, org, f"agent registered ({reg.summary}); provisioning"), bool)
        if not attaching:
            return AttachResult(state="abandoned", reason="the cluster is being detached")

        key = f"attach:{reg.registration_id}"
        outcome = await _run_command(cid, org, "provision", f"{key}:provision", PROVISION_PAYLOAD,
                                     inp.command_timeout_s)
        if not outcome.ok:
            return await self._fail(cid, org, f"provisioning failed: {outcome.error}")
        self._phase = "validating"
        outcome = await _run_command(cid, org, "validate", f"{key}:validate", {}, inp.command_timeout_s)
        if not outcome.ok:
            return await self._fail(cid, org, f"validation failed: {outcome.error}")
        verdict: ValidationVerdict = await _act("clusters.check-validation",
                                                ValidationCheck(cid, org, outcome.result), ValidationVerdict)
        if not verdict.ok:
            return await self._fail(cid, org, "validation failed: " + "; ".join(verdict.problems))
        reason = "provisioned and validated"
        if verdict.notes:
            reason += "; note: " + "; ".join(verdict.notes)
        attached: bool = await _act("clusters.mark-attached", MarkInput(cid, org, reason), bool)
        self._phase = "done"
        if not attached:
            return AttachResult(state="abandoned", reason="the cluster left 'attaching' (detach requested)")
        return AttachResult(state="attached", reason=reason)

    async def _fail(self, cid: str, org: str, reason: str) -> AttachResult:
        self._phase = "failed"
        await _act("clusters.mark-failed", MarkInput(cid, org, reason), bool)
        return AttachResult(state="failed", reason=reason)


@workflow.defn(name="clusters.detach")
class DetachClusterWorkflow:
    @workflow.run
    async def run(self, inp: DetachInput) -> AttachResult:
        cid, org = inp.cluster_id, inp.org_id
        # Seam for issue 5: drain or cancel the cluster's jobs before anything is removed.
        await workflow.execute_activity("clusters.settle-jobs", inp, result_type=int,
                                        start_to_close_timeout=timedelta(hours=24), heartbeat_timeout=timedelta(minutes=2),
                                        retry_policy=_RETRY)
        notes: list[str] = []
        # Cleanup goes first: once access is revoked the agent can no longer fetch the command.
        online: bool = await _act("clusters.agent-online", ClusterRef(cid, org), bool)
        if online:
            outcome = await _run_command(cid, org, "cleanup", "detach:cleanup", {"jobs": inp.jobs},
                                         inp.cleanup_timeout_s)
            if not outcome.ok:
                notes.append(f"cleanup on the cluster did not finish ({outcome.error}); delete the "
                             f"'{JOBS_NAMESPACE}' and 'metacloud-agent' namespaces by hand")
        else:
            notes.append("the agent was offline, so nothing was removed from the cluster; delete the "
                         f"'{JOBS_NAMESPACE}' and 'metacloud-agent' namespaces by hand")
        await _act("clusters.revoke-access", ClusterRef(cid, org), int)
        reason = "detached: agent credential revoked" + ("; " + "; ".join(notes) if notes else "; cleaned up")
        await _act("clusters.mark-detached", MarkInput(cid, org, reason), bool)
        return AttachResult(state="detached", reason=reason)


_RECENT = 100


@workflow.defn(name="clusters.health")
class ClusterHealthWorkflow:
    def __init__(self) -> None:
        self._recent: list[StateChange] = []

    @workflow.signal(name="reconnected")
    def reconnected(self, change: StateChange) -> None:
        self._note(change)

    @workflow.query(name="recent_changes")
    def recent_changes(self) -> list[StateChange]:
        return list(self._recent)

    def _note(self, change: StateChange) -> None:
        # Seam for issue 5: job lifecycle workflows on this cluster hear about the change from here.
        self._recent = [*self._recent, change][-_RECENT:]

    @workflow.run
    async def run(self, inp: HealthInput) -> None:
        self._recent = [*inp.recent, *self._recent][-_RECENT:]
        sweep = SweepInput(ttl_s=inp.ttl_s, grace_s=inp.grace_s, restart_grace_s=inp.restart_grace_s)
        for _ in range(inp.sweeps_per_run):
            try:
                result: SweepResult = await workflow.execute_activity(
                    "clusters.sweep-heartbeats", sweep, result_type=SweepResult,
                    start_to_close_timeout=timedelta(seconds=max(10.0, inp.interval_s)),
                    retry_policy=RetryPolicy(maximum_attempts=1),  # the next sweep comes soon anyway
                )
            except ActivityError:
                workflow.logger.warning("heartbeat sweep failed; the next one retries")
                result = SweepResult()
            for change in result.disconnected:
                self._note(change)
            await workflow.sleep(timedelta(seconds=inp.interval_s))
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(HealthInput(interval_s=inp.interval_s, ttl_s=inp.ttl_s, grace_s=inp.grace_s,
                                             restart_grace_s=inp.restart_grace_s, sweeps_per_run=inp.sweeps_per_run,
                                             recent=self._recent))
