"""Dunning: what happens between a failed payment and either payment or blocked submissions.

    ok --payment failed--> past_due (emails, a banner on the billing pages, card retries on days 1, 3, 5)
    past_due --grace over (7 days)--> blocked (new job submissions refused with the reason; running jobs
                                               and all data untouched)
    past_due | blocked --invoice paid or voided--> ok (restored at once, in the same transaction)

These functions are the state changes; ``workflows.billing`` drives the timers (``billing.dunning``) and
webhooks and the billing cycle call ``payment_failed`` / ``settle``. Every one is idempotent and takes
the time from its caller, so a workflow's deterministic clock decides, not the worker's.
Enterprise orgs on invoice collection get reminders and the same grace, but no card retries.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.ledger.accounts import billing_contacts, get_account
from billing.ledger.models import BillingAccount, Invoice
from tenants import audit
from tenants.email import enqueue
from tenants.models import Org
from tenants.scope import Principal

__all__ = ["GRACE", "RETRY_DAYS", "Banner", "banner", "block", "format_money", "payment_failed", "settle"]

GRACE = timedelta(days=7)
RETRY_DAYS = (1, 3, 5)  # card retries, days after the failure (all within the grace)
_SYSTEM = Principal.system("billing.dunning")


def format_money(cents: int, currency: str = "usd") -> str:
    sign = "-" if cents < 0 else ""
    symbol = "$" if currency.lower() == "usd" else currency.upper() + " "
    return f"{sign}{symbol}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


@dataclass(frozen=True, slots=True)
class Banner:
    state: str  # past_due | blocked
    invoice_id: uuid.UUID | None
    invoice_number: str
    amount: str
    grace_until: datetime | None
    message: str


async def _mail(session: AsyncSession, org_id: uuid.UUID, *, subject: str, body: str, kind: str) -> None:
    for to in await billing_contacts(session, org_id):
        await enqueue(session, to=to, subject=subject, body=body, kind=kind)


async def _org(session: AsyncSession, org_id: uuid.UUID) -> Org:
    org = await session.get(Org, org_id)
    assert org is not None
    return org


async def payment_failed(session: AsyncSession, invoice: Invoice, *, at: datetime, message: str | None,
                         public_url: str = "") -> bool:
    """Record a failed payment of ``invoice``; True when this started dunning (the caller starts the workflow)."""
    if invoice.status in ("paid", "void"):
        return False  # an old failure arriving after the payment: nothing to do
    invoice.payment_state = "failed"
    invoice.payment_failed_at = invoice.payment_failed_at or at
    invoice.payment_error = message
    account = await get_account(session, invoice.org_id, lock=True)
    if account.dunning_state != "ok":
        return account.dunning_invoice_id == invoice.id
    org = await _org(session, invoice.org_id)
    account.dunning_state, account.dunning_invoice_id = "past_due", invoice.id
    account.past_due_since, account.grace_until = at, at + GRACE
    amount = format_money(invoice.total_cents, invoice.currency)
    await _mail(session, org.id, kind="billing.payment_failed",
                subject=f"Payment failed for invoice {invoice.number} ({amount})",
                body=(f"We could not charge {amount} for {org.name}'s invoice {invoice.number} ({invoice.period}).\n"
                      f"Reason: {message or 'the card was declined'}.\n\nWe will retry over the next days. Update the "
                      f"card at {public_url}/orgs/{org.slug}/billing before {account.grace_until:%Y-%m-%d}, or new "
                      "jobs will be paused (running jobs and your data stay untouched)."))
    await audit.record(session, action="billing.payment_failed", actor=_SYSTEM, org_id=org.id, target_kind="invoice",
                       target_id=invoice.id, target_display=invoice.number, details={"reason": message or ""})
    return True


async def block(session: AsyncSession, org_id: uuid.UUID, invoice_id: uuid.UUID, *, now: datetime,
                public_url: str = "") -> bool:
    """Grace is over and the invoice still unpaid: refuse new submissions. True if it blocked now."""
    account = await get_account(session, org_id, lock=True)
    invoice = await session.get(Invoice, invoice_id)
    if (invoice is None or invoice.status in ("paid", "void") or account.dunning_state != "past_due"
            or account.dunning_invoice_id != invoice_id or (account.grace_until and now < account.grace_until)):
        return False
    org = await _org(session, org_id)
    account.dunning_state, account.blocked_at = "blocked", now
    amount = format_money(invoice.total_cents, invoice.currency)
    await _mail(session, org_id, kind="billing.blocked", subject=f"New jobs paused: invoice {invoice.number} is unpaid",
                body=(f"{org.name}'s invoice {invoice.number} ({amount}) is still unpaid, so new job submissions are "
                      "paused. Running jobs and your data are untouched. Pay it or update the card at "
                      f"{public_url}/orgs/{org.slug}/billing and submissions resume at once."))
    await audit.record(session, action="billing.submissions_blocked", actor=_SYSTEM, org_id=org_id,
                       target_kind="invoice", target_id=invoice_id, target_display=invoice.number)
    return True


async def settle(session: AsyncSession, invoice: Invoice, *, now: datetime) -> bool:
    """``invoice`` was paid (or voided): if dunning was about it, move on to the next unpaid one or restore."""
    account = await get_account(session, invoice.org_id, lock=True)
    if invoice.status == "paid":
        invoice.payment_state = "succeeded"
    if account.dunning_invoice_id != invoice.id:
        return False
    other = (await session.execute(select(Invoice).where(
        Invoice.org_id == invoice.org_id, Invoice.id != invoice.id, Invoice.payment_state == "failed",
        Invoice.status.in_(("open", "uncollectible"))).order_by(Invoice.payment_failed_at).limit(1))).scalar_one_or_none()
    if other is not None:  # still owing: dunning continues about the next one, with its own grace
        account.dunning_invoice_id = other.id
        account.past_due_since = other.payment_failed_at or now
        account.grace_until = account.past_due_since + GRACE
        return True
    was_blocked = account.dunning_state == "blocked"
    _clear(account)
    if was_blocked:
        await _mail(session, invoice.org_id, kind="billing.restored", subject="Job submissions resumed",
                    body=f"Thank you: invoice {invoice.number} is settled and new jobs can be submitted again.")
    await audit.record(session, action="billing.submissions_restored" if was_blocked else "billing.payment_recovered",
                       actor=_SYSTEM, org_id=invoice.org_id, target_kind="invoice", target_id=invoice.id,
                       target_display=invoice.number, details={"status": invoice.status})
    return True


def _clear(account: BillingAccount) -> None:
    account.dunning_state, account.dunning_invoice_id = "ok", None
    account.past_due_since = account.grace_until = account.blocked_at = None


async def banner(session: AsyncSession, org_id: uuid.UUID) -> Banner | None:
    """What an org's pages show while a payment is outstanding (``None`` when all is well)."""
    account = (await session.execute(select(BillingAccount).where(BillingAccount.org_id == org_id))).scalar_one_or_none()
    if account is None or account.dunning_state == "ok":
        return None
    invoice = await session.get(Invoice, account.dunning_invoice_id) if account.dunning_invoice_id else None
    number = invoice.number if invoice else ""
    amount = format_money(invoice.total_cents, invoice.currency) if invoice else ""
    if account.dunning_state == "blocked":
        message = (f"Invoice {number} ({amount}) is unpaid, so new jobs are paused. Running jobs and data are "
                   "untouched. Update the card or pay the invoice to resume at once.")
    else:
        until = f" by {account.grace_until:%Y-%m-%d}" if account.grace_until else ""
        message = (f"The payment of invoice {number} ({amount}) failed. Update the card{until}, or new jobs "
                   "will be paused.")
    return Banner(state=account.dunning_state, invoice_id=invoice.id if invoice else None, invoice_number=number,
                  amount=amount, grace_until=account.grace_until, message=message)
