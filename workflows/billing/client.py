"""Starting the billing workflows (gateway, CLI, worker) and the monthly Schedule.

* ``ensure_schedule``: the Temporal Schedule ``billing.monthly-close`` (00:05 UTC on the 1st), created
  once per deployment; every worker may ask.
* ``close_now``: signal-with-start of ``billing.close-period`` with ``close_now``: a close already
  waiting out its grace is told to go ahead; otherwise one starts and goes at once. Then its result.
* ``start_dunning`` / ``tell_settled``: what webhooks do after their transaction commits.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio.client import Client, ScheduleCalendarSpec, ScheduleRange
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from workflows.billing.types import (
    CloseInput,
    CloseResult,
    DunningInput,
    MonthlyCloseInput,
    close_workflow_id,
    dunning_workflow_id,
)
from workflows.schedules import ensure_calendar_schedule

__all__ = ["SCHEDULE_ID", "close_now", "ensure_schedule", "start_dunning", "tell_settled"]

SCHEDULE_ID = "billing.monthly-close"


async def ensure_schedule(client: Client, task_queue: str) -> None:
    await ensure_calendar_schedule(
        client, name=SCHEDULE_ID, workflow="billing.monthly-close", arg=MonthlyCloseInput(), task_queue=task_queue,
        calendar=ScheduleCalendarSpec(day_of_month=[ScheduleRange(1)], hour=[ScheduleRange(0)],
                                      minute=[ScheduleRange(5)]),
        catchup=timedelta(days=7))


async def close_now(client: Client, task_queue: str, *, org_id: str, period: str,
                    timeout: float | None = 120.0) -> CloseResult:
    """Close ``period`` for one org without waiting for the grace (operators, ``metacloud billing close``)."""
    handle = await client.start_workflow(
        "billing.close-period", CloseInput(org_id=org_id, period=period, grace_s=0),
        id=close_workflow_id(org_id, period), task_queue=task_queue, start_signal="close_now",
        result_type=CloseResult, execution_timeout=None)
    if timeout is None:
        return CloseResult(org_id=org_id, period=period, status="started")
    result: CloseResult = await asyncio.wait_for(handle.result(), timeout)
    return result


async def start_dunning(client: Client, task_queue: str, inp: DunningInput) -> None:
    await client.start_workflow("billing.dunning", inp, id=dunning_workflow_id(inp.invoice_id), task_queue=task_queue,
                                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)


async def tell_settled(client: Client, invoice_id: str) -> None:
    """Wake the invoice's dunning so it ends now (nothing to do when none runs)."""
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(dunning_workflow_id(invoice_id)).signal("settled")
