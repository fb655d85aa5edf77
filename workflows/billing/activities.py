"""Activities of the billing workflows: each calls the same billing code the API and CLI use, and each
is idempotent (unique invoice per org and month, intent-then-id markers for Stripe, forward-only status,
compare-and-set dunning states), so a worker killed at any point and retried changes nothing twice.

Domain errors become Temporal errors here, in one place: ``UpstreamUnavailable`` (Stripe or the
database briefly down) and ``Conflict`` (another step of the same org in flight) are retried; the rest
(``LedgerMismatch`` above all) stop the workflow for an operator to look at.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from billing import dunning, plans
from billing.ledger import invoices, push
from billing.ledger.accounts import get_account
from billing.ledger.models import Invoice
from billing.ledger.periods import parse_period
from billing.stripe_gateway import StripeGateway
from tenants.db import tenant_session, unscoped_session
from tenants.errors import Conflict, DomainError, UpstreamUnavailable
from tenants.scope import TenantScope
from tenants.settings import Settings
from workflows.billing.types import (
    CloseInput,
    DunningState,
    DunningStep,
    OrgsToCloseInput,
    PlanChangesInput,
    PushInput,
    PushResult,
    StartClosesInput,
    WriteInput,
    WrittenResult,
    close_workflow_id,
)

__all__ = ["BillingActivities", "temporal_errors"]


@asynccontextmanager
async def temporal_errors() -> AsyncIterator[None]:
    try:
        yield
    except push.LedgerMismatch as exc:
        activity.logger.error("ledger and Stripe disagree: %s", exc.message)
        raise ApplicationError(exc.message, type="LedgerMismatch", non_retryable=True) from exc
    except (UpstreamUnavailable, Conflict) as exc:
        raise ApplicationError(exc.message, type=type(exc).__name__) from exc
    except DomainError as exc:
        raise ApplicationError(exc.message, type=type(exc).__name__, non_retryable=True) from exc


class BillingActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, *,
                 gateway: StripeGateway | None = None) -> None:
        self._sessions = sessions
        self._settings = settings
        self._gateway = gateway

    def all(self) -> list[Callable[..., Any]]:
        """Every billing activity, for the worker's registry."""
        return [self.write_invoice, self.push_invoice, self.dunning_start, self.dunning_retry, self.dunning_block,
                self.dunning_check, self.apply_plan_changes, self.orgs_to_close, self.start_closes]

    def gateway(self) -> StripeGateway:
        if self._gateway is None:
            self._gateway = StripeGateway.from_settings(self._settings)
        return self._gateway

    def _scope(self, org_id: str) -> TenantScope:
        return TenantScope.for_system(uuid.UUID(org_id), "billing")

    @activity.defn(name="billing.write-invoice")
    async def write_invoice(self, inp: WriteInput) -> WrittenResult:
        async with temporal_errors():
            period = parse_period(inp.period)
            async with tenant_session(self._sessions, self._scope(inp.org_id)) as s:
                written = await invoices.write_invoice(s, uuid.UUID(inp.org_id), period)
            if written is None:
                return WrittenResult(invoice_id=None)
            async with tenant_session(self._sessions, self._scope(inp.org_id)) as s:
                await invoices.open_invoice(s, written.invoice_id, now=datetime.fromisoformat(inp.at))
                invoice = await s.get(Invoice, written.invoice_id)
                assert invoice is not None
                return WrittenResult(invoice_id=str(invoice.id), number=invoice.number,
                                     total_cents=invoice.total_cents, collection=invoice.collection,
                                     due_at=invoice.due_at.isoformat() if invoice.due_at else None)

    @activity.defn(name="billing.push-invoice")
    async def push_invoice(self, inp: PushInput) -> PushResult:
        async with temporal_errors():
            out = await push.push_invoice(self._sessions, self.gateway(), uuid.UUID(inp.org_id),
                                          uuid.UUID(inp.invoice_id), public_url=self._settings.public_url)
        return PushResult(invoice_id=out.invoice_id, status=out.status, payment=out.payment,
                          stripe_invoice_id=out.stripe_invoice_id, total_cents=out.total_cents,
                          dunning_started=out.dunning_started)

    async def _state(self, s: AsyncSession, org_id: str, invoice: Invoice | None) -> DunningState:
        account = await get_account(s, uuid.UUID(org_id))
        settled = invoice is None or invoice.status in ("paid", "void")
        return DunningState(settled=settled, state=account.dunning_state,
                            grace_until=account.grace_until.isoformat() if account.grace_until else None)

    async def _settled(self, s: AsyncSession, invoice: Invoice | None, now: datetime) -> bool:
        if invoice is None or invoice.status not in ("paid", "void"):
            return False
        await dunning.settle(s, invoice, now=now)  # idempotent: restores if the webhook has not yet
        return True

    @activity.defn(name="billing.dunning-start")
    async def dunning_start(self, inp: DunningStep) -> DunningState:
        """Past due (idempotent: a webhook or the close may have recorded the failure already)."""
        async with temporal_errors(), tenant_session(self._sessions, self._scope(inp.org_id)) as s:
            now = datetime.fromisoformat(inp.at)
            invoice = await s.get(Invoice, uuid.UUID(inp.invoice_id))
            if not await self._settled(s, invoice, now) and invoice is not None:
                reason = invoice.payment_error or ("the invoice is past its due date"
                                                   if invoice.collection == "invoice" else "the payment failed")
                await dunning.payment_failed(s, invoice, at=invoice.payment_failed_at or now, message=reason,
                                             public_url=self._settings.public_url)
            return await self._state(s, inp.org_id, invoice)

    @activity.defn(name="billing.dunning-retry")
    async def dunning_retry(self, inp: DunningStep) -> DunningState:
        """Charge the card again (reads the ledger and Stripe first: a paid invoice is never charged twice)."""
        async with temporal_errors():
            await push.collect(self._sessions, self.gateway(), uuid.UUID(inp.org_id), uuid.UUID(inp.invoice_id),
                               now_iso=inp.at, public_url=self._settings.public_url)
        return await self.dunning_check(inp)

    @activity.defn(name="billing.dunning-block")
    async def dunning_block(self, inp: DunningStep) -> DunningState:
        async with temporal_errors(), tenant_session(self._sessions, self._scope(inp.org_id)) as s:
            now = datetime.fromisoformat(inp.at)
            invoice = await s.get(Invoice, uuid.UUID(inp.invoice_id))
            if not await self._settled(s, invoice, now):
                await dunning.block(s, uuid.UUID(inp.org_id), uuid.UUID(inp.invoice_id), now=now,
                                    public_url=self._settings.public_url)
            return await self._state(s, inp.org_id, invoice)

    @activity.defn(name="billing.dunning-check")
    async def dunning_check(self, inp: DunningStep) -> DunningState:
        async with temporal_errors(), tenant_session(self._sessions, self._scope(inp.org_id)) as s:
            invoice = (await s.execute(select(Invoice).where(Invoice.id == uuid.UUID(inp.invoice_id))
                                       .execution_options(populate_existing=True))).scalar_one_or_none()
            await self._settled(s, invoice, datetime.fromisoformat(inp.at))
            return await self._state(s, inp.org_id, invoice)

    @activity.defn(name="billing.apply-plan-changes")
    async def apply_plan_changes(self, inp: PlanChangesInput) -> int:
        async with unscoped_session(self._sessions, reason="scheduled plan changes of every org") as s:
            return await plans.apply_due_changes(s, datetime.fromisoformat(inp.at))

    @activity.defn(name="billing.orgs-to-close")
    async def orgs_to_close(self, inp: OrgsToCloseInput) -> list[str]:
        async with unscoped_session(self._sessions, reason="the monthly close visits every billable org") as s:
            return [str(o) for o in await invoices.orgs_to_close(s, parse_period(inp.period))]

    @activity.defn(name="billing.start-closes")
    async def start_closes(self, inp: StartClosesInput) -> int:
        client = activity.client()
        for org_id in inp.org_ids:
            await client.start_workflow(
                "billing.close-period", CloseInput(org_id=org_id, period=inp.period, grace_s=inp.grace_s),
                id=close_workflow_id(org_id, inp.period), task_queue=inp.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
        return len(inp.org_ids)
