"""The billing ledger's tables: our source of truth; Stripe only collects the money.

* ``billing_accounts``: one per org: collection method, the Stripe customer (and the intent recorded
  before creating it), the default card as shown, a scheduled plan change, the dunning state.
* ``billing_plan_changes``: when each org's plan took (or takes) effect; rating bills an hour only if
  the plan in force at that hour is billable, and a downgrade waits here for the period end.
* ``invoices`` / ``invoice_lines``: one invoice per org and month (unique), lines with exact
  quantities, unit prices and whole-cent amounts; the ``stripe_*`` columns are the push state machine.
* ``stripe_events``: every webhook event applied, by id (global: the dedupe must span tenants).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.db import Base, TenantOwned, Timestamped, new_id

__all__ = ["BillingAccount", "Invoice", "InvoiceLine", "PlanChange", "StripeEvent"]


class BillingAccount(TenantOwned, Timestamped, Base):
    __tablename__ = "billing_accounts"
    __table_args__ = (UniqueConstraint("org_id", name="uq_billing_accounts_org_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    collection: Mapped[str] = mapped_column(String(16), nullable=False, default="card")  # card | invoice
    days_until_due: Mapped[int] = mapped_column(Integer, nullable=False, default=30)  # invoice collection
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="usd")
    # Recorded (and committed) before the customer is created in Stripe: the idempotency key and the
    # marker a retry uses to look the customer up instead of creating a second one.
    customer_intent_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # stand-in only
    setup_ref: Mapped[str | None] = mapped_column(String(200), nullable=True)  # open Checkout session / SetupIntent
    payment_method_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    card_brand: Mapped[str | None] = mapped_column(String(32), nullable=True)
    card_last4: Mapped[str | None] = mapped_column(String(4), nullable=True)
    card_exp: Mapped[str | None] = mapped_column(String(7), nullable=True)  # "12/2030"
    payment_method_event_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # Stripe event.created
    pending_plan: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pending_plan_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # ok | past_due (payment failed, retrying, within grace) | blocked (grace over: no new jobs)
    dunning_state: Mapped[str] = mapped_column(String(16), nullable=False, default="ok")
    dunning_invoice_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    past_due_since: Mapped[datetime | None] = mapped_column(nullable=True)
    grace_until: Mapped[datetime | None] = mapped_column(nullable=True)
    blocked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(nullable=True)


class PlanChange(TenantOwned, Timestamped, Base):
    __tablename__ = "billing_plan_changes"
    __table_args__ = (Index("ix_billing_plan_changes_org_id_effective_at", "org_id", "effective_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    plan: Mapped[str] = mapped_column(String(32), nullable=False)
    effective_at: Mapped[datetime] = mapped_column(nullable=False)
    applied_at: Mapped[datetime | None] = mapped_column(nullable=True)  # orgs.plan updated
    cancelled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    actor: Mapped[str] = mapped_column(String(320), nullable=False, default="")


class Invoice(TenantOwned, Timestamped, Base):
    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("org_id", "period", name="uq_invoices_org_id_period"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    number: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    period: Mapped[str] = mapped_column(String(7), nullable=False)  # "2026-11"
    period_start: Mapped[datetime] = mapped_column(nullable=False)
    period_end: Mapped[datetime] = mapped_column(nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="draft")  # draft|open|paid|void|uncollectible
    plan: Mapped[str] = mapped_column(String(32), nullable=False)
    collection: Mapped[str] = mapped_column(String(16), nullable=False, default="card")
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="usd")
    subtotal_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    total_cents: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # metering's close of the period (``usage_period_closes``): usage that arrived before it is on this
    # invoice; later arrivals for the period are late usage, adjustments on a later invoice
    usage_closed_at: Mapped[datetime] = mapped_column(nullable=False)
    issued_at: Mapped[datetime | None] = mapped_column(nullable=True)
    due_at: Mapped[datetime | None] = mapped_column(nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(nullable=True)
    voided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The push to Stripe: pending -> items -> invoice -> finalized -> collected (or skipped: nothing to collect)
    stripe_step: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stripe_invoice_intent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    stripe_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    stripe_event_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # newest event applied
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    payment_state: Mapped[str] = mapped_column(String(16), nullable=False, default="none")  # none|failed|succeeded
    payment_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    payment_failed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    payment_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class InvoiceLine(TenantOwned, Base):
    __tablename__ = "invoice_lines"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"), index=True,
                                                  nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # usage | adjustment
    resource: Mapped[str] = mapped_column(String(32), nullable=False)
    gpu_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source_period: Mapped[str] = mapped_column(String(7), nullable=False)  # whose usage the line bills
    description: Mapped[str] = mapped_column(String(300), nullable=False)
    # In metering's raw units (millicore-seconds, byte-seconds, GPU-seconds): what it counts, exactly,
    # so a later recount of a closed period compares like with like (late usage -> adjustment lines).
    raw_quantity: Mapped[Decimal] = mapped_column(Numeric(38, 0), nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Numeric(38, 9), nullable=False)  # in billing units, for display
    unit: Mapped[str] = mapped_column(String(32), nullable=False)  # "vCPU-hour"
    unit_price_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)  # micro-dollars per billing unit
    amount_cents: Mapped[int] = mapped_column(BigInteger, nullable=False)
    rate_version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    stripe_item_intent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    stripe_invoice_item_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class StripeEvent(Base):
    """A webhook (or recovered) event applied once; inserted in the same transaction as its effect."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), nullable=False)
    created_unix: Mapped[int] = mapped_column(BigInteger, nullable=False)
    received_at: Mapped[datetime] = mapped_column(nullable=False)
    outcome: Mapped[str] = mapped_column(String(300), nullable=False, default="")
