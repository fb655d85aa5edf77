"""Activities of the job workflows. Each is idempotent: state changes read the row ``FOR UPDATE`` and
change it only from the states they expect; commands are deduplicated on their key (``start_job`` on
the job id, ``job_status`` on the workflow run and poll number).

Job status is pushed: the agent posts job reports (``POST /agent/v1/job-reports``), which the gateway
folds into the record and follows with a ``report`` signal. While the last report is fresh
(``JOB_REPORT_FRESH_S``), or the agent's answer to ``start_job`` said it pushes the job and its first
report may still be on its way, a check only reads the record (and still applies the lost-cluster,
max-runtime and failed-start rules). When reports are stale (an agent from before job reports, one started with
them off, or reports lost on the way), a check falls back to asking: it queues one ``job_status``
command and waits for the agent's answer, a command row per job per check.

The scheduler activity composes what only this layer may: billing's plan caps (passed to the
metascheduler as plain values) and Temporal signals to the placed jobs' workflows.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from billing.entitlements import caps_for_orgs
from connectors.protocol import CommandKind
from connectors.server import commands
from connectors.server.jobs import lifecycle
from connectors.server.jobs.loop import SchedulerLoop
from connectors.server.jobs.placement import PassOptions, PlanCaps
from connectors.server.jobs.scheduler import PlacedJob
from tenants.db import tenant_session
from tenants.scope import TenantScope
from tenants.settings import Settings
from workflows.jobs.client import signal_placed
from workflows.jobs.types import CheckInput, CheckOutcome, JobRef, SchedulerInput

__all__ = ["JobActivities", "plan_caps"]

_SIGNAL_CONCURRENCY = 64


async def plan_caps(session: AsyncSession, org_ids: list[uuid.UUID]) -> dict[uuid.UUID, PlanCaps]:
    """Billing's caps as the metascheduler's plain values (unlimited plans need no check)."""
    return {org: PlanCaps(plan_title=c.plan_title, cpu_millis=c.cpu_millis, memory_bytes=c.memory_bytes,
                          gpus=c.gpus, upgrade_url=c.upgrade_url)
            for org, c in (await caps_for_orgs(session, org_ids)).items() if not c.unlimited}


class JobActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings

    @asynccontextmanager
    async def _session(self, org_id: str) -> AsyncIterator[AsyncSession]:
        async with tenant_session(self._sessions, TenantScope.for_system(uuid.UUID(org_id), "jobs.lifecycle")) as s:
            yield s

    @activity.defn(name="jobs.dispatch")
    async def dispatch(self, ref: JobRef) -> str:
        async with self._session(ref.org_id) as s:
            return await lifecycle.dispatch(s, uuid.UUID(ref.job_id))

    @activity.defn(name="jobs.check")
    async def check(self, inp: CheckInput) -> CheckOutcome:
        """Where the job is now: lost cluster, max runtime, a failed start, else the agent's status (the
        record while its reports are fresh, else asked with a ``job_status`` command)."""
        job_id = uuid.UUID(inp.job_id)
        async with self._session(inp.org_id) as s:
            snap = await lifecycle.snapshot(s, job_id)
            if snap is None:
                return CheckOutcome(state="missing", changed=True)
            if snap.finished or snap.state == "queued":
                return CheckOutcome(state=snap.state, changed=True)
            before = snap.state
            lost = _lost_reason(snap, inp.lost_grace_s)
            if lost is not None:
                return CheckOutcome(state=await lifecycle.mark_lost(s, job_id, lost), reason=lost, changed=True)
            if snap.cluster_state == "disconnected":
                return CheckOutcome(state=before, reason="its cluster is disconnected; waiting for it to return")
            if before == "running" and snap.max_runtime_s and lifecycle.past(snap.started_at, snap.max_runtime_s):
                reason = f"ran longer than its max runtime ({snap.max_runtime_s} s); stopped"
                await lifecycle.finish(s, job_id, "timed_out", reason, cancel_on_cluster=True)
                return CheckOutcome(state="timed_out", reason=reason, changed=True)
            start = await lifecycle.start_outcome(s, job_id)
            if start.state == "failed":
                reason = f"the agent could not start it: {start.error or 'no reason given'}"
                await lifecycle.finish(s, job_id, "failed", reason)
                return CheckOutcome(state="failed", reason=reason, changed=True)
            if start.state != "succeeded" or snap.cluster_id is None or lifecycle.reports_current(snap, start):
                return CheckOutcome(state=before)
            command_id = await commands.enqueue(
                s, org_id=uuid.UUID(inp.org_id), cluster_id=uuid.UUID(snap.cluster_id), kind=CommandKind.JOB_STATUS,
                dedupe_key=f"status:{job_id}:{inp.run_id[:12]}:{inp.seq}", payload={"job_id": str(job_id)})
        view = await self._wait(inp.org_id, command_id, inp.wait_s)
        if view is None or view.state != "succeeded" or view.result is None:
            return CheckOutcome(state=before)
        async with self._session(inp.org_id) as s:
            state = await lifecycle.apply_status(s, job_id, view.result)
        return CheckOutcome(state=state, changed=state != before)

    async def _wait(self, org_id: str, command_id: uuid.UUID, wait_s: float) -> commands.CommandView | None:
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + wait_s, 0.05
        while True:
            async with self._session(org_id) as s:
                view = await commands.get_command(s, command_id)
            if view.done or loop.time() >= deadline:
                return view if view.done else None
            activity.heartbeat()
            await asyncio.sleep(pause)
            pause = min(0.5, pause * 1.5)

    @activity.defn(name="jobs.schedule-loop")
    async def schedule_loop(self, inp: SchedulerInput) -> int:
        """Lead the metascheduler for ``budget_s`` (see ``connectors.server.jobs.loop``)."""
        client = activity.client()
        queue = activity.info().task_queue
        gate = asyncio.Semaphore(_SIGNAL_CONCURRENCY)

        async def tell(job: PlacedJob) -> None:
            async with gate:
                await signal_placed(client, queue, job_id=job.job_id, org_id=job.org_id)

        async def on_placed(placed: list[PlacedJob]) -> None:
            await asyncio.gather(*(tell(j) for j in placed))

        loop = SchedulerLoop(self._sessions, self._settings.resolved_app_database_url, caps_provider=plan_caps,
                             on_placed=on_placed, heartbeat=activity.heartbeat, period_s=inp.period_s,
                             opts=PassOptions(reserve_after_s=inp.reserve_after_s, age_step_s=inp.age_step_s))
        return await loop.run(budget_s=inp.budget_s)


def _lost_reason(snap: lifecycle.JobSnapshot, grace_s: float) -> str | None:
    if snap.cluster_id is None or snap.cluster_state is None:
        return "its cluster was removed"
    if snap.cluster_state in ("detached", "failed"):
        return f"its cluster is {snap.cluster_state}"
    if snap.cluster_state == "disconnected" and lifecycle.past(snap.cluster_state_since, grace_s):
        since = snap.cluster_state_since.strftime("%H:%M:%S UTC") if snap.cluster_state_since else "?"
        return f"its cluster has been disconnected since {since} (longer than {grace_s:g} s)"
    return None
