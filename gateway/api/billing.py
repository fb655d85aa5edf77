"""``/api/v1/orgs/{org}/billing`` (plan, payment method, dunning, the current period's estimate) and
``/api/v1/orgs/{org}/invoices`` (by period and status; one with its lines and adjustments). BILLING_READ.

Money is in integer cents (``*_cents``); quantities and unit prices are exact decimals sent as strings.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.params import FromPath, FromQuery, QueryParameter

from billing.dunning import format_money
from billing.ledger.models import Invoice, InvoiceLine
from billing.ledger.periods import parse_period
from billing.ledger.views import invoice_detail, invoices, overview
from billing.rating import LineDraft
from billing.stripe_gateway import StripeGateway
from billing.usage.rates import micros_to_dollars
from gateway.auth import require
from gateway.deps import Runtime, Tenant
from tenants.db import tenant_session, utcnow
from tenants.errors import InvalidInput
from tenants.permissions import Permission
from tenants.settings import Settings

__all__ = ["BILLING_API_ROUTES", "BillingRead", "InvoiceList", "InvoiceRead", "stripe_for"]

_TAGS = ["billing"]
_STATUSES = ("draft", "open", "paid", "void", "uncollectible")
_gateways: dict[tuple[str, str | None], StripeGateway] = {}


def stripe_for(settings: Settings) -> StripeGateway:
    """One adapter (and HTTP connection pool) per Stripe configuration in this process."""
    key = (settings.stripe_api_key or "", settings.stripe_api_base)
    if key not in _gateways:
        _gateways[key] = StripeGateway.from_settings(settings)
    return _gateways[key]


class CardRead(msgspec.Struct, kw_only=True):
    brand: str
    last4: str
    exp: str


class DunningRead(msgspec.Struct, kw_only=True):
    state: str  # past_due | blocked
    invoice_number: str
    amount: str
    grace_until: datetime | None
    message: str


class LineRead(msgspec.Struct, kw_only=True):
    kind: str  # usage | adjustment
    description: str
    resource: str
    gpu_type: str | None
    period: str  # the month whose usage the line bills
    quantity: Decimal
    unit: str
    unit_price: Decimal  # dollars per unit, exact
    amount_cents: int


class EstimateRead(msgspec.Struct, kw_only=True):
    period: str
    as_of: datetime
    total_cents: int
    lines: list[LineRead]


class BillingRead(msgspec.Struct, kw_only=True):
    plan: str
    plan_title: str
    pending_plan: str | None
    pending_plan_at: datetime | None
    collection: str  # card | invoice
    payment_method: CardRead | None
    dunning: DunningRead | None
    upcoming: EstimateRead


class InvoiceSummary(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    number: str
    period: str
    status: str
    currency: str
    total_cents: int
    total: str
    issued_at: datetime | None
    due_at: datetime | None
    paid_at: datetime | None
    payment_state: str
    hosted_invoice_url: str | None


class InvoiceRead(InvoiceSummary, kw_only=True):
    plan: str
    collection: str
    subtotal_cents: int
    stripe_invoice_id: str | None
    lines: list[LineRead]
    adjustments: list[LineRead]


class InvoiceList(msgspec.Struct, kw_only=True):
    invoices: list[InvoiceSummary]


def line_read(line: InvoiceLine | LineDraft) -> LineRead:
    return LineRead(kind=line.kind, description=line.description, resource=line.resource, gpu_type=line.gpu_type,
                    period=line.source_period, quantity=Decimal(line.quantity), unit=line.unit,
                    unit_price=micros_to_dollars(line.unit_price_micros), amount_cents=int(line.amount_cents))


def summary(inv: Invoice) -> dict[str, Any]:
    return {"id": inv.id, "number": inv.number, "period": inv.period, "status": inv.status, "currency": inv.currency,
            "total_cents": inv.total_cents, "total": format_money(inv.total_cents, inv.currency),
            "issued_at": inv.issued_at, "due_at": inv.due_at, "paid_at": inv.paid_at,
            "payment_state": inv.payment_state, "hosted_invoice_url": inv.hosted_invoice_url}


@get("/api/v1/orgs/{org:str}/billing", guards=[require(Permission.BILLING_READ)], tags=_TAGS,
     summary="Plan, payment method, dunning state and the current period's estimate")
async def get_billing(org: FromPath[str], tenant: Tenant, runtime: Runtime) -> BillingRead:
    async with tenant_session(runtime.sessions, tenant) as s:
        ov = await overview(tenant, s, now=utcnow())
    a = ov.account
    card = CardRead(brand=a.card_brand or "card", last4=a.card_last4 or "", exp=a.card_exp or "") \
        if a is not None and a.payment_method_id else None
    b = ov.banner
    return BillingRead(
        plan=ov.plan, plan_title=ov.plan_title, pending_plan=ov.pending_plan, pending_plan_at=ov.pending_plan_at,
        collection=ov.collection, payment_method=card,
        dunning=DunningRead(state=b.state, invoice_number=b.invoice_number, amount=b.amount, grace_until=b.grace_until,
                            message=b.message) if b else None,
        upcoming=EstimateRead(period=ov.estimate.period, as_of=ov.estimate.as_of, total_cents=ov.estimate.total_cents,
                              lines=[line_read(line) for line in ov.estimate.lines]))


@get("/api/v1/orgs/{org:str}/invoices", guards=[require(Permission.BILLING_READ)], tags=_TAGS,
     summary="Invoices, newest period first")
async def list_invoices(
    org: FromPath[str], tenant: Tenant, runtime: Runtime,
    period: Annotated[str | None, QueryParameter(description="YYYY-MM")] = None,
    status: FromQuery[str | None] = None,
) -> InvoiceList:
    if period:
        parse_period(period)
    if status and status not in _STATUSES:
        raise InvalidInput("Unknown status.", field_errors={"status": "one of " + ", ".join(_STATUSES)})
    async with tenant_session(runtime.sessions, tenant) as s:
        found = await invoices(tenant, s, period=period, status=status)
    return InvoiceList(invoices=[InvoiceSummary(**summary(inv)) for inv in found])


@get("/api/v1/orgs/{org:str}/invoices/{invoice_id:uuid}", guards=[require(Permission.BILLING_READ)], tags=_TAGS,
     summary="One invoice with its lines and adjustments")
async def get_invoice(org: FromPath[str], invoice_id: FromPath[uuid.UUID], tenant: Tenant,
                      runtime: Runtime) -> InvoiceRead:
    async with tenant_session(runtime.sessions, tenant) as s:
        inv, lines = await invoice_detail(tenant, s, invoice_id)
    return InvoiceRead(**summary(inv), plan=inv.plan, collection=inv.collection, subtotal_cents=inv.subtotal_cents,
                       stripe_invoice_id=inv.stripe_invoice_id,
                       lines=[line_read(x) for x in lines if x.kind == "usage"],
                       adjustments=[line_read(x) for x in lines if x.kind == "adjustment"])


BILLING_API_ROUTES: list[Any] = [get_billing, list_invoices, get_invoice]
