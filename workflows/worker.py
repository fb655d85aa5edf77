"""The Temporal worker process: ``metacloud worker``."""

from __future__ import annotations

import asyncio
import logging
import signal

from temporalio.client import Client
from temporalio.worker import Worker

from tenants.db import create_app_engine, create_sessionmaker
from tenants.email import run_email_sender
from tenants.settings import Settings
from workflows.billing.client import ensure_schedule as ensure_billing_schedule
from workflows.client import connect
from workflows.clusters.client import ensure_health
from workflows.jobs.client import ensure_scheduler
from workflows.maintenance.client import ensure_schedule as ensure_maintenance_schedule
from workflows.registry import Dependencies, build_registry

__all__ = ["build_worker", "run_worker"]

log = logging.getLogger(__name__)


def build_worker(client: Client, deps: Dependencies, *, task_queue: str | None = None) -> Worker:
    registry = build_registry(deps)
    return Worker(
        client,
        task_queue=task_queue or deps.settings.temporal_task_queue,
        workflows=list(registry.workflows),
        activities=list(registry.activities),
    )


async def run_worker(settings: Settings) -> None:
    engine = create_app_engine(settings)
    deps = Dependencies(settings=settings, sessions=create_sessionmaker(engine))
    client = await connect(settings)
    worker = build_worker(client, deps)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker started", extra={"task_queue": settings.temporal_task_queue})
    # The email outbox sender runs beside the Temporal worker; rows are claimed with SKIP LOCKED,
    # so every worker replica may run one.
    mailer = asyncio.create_task(run_email_sender(deps.sessions, settings, stop), name="email-sender")
    async with worker:
        # The health sweep must run even when no cluster changed since a control-plane restart;
        # starting it is idempotent (USE_EXISTING), so every replica may ask.
        await ensure_health(client, settings.temporal_task_queue)
        # Likewise the scheduler: queued jobs must not wait for the next submission after a deploy.
        await ensure_scheduler(client, settings.temporal_task_queue)
        await ensure_billing_schedule(client, settings.temporal_task_queue)  # the monthly close; once per deployment
        await ensure_maintenance_schedule(client, settings.temporal_task_queue)  # daily housekeeping; likewise
        await stop.wait()
        log.info("worker stopping")
    await mailer
    await engine.dispose()
