"""Every workflow and activity the worker runs, in one list. New modules add themselves here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.settings import Settings
from workflows.billing.activities import BillingActivities
from workflows.billing.workflow import BILLING_WORKFLOWS
from workflows.clusters.activities import ClusterActivities
from workflows.clusters.workflow import AttachClusterWorkflow, ClusterHealthWorkflow, DetachClusterWorkflow
from workflows.jobs.activities import JobActivities
from workflows.jobs.workflow import JobLifecycleWorkflow, SchedulerWorkflow
from workflows.maintenance.activities import MaintenanceActivities
from workflows.maintenance.workflow import DailyMaintenanceWorkflow
from workflows.probe.activities import ProbeActivities
from workflows.probe.workflow import ProbeWorkflow

__all__ = ["Dependencies", "Registry", "build_registry"]


@dataclass(frozen=True)
class Dependencies:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class Registry:
    workflows: Sequence[type]
    activities: Sequence[Callable[..., Any]]


def build_registry(deps: Dependencies) -> Registry:
    probe = ProbeActivities(deps.sessions)
    clusters = ClusterActivities(deps.sessions)
    jobs = JobActivities(deps.sessions, deps.settings)
    billing = BillingActivities(deps.sessions, deps.settings)
    maintenance = MaintenanceActivities(deps.sessions, deps.settings)
    return Registry(
        workflows=[ProbeWorkflow, AttachClusterWorkflow, DetachClusterWorkflow, ClusterHealthWorkflow,
                   JobLifecycleWorkflow, SchedulerWorkflow, *BILLING_WORKFLOWS, DailyMaintenanceWorkflow],
        activities=[
            probe.record_probe,
            clusters.mark_attaching, clusters.mark_attached, clusters.mark_failed, clusters.enqueue_command,
            clusters.wait_command, clusters.check_validation, clusters.sweep_heartbeats, clusters.agent_online,
            clusters.settle_jobs, clusters.revoke_access, clusters.mark_detached,
            jobs.dispatch, jobs.check, jobs.schedule_loop,
            *billing.all(),
            *maintenance.all(),
        ],
    )
