"""Writing a month's invoice into the ledger, and reading invoices back.

``write_invoice`` is one transaction: it closes the month for metering (``mark_period_closed``: from
then on records for the month are *late*), rates the usage that had arrived by then (after the free
allowance, billable plans' hours only), adds late usage of earlier closed months as adjustment lines,
and writes the invoice as ``draft`` with its lines. ``open_invoice`` then issues it (``open``). The
pair is idempotent: ``(org_id, period)`` is unique, and a second call returns the invoice already
written; a crash rolls the close back with the invoice, so nothing is half-written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing import rating
from billing.ledger.accounts import get_account
from billing.ledger.models import Invoice, InvoiceLine, PlanChange
from billing.ledger.periods import Period, current_period
from billing.plans import BILLABLE_PLANS, plan_at, plan_history
from billing.usage import periods as usage_periods
from billing.usage.queries import billable_usage, late_usage_since
from billing.usage.rates import card_timeline, rate_lines
from tenants.models import Org

__all__ = ["Estimate", "Written", "estimate", "invoice_lines", "list_invoices", "open_invoice", "orgs_to_close",
           "write_invoice"]


@dataclass(frozen=True, slots=True)
class Written:
    invoice_id: uuid.UUID
    number: str
    total_cents: int
    status: str
    collection: str
    created: bool


@dataclass(frozen=True, slots=True)
class Estimate:
    period: str
    lines: list[rating.LineDraft]
    total_cents: int
    as_of: datetime


def invoice_number(org_id: uuid.UUID, period: Period) -> str:
    return f"MC-{period.compact}-{org_id.hex[:10].upper()}"


async def _drafts(s: AsyncSession, org: Org, period: Period, *, closed: datetime,
                  since: datetime) -> tuple[list[rating.LineDraft], str]:
    """The lines a period's invoice carries, and the plan it was billed under."""
    history = await plan_history(s, org.id, period.end)
    plans_in_period = {plan_at(history, org.plan, period.start)} | {p for at, p in history if at >= period.start}
    billed_plan = next((p for p in ("enterprise", "payg") if p in plans_in_period), org.plan)
    timeline = await card_timeline(s, org.id, billed_plan)
    usage = await billable_usage(s, org.id, usage_periods.Period(start=period.start, end=period.end), timeline,
                                 ingested_before=closed)
    by_hour = rating.billable_only(usage.billable_by_hour(), lambda at: plan_at(history, org.plan, at),
                                   BILLABLE_PLANS)
    lines = rating.usage_lines(rate_lines(by_hour, timeline), period=period)
    # Late usage counts only for months that were billed (had an invoice): Free months stay free.
    billed = set((await s.execute(select(Invoice.period).where(Invoice.org_id == org.id))).scalars())
    late = await late_usage_since(s, org.id, since, closed, timeline=timeline)
    lines += rating.adjustment_lines((item.period_start, item.lines) for item in late
                                     if f"{item.period_start:%Y-%m}" in billed)
    return lines, billed_plan


async def write_invoice(s: AsyncSession, org_id: uuid.UUID, period: Period) -> Written | None:
    """Close ``period`` and write its invoice (draft). ``None`` when there is nothing to bill."""
    existing = (await s.execute(select(Invoice).where(Invoice.org_id == org_id, Invoice.period == period))
                ).scalar_one_or_none()
    if existing is not None:
        return _written(existing, created=False)
    org = await s.get(Org, org_id)
    if org is None:
        return None
    closed = await usage_periods.mark_period_closed(s, org_id, period.start.date())
    previous = (await s.execute(select(func.max(Invoice.usage_closed_at)).where(Invoice.org_id == org_id))).scalar()
    lines, billed_plan = await _drafts(s, org, period, closed=closed, since=previous or org.created_at)
    if billed_plan not in BILLABLE_PLANS and not lines:
        return None  # a Free month: no invoice (the close stands: later usage of it is late, and free)
    account = await get_account(s, org_id)
    total = rating.total_cents(lines)
    invoice = Invoice(org_id=org_id, number=invoice_number(org_id, period), period=str(period),
                      period_start=period.start, period_end=period.end, status="draft", plan=billed_plan,
                      collection=account.collection, currency=account.currency, subtotal_cents=total,
                      total_cents=total, usage_closed_at=closed)
    s.add(invoice)
    await s.flush()
    for position, d in enumerate(lines):
        s.add(InvoiceLine(org_id=org_id, invoice_id=invoice.id, position=position, kind=d.kind, resource=d.resource,
                          gpu_type=d.gpu_type, source_period=d.source_period, description=d.description,
                          raw_quantity=Decimal(d.raw_quantity), quantity=d.quantity, unit=d.unit,
                          unit_price_micros=d.unit_price_micros, amount_cents=d.amount_cents,
                          rate_version=d.rate_version))
    await s.flush()
    return _written(invoice, created=True)


async def open_invoice(s: AsyncSession, invoice_id: uuid.UUID, *, now: datetime) -> Written:
    """draft -> open: issued, with its due date (at once for cards, the contract's terms otherwise)."""
    invoice = (await s.execute(select(Invoice).where(Invoice.id == invoice_id).with_for_update())).scalar_one()
    if invoice.status == "draft":
        account = await get_account(s, invoice.org_id)
        invoice.status, invoice.issued_at = "open", now
        invoice.due_at = now + timedelta(days=account.days_until_due) if invoice.collection == "invoice" else now
    return _written(invoice, created=False)


def _written(invoice: Invoice, *, created: bool) -> Written:
    return Written(invoice_id=invoice.id, number=invoice.number, total_cents=invoice.total_cents,
                   status=invoice.status, collection=invoice.collection, created=created)


async def orgs_to_close(s: AsyncSession, period: Period) -> list[uuid.UUID]:
    """Orgs that may owe for ``period``: on a billable plan now, or whose plan changed since it began."""
    changed = select(PlanChange.org_id).where(PlanChange.effective_at >= period.start, PlanChange.cancelled_at.is_(None))
    rows = await s.execute(select(Org.id).where(Org.deleted_at.is_(None), or_(
        Org.plan.in_(BILLABLE_PLANS), Org.id.in_(changed))).order_by(Org.id))
    return [r for (r,) in rows]


async def list_invoices(s: AsyncSession, org_id: uuid.UUID, *, period: str | None = None,
                        status: str | None = None, limit: int = 120) -> list[Invoice]:
    query = select(Invoice).where(Invoice.org_id == org_id)
    if period:
        query = query.where(Invoice.period == period)
    if status:
        query = query.where(Invoice.status == status)
    return list((await s.execute(query.order_by(Invoice.period.desc()).limit(limit))).scalars())


async def invoice_lines(s: AsyncSession, invoice_id: uuid.UUID) -> list[InvoiceLine]:
    return list((await s.execute(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id)
                                 .order_by(InvoiceLine.position))).scalars())


async def estimate(s: AsyncSession, org_id: uuid.UUID, *, now: datetime) -> Estimate:
    """The current period so far, rated as its invoice would be (without closing anything)."""
    period = current_period(now)
    org = await s.get(Org, org_id)
    assert org is not None
    previous = (await s.execute(select(func.max(Invoice.usage_closed_at)).where(Invoice.org_id == org_id))).scalar()
    lines, _ = await _drafts(s, org, period, closed=now, since=previous or org.created_at)
    return Estimate(period=str(period), lines=lines, total_cents=rating.total_cents(lines), as_of=now)
