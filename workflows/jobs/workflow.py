"""The job workflows (deterministic code only; I/O in activities).

* ``jobs.lifecycle`` (id ``job-{job_id}``), started at submission: waits while the job is ``queued``
  (woken by the scheduler's ``placed`` signal, re-reading the record every ``placement_check_s`` in
  case a signal was lost), dispatches it (``start_job`` command; a local activity, as it is the hot
  path of submit-to-dispatch latency), then checks its status (fast after a change, backing off to
  ``max_poll_s``) until it ends. The agent pushes job reports, which the gateway applies to the record
  and follows with a ``report`` signal: that wakes the workflow, so a job's end shows at once, and a
  check only reads the record. Only while reports are stale (an old agent, lost reports) does a check
  ask the agent with a ``job_status`` command (see ``workflows.jobs.activities``). A lost cluster
  re-queues the job (``on_lost=requeue``, once) and the workflow waits for placement again. The
  ``cancel`` signal only wakes it: the API already marked the job cancelled and queued ``cancel_job``.
* ``jobs.scheduler`` (one per task queue): runs the metascheduler's leased loop as one long,
  heartbeating activity, then continues as new.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.jobs.types import (
        CheckInput,
        CheckOutcome,
        JobRef,
        LifecycleInput,
        LifecycleResult,
        SchedulerInput,
    )

__all__ = ["FINISHED", "JobLifecycleWorkflow", "SchedulerWorkflow"]

FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out", "lost", "missing"})
_SHORT = timedelta(seconds=30)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


async def _act(name: str, arg: Any, result_type: type[Any], timeout: timedelta = _SHORT) -> Any:
    return await workflow.execute_activity(name, arg, result_type=result_type, start_to_close_timeout=timeout,
                                           retry_policy=_RETRY)


@workflow.defn(name="jobs.lifecycle")
class JobLifecycleWorkflow:
    def __init__(self) -> None:
        self._placed = False
        self._cancel = False
        self._reported = False
        self._state = "queued"

    @workflow.signal(name="placed")
    def placed(self) -> None:
        self._placed = True

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        self._cancel = True

    @workflow.signal(name="report")
    def report(self) -> None:
        """An agent report changed the job's state (the gateway already applied it): check now."""
        self._reported = True

    @workflow.query(name="state")
    def state(self) -> str:
        return self._state

    @workflow.run
    async def run(self, inp: LifecycleInput) -> LifecycleResult:
        ref = JobRef(job_id=inp.job_id, org_id=inp.org_id)
        seq = 0
        while True:
            # Reset before the call: a `placed` signal arriving while it is in flight must not be lost.
            self._placed = False
            # Dispatch if placed (idempotent); otherwise it only reports the state. A local activity: this
            # is the hot path from placement to the start_job command.
            self._state = await workflow.execute_local_activity(
                "jobs.dispatch", ref, result_type=str, start_to_close_timeout=_SHORT, retry_policy=_RETRY)
            if self._state in FINISHED:
                return LifecycleResult(state=self._state)
            if self._state == "queued":
                await _wait(lambda: self._placed or self._cancel, inp.placement_check_s)
                continue
            poll = inp.min_poll_s
            while self._state not in FINISHED and self._state != "queued":
                await _wait(lambda: self._cancel or self._reported, poll)
                # A cancel or report during the check below wakes the next wait at once.
                self._cancel = self._reported = False
                seq += 1
                check_input = CheckInput(job_id=inp.job_id, org_id=inp.org_id, seq=seq, run_id=workflow.info().run_id,
                                         lost_grace_s=inp.lost_grace_s)
                check: CheckOutcome = await _act("jobs.check", check_input, CheckOutcome, timedelta(seconds=60))
                changed = check.changed or check.state != self._state  # a report changed it before the check
                self._state = check.state
                poll = inp.min_poll_s if changed else min(inp.max_poll_s, poll * 1.5)
                if workflow.info().is_continue_as_new_suggested():
                    workflow.continue_as_new(inp)
            if self._state in FINISHED:
                return LifecycleResult(state=self._state)
            # re-queued after its cluster was lost: wait to be placed again


async def _wait(condition: Callable[[], bool], seconds: float) -> None:
    """Wait for ``condition`` or ``seconds``, whichever comes first (Temporal raises on the timeout)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await workflow.wait_condition(condition, timeout=timedelta(seconds=seconds))


@workflow.defn(name="jobs.scheduler")
class SchedulerWorkflow:
    @workflow.run
    async def run(self, inp: SchedulerInput) -> None:
        await workflow.execute_activity(
            "jobs.schedule-loop", inp, start_to_close_timeout=timedelta(seconds=inp.budget_s + 120),
            # The loop heartbeats at every pass (at least every period_s). After a worker dies, its scheduler
            # is started again elsewhere only when this runs out, and until then no job is placed.
            heartbeat_timeout=timedelta(seconds=max(10.0, inp.period_s * 2)),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10)),
        )
        workflow.continue_as_new(inp)
