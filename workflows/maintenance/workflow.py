"""``maintenance.daily``: one activity per concern, each idempotent and in its own transaction, all
as of the workflow's clock and side by side (one failing does not hold the others back); returns
(and logs, in one line) what each removed or made.

* ``maintenance.usage-partitions``: next months' raw usage partitions created, those past
  ``USAGE_RAW_RETENTION_DAYS`` that billing no longer needs dropped (``billing.usage.partitions``).
* ``maintenance.email-outbox``: mail sent, or given up on, more than ``HOUSEKEEPING_KEEP_DAYS`` ago.
* ``maintenance.expired-credentials``: sessions, one-time tokens, invites and registration tokens dead
  for that long; rate-limit hits no limit reads any more.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.maintenance.types import CredentialCounts, DailyResult, PartitionCounts, Step

__all__ = ["DailyMaintenanceWorkflow"]

# Bounded: a run that cannot finish fails visibly instead of retrying into the next day, whose run the
# Schedule's SKIP overlap policy would then drop.
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5),
                     maximum_attempts=10)
_TIMEOUT = timedelta(minutes=10)  # dropping a partition waits for the ingest transactions holding it


@workflow.defn(name="maintenance.daily")
class DailyMaintenanceWorkflow:
    @workflow.run
    async def run(self) -> DailyResult:
        step = Step(at=workflow.now().isoformat())
        partitions, outbox, credentials = await asyncio.gather(
            workflow.execute_activity("maintenance.usage-partitions", step, result_type=PartitionCounts,
                                      retry_policy=_RETRY, start_to_close_timeout=_TIMEOUT),
            workflow.execute_activity("maintenance.email-outbox", step, result_type=int,
                                      retry_policy=_RETRY, start_to_close_timeout=_TIMEOUT),
            workflow.execute_activity("maintenance.expired-credentials", step, result_type=CredentialCounts,
                                      retry_policy=_RETRY, start_to_close_timeout=_TIMEOUT),
        )
        result = DailyResult(partitions=partitions, outbox_deleted=outbox, credentials=credentials)
        workflow.logger.info("maintenance done: %s", result.summary())
        return result
