"""Inputs and results of the job workflows and activities: frozen dataclasses of plain values."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckInput", "CheckOutcome", "JobRef", "LifecycleInput", "LifecycleResult", "SchedulerInput"]


@dataclass(frozen=True)
class SchedulerInput:
    period_s: float = 5.0  # a pass at least this often (reasons refresh, inventory moves)
    budget_s: float = 300.0  # one activity leads this long, then the workflow continues as new
    reserve_after_s: float = 600.0  # a job waiting longer reserves capacity (no starvation)
    age_step_s: float = 60.0  # +1 effective priority per this many seconds waited


@dataclass(frozen=True)
class LifecycleInput:
    job_id: str
    org_id: str
    min_poll_s: float = 0.5  # status polls start fast after a change...
    max_poll_s: float = 10.0  # ...and back off to this while nothing changes
    lost_grace_s: float = 120.0  # a disconnected cluster's jobs are lost after this
    placement_check_s: float = 30.0  # re-read the record while queued, in case a `placed` signal was lost


@dataclass(frozen=True)
class JobRef:
    job_id: str
    org_id: str


@dataclass(frozen=True)
class CheckInput:
    job_id: str
    org_id: str
    seq: int  # the status command's number: a retried activity reuses the same command
    run_id: str = ""  # with seq, unique across continue-as-new
    lost_grace_s: float = 120.0
    wait_s: float = 10.0  # how long to wait for the agent's answer


@dataclass(frozen=True)
class CheckOutcome:
    state: str
    reason: str = ""
    changed: bool = False


@dataclass(frozen=True)
class LifecycleResult:
    state: str
    reason: str = ""
