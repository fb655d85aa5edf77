"""Stripe events: applied once, in any order, and recoverable when missed.

``apply_event`` inserts the event id into ``stripe_events`` and applies its effect in the same
transaction, so a redelivery (Stripe delivers at least once, for days) finds the id and changes
nothing, and a crash leaves neither. Order: invoice statuses only move forward (``ledger.status``), a
payment failure after the payment is ignored, and a payment method event older than the newest applied
one is ignored. ``recover_events`` lists Stripe's events since a time and applies each the same way.

Effects that need Temporal or Stripe (start dunning, finish a Checkout setup) are returned to the caller,
which runs them after the commit; each is idempotent.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import dunning
from billing.ledger.accounts import get_account
from billing.ledger.models import BillingAccount, Invoice, StripeEvent
from billing.ledger.status import advance
from billing.stripe_gateway import StripeGateway
from tenants.db import unscoped_session, utcnow

__all__ = ["Applied", "Effect", "RecoverReport", "apply_event", "recover_events"]

log = logging.getLogger(__name__)

_INVOICE_STATUS = {
    "invoice.finalized": "open",
    "invoice.paid": "paid",
    "invoice.payment_succeeded": "paid",
    "invoice.voided": "void",
    "invoice.marked_uncollectible": "uncollectible",
}
_PM_EVENTS = ("payment_method.attached", "payment_method.updated", "payment_method.automatically_updated")


@dataclass(frozen=True, slots=True)
class Effect:
    kind: str  # start_dunning | payment_settled | finish_checkout
    org_id: str
    invoice_id: str | None = None
    collection: str = "card"
    at: str = ""  # ISO time of the failure (start_dunning)
    ref: str = ""  # checkout session id (finish_checkout)


@dataclass(frozen=True, slots=True)
class Applied:
    event_id: str
    duplicate: bool
    outcome: str
    effects: list[Effect] = field(default_factory=list)


async def apply_event(sessions: async_sessionmaker[AsyncSession], event: dict[str, Any], *,
                      public_url: str = "") -> Applied:
    event_id, kind = str(event.get("id") or ""), str(event.get("type") or "")
    created = int(event.get("created") or 0)
    if not event_id.startswith("evt_"):
        return Applied(event_id=event_id, duplicate=False, outcome="not an event")
    async with unscoped_session(sessions, reason="a Stripe event names a Stripe customer, not our org") as s:
        fresh = (await s.execute(pg_insert(StripeEvent).values(
            id=event_id, type=kind[:100], created_unix=created, received_at=utcnow(), outcome="")
            .on_conflict_do_nothing(index_elements=["id"]).returning(StripeEvent.id))).first()
        if fresh is None:
            return Applied(event_id=event_id, duplicate=True, outcome="duplicate")
        obj = dict((event.get("data") or {}).get("object") or {})
        outcome, effects = await _apply(s, kind, obj, created, public_url)
        await s.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(outcome=outcome[:300]))
    log.info("stripe event applied", extra={"event_id": event_id, "type": kind, "outcome": outcome})
    return Applied(event_id=event_id, duplicate=False, outcome=outcome, effects=effects)


async def _apply(s: AsyncSession, kind: str, obj: dict[str, Any], created: int,
                 public_url: str) -> tuple[str, list[Effect]]:
    if kind in _INVOICE_STATUS or kind == "invoice.payment_failed":
        return await _invoice_event(s, kind, obj, created, public_url)
    if kind in ("payment_intent.succeeded", "payment_intent.payment_failed") and obj.get("invoice"):
        synthetic = {"id": obj["invoice"], "status": "paid" if kind.endswith("succeeded") else "open",
                     "metadata": {}}
        error = obj.get("last_payment_error") or {}
        synthetic["last_payment_error"] = error
        mapped = "invoice.payment_succeeded" if kind.endswith("succeeded") else "invoice.payment_failed"
        return await _invoice_event(s, mapped, synthetic, created, public_url)
    if kind in _PM_EVENTS:
        return await _payment_method_event(s, obj, created), []
    if kind == "customer.updated":
        return await _customer_event(s, obj, created), []
    if kind == "checkout.session.completed" and obj.get("mode") == "setup":
        account = await _account_of(s, obj.get("customer"))
        if account is None or account.setup_ref != obj.get("id"):
            return "checkout session not ours or already finished", []
        return "setup to finish", [Effect(kind="finish_checkout", org_id=str(account.org_id), ref=str(obj["id"]))]
    return "ignored", []


async def _account_of(s: AsyncSession, customer: Any) -> BillingAccount | None:
    if not isinstance(customer, str) or not customer:
        return None
    return (await s.execute(select(BillingAccount).where(BillingAccount.stripe_customer_id == customer))
            ).scalar_one_or_none()


async def _find_invoice(s: AsyncSession, obj: dict[str, Any]) -> Invoice | None:
    stripe_id = obj.get("id")
    invoice = (await s.execute(select(Invoice).where(Invoice.stripe_invoice_id == stripe_id).with_for_update())
               ).scalar_one_or_none() if stripe_id else None
    if invoice is None:  # the event may beat the billing cycle's own record of the id
        ours = (obj.get("metadata") or {}).get("mc_invoice_id")
        try:
            our_id = uuid.UUID(str(ours)) if ours else None
        except ValueError:
            our_id = None
        if our_id is not None:
            invoice = (await s.execute(select(Invoice).where(Invoice.id == our_id).with_for_update())).scalar_one_or_none()
            if invoice is not None and invoice.stripe_invoice_id is None and isinstance(stripe_id, str):
                invoice.stripe_invoice_id = stripe_id
    return invoice


async def _invoice_event(s: AsyncSession, kind: str, obj: dict[str, Any], created: int,
                         public_url: str) -> tuple[str, list[Effect]]:
    invoice = await _find_invoice(s, obj)
    if invoice is None:
        return "not our invoice", []
    now = utcnow()
    if obj.get("hosted_invoice_url"):
        invoice.hosted_invoice_url = str(obj["hosted_invoice_url"])
    if kind == "invoice.payment_failed":
        error = obj.get("last_payment_error") or {}
        started = await dunning.payment_failed(s, invoice, at=datetime.fromtimestamp(created, UTC) if created else now,
                                               message=error.get("message") or "the payment failed",
                                               public_url=public_url)
        if invoice.status in ("paid", "void"):
            return "payment failure after settlement: ignored", []
        account = await get_account(s, invoice.org_id)
        effects = [Effect(kind="start_dunning", org_id=str(invoice.org_id), invoice_id=str(invoice.id),
                          collection=account.collection, at=(invoice.payment_failed_at or now).isoformat())]
        return ("dunning started" if started else "payment failed (dunning already running)"), effects
    status = str(obj.get("status") or "")
    target = status if status in ("open", "paid", "void", "uncollectible") else _INVOICE_STATUS[kind]
    if not advance(invoice, target, event_at=created, now=now):
        return f"stale or no change ({target})", []
    if invoice.status in ("paid", "void") and await dunning.settle(s, invoice, now=now):
        return f"invoice {target}; dunning settled", [Effect(kind="payment_settled", org_id=str(invoice.org_id),
                                                             invoice_id=str(invoice.id))]
    return f"invoice {target}", []


async def _payment_method_event(s: AsyncSession, obj: dict[str, Any], created: int) -> str:
    account = await _account_of(s, obj.get("customer"))
    if account is None:
        return "not our customer"
    if account.payment_method_id != obj.get("id"):
        return "not the default payment method"
    if (account.payment_method_event_at or 0) > created:
        return "stale"
    card = obj.get("card") or {}
    account.card_brand = str(card.get("brand") or account.card_brand or "card")
    account.card_last4 = str(card.get("last4") or account.card_last4 or "")
    if card.get("exp_month"):
        account.card_exp = f"{int(card['exp_month']):02d}/{card.get('exp_year', '')}"
    account.payment_method_event_at = created
    account.updated_at = utcnow()
    return "card details updated"


async def _customer_event(s: AsyncSession, obj: dict[str, Any], created: int) -> str:
    account = await _account_of(s, obj.get("id"))
    if account is None:
        return "not our customer"
    default = (obj.get("invoice_settings") or {}).get("default_payment_method")
    if isinstance(default, dict):
        default = default.get("id")
    if not default or default == account.payment_method_id:
        return "no change"
    if (account.payment_method_event_at or 0) > created:
        return "stale"
    account.payment_method_id = str(default)
    account.card_brand = account.card_last4 = account.card_exp = None  # filled by the method's own event
    account.payment_method_event_at = created
    return "default payment method changed"


@dataclass(frozen=True, slots=True)
class RecoverReport:
    seen: int
    applied: int
    duplicates: int
    effects: list[Effect]


async def recover_events(sessions: async_sessionmaker[AsyncSession], gateway: StripeGateway, *, since: datetime,
                         public_url: str = "") -> RecoverReport:
    """Apply every event Stripe has since ``since`` that we have not (missed webhooks, an outage)."""
    events = await gateway.list_events(created_gte=int(since.timestamp()))
    applied = duplicates = 0
    effects: list[Effect] = []
    for event in sorted(events, key=lambda e: int(e.get("created") or 0)):
        result = await apply_event(sessions, event, public_url=public_url)
        duplicates += result.duplicate
        applied += not result.duplicate
        effects += result.effects
    return RecoverReport(seen=len(events), applied=applied, duplicates=duplicates, effects=effects)

