"""What the billing page and API show: the plan, the card, dunning, the estimate, the invoices."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.dunning import Banner, banner
from billing.ledger.accounts import find_account
from billing.ledger.invoices import Estimate, estimate, invoice_lines, list_invoices
from billing.ledger.models import BillingAccount, Invoice, InvoiceLine
from billing.models import Plan
from tenants.errors import NotFound
from tenants.models import Org
from tenants.permissions import Permission
from tenants.scope import TenantScope

__all__ = ["Overview", "invoice_detail", "invoices", "overview"]


@dataclass(frozen=True, slots=True)
class Overview:
    plan: str
    plan_title: str
    pending_plan: str | None
    pending_plan_at: datetime | None
    collection: str
    account: BillingAccount | None
    banner: Banner | None
    estimate: Estimate
    invoices: list[Invoice]


async def overview(scope: TenantScope, s: AsyncSession, *, now: datetime, period: str | None = None,
                   status: str | None = None) -> Overview:
    scope.require(Permission.BILLING_READ)
    org = await s.get(Org, scope.org_id)
    if org is None:
        raise NotFound("Organization not found.")
    title = (await s.execute(select(Plan.title).where(Plan.name == org.plan))).scalar_one_or_none()
    account = await find_account(s, org.id)
    return Overview(plan=org.plan, plan_title=title or org.plan.title(),
                    pending_plan=account.pending_plan if account else None,
                    pending_plan_at=account.pending_plan_at if account else None,
                    collection=account.collection if account else "card", account=account,
                    banner=await banner(s, org.id), estimate=await estimate(s, org.id, now=now),
                    invoices=await list_invoices(s, org.id, period=period, status=status))


async def invoices(scope: TenantScope, s: AsyncSession, *, period: str | None = None,
                   status: str | None = None) -> list[Invoice]:
    scope.require(Permission.BILLING_READ)
    return await list_invoices(s, scope.org_id, period=period, status=status)


async def invoice_detail(scope: TenantScope, s: AsyncSession, invoice_id: uuid.UUID) -> tuple[Invoice, list[InvoiceLine]]:
    scope.require(Permission.BILLING_READ)
    invoice = (await s.execute(select(Invoice).where(Invoice.id == invoice_id, Invoice.org_id == scope.org_id))
               ).scalar_one_or_none()
    if invoice is None:
        raise NotFound("No such invoice in this organization.")
    return invoice, await invoice_lines(s, invoice.id)
