"""The billing workflows (deterministic: time from ``workflow.now()``, every effect in an activity).

* ``billing.monthly-close`` (started by the Temporal Schedule ``billing.monthly-close`` on the 1st):
  applies the plan changes due, lists the orgs that may owe for last month, starts one
  ``billing.close-period`` per org (deduplicated by workflow id).
* ``billing.close-period`` (id ``billing-close-{org_id}-{YYYY-MM}``): waits out the grace for late
  usage (default 2 days; the ``close_now`` signal, sent by the manual close, ends the wait) -> writes
  the invoice (close, rate, draft -> open) -> pushes it to Stripe and collects -> on a failed payment
  (or, on invoice collection, an unpaid invoice) starts dunning.
* ``billing.dunning`` (id ``billing-dunning-{invoice_id}``): past due -> card retries on days 1, 3, 5
  -> blocked at the end of the grace -> waits for the payment (webhooks restore at once and send
  ``settled``; a daily check catches a missed one).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from billing.ledger.periods import Period, previous_period
    from workflows.billing.types import (
        CloseInput,
        CloseResult,
        DunningInput,
        DunningState,
        DunningStep,
        MonthlyCloseInput,
        OrgsToCloseInput,
        PlanChangesInput,
        PushInput,
        PushResult,
        StartClosesInput,
        WriteInput,
        WrittenResult,
        dunning_workflow_id,
    )

__all__ = ["BILLING_WORKFLOWS", "ClosePeriodWorkflow", "DunningWorkflow", "MonthlyCloseWorkflow"]

_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5),
                     non_retryable_error_types=["LedgerMismatch", "NotFound", "InvalidInput", "PermissionDenied"])
_BATCH = 200


async def _act(name: str, arg: Any, result_type: type[Any], *, minutes: int = 2) -> Any:
    return await workflow.execute_activity(name, arg, result_type=result_type, retry_policy=_RETRY,
                                           start_to_close_timeout=timedelta(minutes=minutes))


@workflow.defn(name="billing.close-period")
class ClosePeriodWorkflow:
    def __init__(self) -> None:
        self._now = False

    @workflow.signal(name="close_now")
    def close_now(self) -> None:
        self._now = True

    @workflow.run
    async def run(self, inp: CloseInput) -> CloseResult:
        wait = Period(inp.period).end + timedelta(seconds=inp.grace_s) - workflow.now()
        if wait > timedelta(0) and not self._now:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._now, timeout=wait)
        written: WrittenResult = await _act("billing.write-invoice", WriteInput(
            org_id=inp.org_id, period=inp.period, at=workflow.now().isoformat()), WrittenResult, minutes=10)
        if written.invoice_id is None:
            return CloseResult(org_id=inp.org_id, period=inp.period, status="nothing_to_bill")
        pushed: PushResult = await _act("billing.push-invoice", PushInput(org_id=inp.org_id,
                                                                           invoice_id=written.invoice_id),
                                        PushResult, minutes=5)
        if pushed.payment == "failed" or (written.collection == "invoice" and pushed.status == "open"):
            await self._start_dunning(inp.org_id, written, pushed)
        return CloseResult(org_id=inp.org_id, period=inp.period, status=pushed.status, invoice_id=pushed.invoice_id,
                           number=written.number, total_cents=pushed.total_cents,
                           stripe_invoice_id=pushed.stripe_invoice_id, payment=pushed.payment)

    async def _start_dunning(self, org_id: str, written: WrittenResult, pushed: PushResult) -> None:
        now = workflow.now().isoformat()
        inp = DunningInput(org_id=org_id, invoice_id=pushed.invoice_id, failed_at=written.due_at or now,
                           collection=written.collection,
                           due_at=written.due_at if written.collection == "invoice" else None)
        # A webhook may have started it already: one dunning per invoice.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                DunningWorkflow.run, inp, id=dunning_workflow_id(pushed.invoice_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON)


@workflow.defn(name="billing.dunning")
class DunningWorkflow:
    def __init__(self) -> None:
        self._settled = False

    @workflow.signal(name="settled")
    def settled(self) -> None:
        self._settled = True

    async def _until(self, at: datetime) -> None:
        wait = at - workflow.now()
        if wait > timedelta(0) and not self._settled:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._settled, timeout=wait)

    def _step(self, inp: DunningInput) -> DunningStep:
        return DunningStep(org_id=inp.org_id, invoice_id=inp.invoice_id, at=workflow.now().isoformat())

    @workflow.run
    async def run(self, inp: DunningInput) -> str:
        if inp.due_at:  # invoice collection: nothing is late until the due date
            await self._until(datetime.fromisoformat(inp.due_at))
        state: DunningState = await _act("billing.dunning-start", self._step(inp), DunningState)
        if state.settled:
            return "paid"
        start = workflow.now() if inp.due_at else datetime.fromisoformat(inp.failed_at)
        grace_until = start + timedelta(days=inp.grace_days)
        if inp.collection == "card":
            for days in inp.retry_days:
                at = start + timedelta(days=days)
                if at >= grace_until:
                    break
                await self._until(at)
                state = await _act("billing.dunning-retry", self._step(inp), DunningState)
                if state.settled:
                    return "paid"
                self._settled = False  # a signal is a hint; the ledger decides
        await self._until(grace_until)
        state = await _act("billing.dunning-block", self._step(inp), DunningState)
        if state.settled:
            return "paid"
        self._settled = False
        for _ in range(inp.max_checks):
            await self._until(workflow.now() + timedelta(seconds=inp.check_every_s))
            state = await _act("billing.dunning-check", self._step(inp), DunningState)
            if state.settled:
                return "restored"
            self._settled = False
        return "unpaid"


@workflow.defn(name="billing.monthly-close")
class MonthlyCloseWorkflow:
    @workflow.run
    async def run(self, inp: MonthlyCloseInput) -> int:
        period = inp.period or str(previous_period(workflow.now()))
        await _act("billing.apply-plan-changes", PlanChangesInput(at=workflow.now().isoformat()), int)
        org_ids: list[str] = await _act("billing.orgs-to-close", OrgsToCloseInput(period=period), list[str])
        started = 0
        queue = workflow.info().task_queue
        for i in range(0, len(org_ids), _BATCH):
            started += await _act("billing.start-closes", StartClosesInput(
                org_ids=org_ids[i:i + _BATCH], period=period, grace_s=inp.grace_s, task_queue=queue), int)
        return started


BILLING_WORKFLOWS = (ClosePeriodWorkflow, DunningWorkflow, MonthlyCloseWorkflow)
