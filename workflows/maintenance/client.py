"""The Temporal Schedule ``maintenance.daily`` (03:15 UTC every day), created once per deployment;
every worker may ask (``ensure_schedule`` is idempotent)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, ScheduleCalendarSpec, ScheduleRange

from workflows import schedules

__all__ = ["SCHEDULE_ID", "ensure_schedule", "schedule_id"]

SCHEDULE_ID = "maintenance.daily"


def schedule_id(task_queue: str) -> str:
    return schedules.schedule_id(SCHEDULE_ID, task_queue)


async def ensure_schedule(client: Client, task_queue: str) -> None:
    # a run missed while Temporal was down still happens when it is back, the same day
    await schedules.ensure_calendar_schedule(
        client, name=SCHEDULE_ID, workflow="maintenance.daily", task_queue=task_queue,
        calendar=ScheduleCalendarSpec(hour=[ScheduleRange(3)], minute=[ScheduleRange(15)]),
        catchup=timedelta(hours=12))
