"""Pushing an invoice of our ledger to Stripe, and collecting it: a state machine safe to re-run at any point.

Steps (``invoices.stripe_step``): ``pending`` -> ``items`` -> ``invoice`` -> ``finalized`` -> ``collected``
(``skipped`` when there is nothing to collect). Before creating anything in Stripe we commit the intent
(``*_intent_at``); after, we commit its id. A re-run after a crash in between finds the object by our
metadata (``mc_invoice_id`` / ``mc_line_id``) instead of creating a second; Stripe's idempotency keys
(derived from our ids) cover a retry within 24 h too, but correctness does not rest on them. Paying is
preceded by a read of the invoice: a paid invoice is never paid again, so no retry charges twice.

Production order: draft invoice (pending items excluded) -> its items -> finalize -> pay (or send, for
invoice collection). The stand-in's order: pending items -> invoice (it sweeps them in) -> pay.
Each short transaction is its own; no database transaction is held across a call to Stripe except the
account row lock in ``ensure_customer``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import dunning
from billing.ledger.accounts import ensure_customer, get_account
from billing.ledger.models import Invoice, InvoiceLine
from billing.ledger.status import advance
from billing.stripe_gateway import StripeGateway, StripeInvoice
from tenants.db import tenant_session, utcnow
from tenants.errors import Conflict, NotFound
from tenants.scope import TenantScope

__all__ = ["LedgerMismatch", "PushOutcome", "collect", "push_invoice"]


class LedgerMismatch(Conflict):
    """Stripe's total differs from the ledger's: stop and tell an operator (never retried blindly)."""

    code = "ledger_mismatch"


@dataclass(frozen=True, slots=True)
class PushOutcome:
    invoice_id: str
    step: str
    status: str  # the ledger status after the push
    payment: str  # paid | failed | sent | none
    stripe_invoice_id: str | None
    total_cents: int
    dunning_started: bool = False


def _scope(org_id: uuid.UUID) -> TenantScope:
    return TenantScope.for_system(org_id, "billing.push")


async def _load(s: AsyncSession, invoice_id: uuid.UUID, *, lock: bool = False) -> Invoice:
    query = select(Invoice).where(Invoice.id == invoice_id).execution_options(populate_existing=True)
    invoice = (await s.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if invoice is None:
        raise NotFound("No such invoice.")
    return invoice


def _outcome(inv: Invoice, payment: str = "none", *, dunning_started: bool = False) -> PushOutcome:
    return PushOutcome(invoice_id=str(inv.id), step=inv.stripe_step, status=inv.status, payment=payment,
                       stripe_invoice_id=inv.stripe_invoice_id, total_cents=inv.total_cents,
                       dunning_started=dunning_started)


def _description(inv: Invoice) -> str:
    # The stand-in drops metadata on create; the id in the description is the marker a retry finds.
    return f"Metacloud {inv.number}, usage {inv.period} [{inv.id}]"


async def push_invoice(sessions: async_sessionmaker[AsyncSession], gateway: StripeGateway, org_id: uuid.UUID,
                       invoice_id: uuid.UUID, *, public_url: str = "") -> PushOutcome:
    scope = _scope(org_id)
    async with tenant_session(sessions, scope) as s:
        inv = await _load(s, invoice_id)
        if inv.stripe_step in ("collected", "skipped") or inv.status == "void":
            return _outcome(inv, "paid" if inv.status == "paid" else "none")
        if inv.status == "draft":
            raise Conflict("The invoice is still being written.")
        if inv.total_cents <= 0:  # nothing to collect; a credit is carried by the next invoice's adjustments
            inv.stripe_step = "skipped"
            inv.status, inv.paid_at = "paid", utcnow()
            return _outcome(inv)
    customer = await ensure_customer(sessions, scope, gateway)
    subscription = await _compat_subscription(sessions, gateway, scope, customer)
    if gateway.compat:
        await _ensure_items(sessions, gateway, scope, invoice_id, customer, stripe_invoice=None)
        stripe_inv = await _ensure_invoice(sessions, gateway, scope, invoice_id, customer, subscription)
    else:
        stripe_inv = await _ensure_invoice(sessions, gateway, scope, invoice_id, customer, subscription)
        await _ensure_items(sessions, gateway, scope, invoice_id, customer, stripe_invoice=stripe_inv)
    return await _finalize_and_collect(sessions, gateway, scope, invoice_id, stripe_inv, public_url=public_url)


async def _compat_subscription(sessions: async_sessionmaker[AsyncSession], gateway: StripeGateway,
                               scope: TenantScope, customer: str) -> str | None:
    if not gateway.compat:
        return None
    async with tenant_session(sessions, scope) as s:
        known = (await get_account(s, scope.org_id)).stripe_subscription_id
    if known:
        return known
    sub = await gateway.ensure_compat_subscription(customer, str(scope.org_id))  # lists before creating
    async with tenant_session(sessions, scope) as s:
        (await get_account(s, scope.org_id)).stripe_subscription_id = sub
    return sub


async def _ensure_items(sessions: async_sessionmaker[AsyncSession], gateway: StripeGateway, scope: TenantScope,
                        invoice_id: uuid.UUID, customer: str, *, stripe_invoice: str | None) -> None:
    async with tenant_session(sessions, scope) as s:
        inv = await _load(s, invoice_id)
        lines = (await s.execute(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id,
                                                           InvoiceLine.amount_cents != 0)
                                 .order_by(InvoiceLine.position))).scalars().all()
        todo = [line for line in lines if not line.stripe_invoice_item_id]
        if not todo:
            return
        retried = any(line.stripe_item_intent_at for line in todo)
        now = utcnow()
        for line in todo:  # the intent, for every line, before the first create
            line.stripe_item_intent_at = line.stripe_item_intent_at or now
        if inv.stripe_step == "pending":
            inv.stripe_step = "items"
        plan = [(line.id, line.amount_cents, line.description, inv.currency, inv.number) for line in todo]
    existing: dict[str, str] = {}
    if retried:
        existing = {i.metadata.get("mc_line_id", ""): i.id
                    for i in await gateway.list_items(customer=customer, invoice=stripe_invoice)}
    for line_id, amount, description, currency, number in plan:
        item = existing.get(str(line_id)) or await gateway.create_item(
            customer=customer, invoice=stripe_invoice, amount=amount, currency=currency, description=description,
            metadata={"mc_invoice_id": str(invoice_id), "mc_line_id": str(line_id), "mc_invoice_number": number},
            idempotency_key=f"mc-line-{line_id}")
        async with tenant_session(sessions, scope) as s:
            row = await s.get(InvoiceLine, line_id)
            assert row is not None
            row.stripe_invoice_item_id = item


async def _ensure_invoice(sessions: async_sessionmaker[AsyncSession], gateway: StripeGateway, scope: TenantScope,
                          invoice_id: uuid.UUID, customer: str, subscription: str | None) -> str:
    async with tenant_session(sessions, scope) as s:
        inv = await _load(s, invoice_id)
        if inv.stripe_invoice_id:
            return inv.stripe_invoice_id
        retried = inv.stripe_invoice_intent_at is not None
    found: StripeInvoice | None = None
    if retried:
        found = await gateway.find_invoice(customer=customer, marker=str(invoice_id))
    if found is None:
        if gateway.compat:  # the stand-in's invoice takes every pending item: they must all be this invoice's
            foreign = [i.id for i in await gateway.list_items(customer=customer, invoice=None)
                       if i.metadata.get("mc_invoice_id") != str(invoice_id)]
            if foreign:
                raise Conflict(f"Pending Stripe items of another invoice ({len(foreign)}); retrying later.")
        async with tenant_session(sessions, scope) as s:
            inv = await _load(s, invoice_id)
            inv.stripe_invoice_intent_at = inv.stripe_invoice_intent_at or utcnow()
            account = await get_account(s, scope.org_id)
            collection, days, currency, description = (inv.collection, account.days_until_due, inv.currency,
                                                       _description(inv))
            metadata = {"mc_invoice_id": str(inv.id), "mc_invoice_number": inv.number, "org_id": str(scope.org_id),
                        "period": inv.period}
        found = await gateway.create_invoice(
            customer=customer, subscription=subscription, collection=collection, days_until_due=days,
            currency=currency, description=description, metadata=metadata,
            idempotency_key=f"mc-invoice-{invoice_id}")
    async with tenant_session(sessions, scope) as s:
        inv = await _load(s, invoice_id, lock=True)
        inv.stripe_invoice_id, inv.stripe_customer_id = found.id, customer
        inv.stripe_step = "invoice"
        advance(inv, found.status, event_at=None, now=utcnow())
        inv.hosted_invoice_url = found.hosted_invoice_url or inv.hosted_invoice_url
    return found.id


async def _finalize_and_collect(sessions: async_sessionmaker[AsyncSession], gateway: StripeGateway,
                                scope: TenantScope, invoice_id: uuid.UUID, stripe_id: str, *,
                                public_url: str) -> PushOutcome:
    current = await gateway.retrieve_invoice(stripe_id)
    async with tenant_session(sessions, scope) as s:
        inv = await _load(s, invoice_id)
        expected, step = inv.total_cents, inv.stripe_step
    if current.status == "draft" and current.total != expected:
        raise LedgerMismatch(f"Stripe invoice {stripe_id} totals {current.total}, the ledger {expected} cents.")
    if step == "invoice":
        if current.status == "draft":
            current = await gateway.finalize(stripe_id)
        async with tenant_session(sessions, scope) as s:
            inv = await _load(s, invoice_id, lock=True)
            inv.stripe_step = "finalized"
            advance(inv, current.status, event_at=None, now=utcnow())
            inv.hosted_invoice_url = current.hosted_invoice_url or inv.hosted_invoice_url
    return await collect(sessions, gateway, scope.org_id, invoice_id, now_iso=None, public_url=public_url)


async def collect(sessions: async_sessionmaker[AsyncSession], gateway: StripeGateway, org_id: uuid.UUID,
                  invoice_id: uuid.UUID, *, now_iso: str | None, public_url: str = "") -> PushOutcome:
    """Charge the card (or send the invoice); also the dunning retries. Reads Stripe first, so a paid
    invoice is recorded, never paid again."""
    scope = _scope(org_id)
    now = datetime.fromisoformat(now_iso) if now_iso else utcnow()
    async with tenant_session(sessions, scope) as s:
        inv = await _load(s, invoice_id)
        stripe_id, collection = inv.stripe_invoice_id, inv.collection
        if inv.status in ("paid", "void") or stripe_id is None:
            return _outcome(inv, "paid" if inv.status == "paid" else "none")
    current = await gateway.retrieve_invoice(stripe_id)
    payment, failure = "none", None
    if current.status == "paid":
        payment = "paid"
    elif collection == "invoice":
        await gateway.send(stripe_id)
        payment = "sent"
    elif current.status in ("draft", "open"):
        async with tenant_session(sessions, scope) as s:
            (await _load(s, invoice_id, lock=True)).payment_attempts += 1
        result = await gateway.pay(stripe_id)
        current = StripeInvoice(id=stripe_id, status=result.status, total=current.total,
                                amount_paid=current.total if result.paid else 0,
                                hosted_invoice_url=current.hosted_invoice_url, metadata=current.metadata,
                                description=current.description)
        payment = "paid" if result.paid else "failed"
        failure = result.failure_message
    started = False
    async with tenant_session(sessions, scope) as s:
        inv = await _load(s, invoice_id, lock=True)
        advance(inv, current.status, event_at=None, now=now)
        if inv.stripe_step in ("invoice", "finalized"):
            inv.stripe_step = "collected"
        if inv.status in ("paid", "void"):
            await dunning.settle(s, inv, now=now)
        elif payment == "failed":
            started = await dunning.payment_failed(s, inv, at=now, message=failure, public_url=public_url)
        return _outcome(inv, payment, dunning_started=started)
