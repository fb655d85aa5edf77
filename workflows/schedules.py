"""Temporal Schedules the workers create: one per deployment (per task queue), created by whichever worker
asks first; asking again changes nothing (an existing schedule is left as it is)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

__all__ = ["DEPLOYMENT_QUEUE", "ensure_calendar_schedule", "schedule_id"]

DEPLOYMENT_QUEUE = "metacloud"


def schedule_id(name: str, task_queue: str) -> str:
    """The deployment's queue has the plain id; another queue (a test's) gets its own schedule."""
    return name if task_queue == DEPLOYMENT_QUEUE else f"{name}-{task_queue}"


async def ensure_calendar_schedule(client: Client, *, name: str, workflow: str, task_queue: str,
                                   calendar: ScheduleCalendarSpec, catchup: timedelta, arg: Any = None) -> None:
    """Start ``workflow`` at every ``calendar`` moment, one run at a time (a run still going skips the next);
    a run missed while Temporal was down still happens if it is back within ``catchup``."""
    args = [] if arg is None else [arg]
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(workflow, args=args, id=f"{name.replace('.', '-')}-{task_queue}",
                                           task_queue=task_queue),
        spec=ScheduleSpec(calendars=[calendar]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=catchup),
    )
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(schedule_id(name, task_queue), schedule)
