"""The Temporal Schedule ``maintenance.daily`` (03:15 UTC every day), created once per deployment;
every worker may ask (``ensure_schedule`` is idempotent)."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
)

__all__ = ["SCHEDULE_ID", "ensure_schedule", "schedule_id"]

SCHEDULE_ID = "maintenance.daily"


def schedule_id(task_queue: str) -> str:
    """The deployment's queue has the plain id; another queue (a test's) gets its own schedule."""
    return SCHEDULE_ID if task_queue == "metacloud" else f"{SCHEDULE_ID}-{task_queue}"


async def ensure_schedule(client: Client, task_queue: str) -> None:
    schedule = Schedule(
        action=ScheduleActionStartWorkflow("maintenance.daily", id=f"maintenance-daily-{task_queue}",
                                           task_queue=task_queue),
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(3)], minute=[ScheduleRange(15)])]),
        # a run missed while Temporal was down still happens when it is back, the same day
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(hours=12)),
    )
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(schedule_id(task_queue), schedule)
