"""Billing ledger: accounts, plan history, invoices and lines, applied Stripe events.

Revision ID: 0010
Revises: 0006
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from tenants.rls import enable_tenant_rls_sql

revision: str = "0010"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ("billing_accounts", "billing_plan_changes", "invoices", "invoice_lines")

_TS = sa.DateTime(timezone=True)


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f(f"fk_{table}_org_id_orgs"), ondelete="CASCADE")


def _created() -> sa.Column[Any]:
    return sa.Column("created_at", _TS, server_default=sa.text("now()"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("collection", sa.String(length=16), nullable=False),
        sa.Column("days_until_due", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("customer_intent_key", sa.String(length=64), nullable=True),
        sa.Column("stripe_customer_id", sa.String(length=64), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(length=64), nullable=True),
        sa.Column("setup_ref", sa.String(length=200), nullable=True),
        sa.Column("payment_method_id", sa.String(length=64), nullable=True),
        sa.Column("card_brand", sa.String(length=32), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("card_exp", sa.String(length=7), nullable=True),
        sa.Column("payment_method_event_at", sa.BigInteger(), nullable=True),
        sa.Column("pending_plan", sa.String(length=32), nullable=True),
        sa.Column("pending_plan_at", _TS, nullable=True),
        sa.Column("dunning_state", sa.String(length=16), nullable=False),
        sa.Column("dunning_invoice_id", sa.Uuid(), nullable=True),
        sa.Column("past_due_since", _TS, nullable=True),
        sa.Column("grace_until", _TS, nullable=True),
        sa.Column("blocked_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        _created(),
        _org_fk("billing_accounts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_accounts")),
        sa.UniqueConstraint("org_id", name="uq_billing_accounts_org_id"),
        sa.UniqueConstraint("stripe_customer_id", name=op.f("uq_billing_accounts_stripe_customer_id")),
    )
    op.create_index(op.f("ix_billing_accounts_org_id"), "billing_accounts", ["org_id"], unique=False)
    op.create_table(
        "billing_plan_changes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan", sa.String(length=32), nullable=False),
        sa.Column("effective_at", _TS, nullable=False),
        sa.Column("applied_at", _TS, nullable=True),
        sa.Column("cancelled_at", _TS, nullable=True),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        _created(),
        _org_fk("billing_plan_changes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_plan_changes")),
    )
    op.create_index(op.f("ix_billing_plan_changes_org_id"), "billing_plan_changes", ["org_id"], unique=False)
    op.create_index("ix_billing_plan_changes_org_id_effective_at", "billing_plan_changes",
                    ["org_id", "effective_at"], unique=False)
    op.create_table(
        "invoices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("period_start", _TS, nullable=False),
        sa.Column("period_end", _TS, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("plan", sa.String(length=32), nullable=False),
        sa.Column("collection", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal_cents", sa.BigInteger(), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("usage_closed_at", _TS, nullable=False),
        sa.Column("issued_at", _TS, nullable=True),
        sa.Column("due_at", _TS, nullable=True),
        sa.Column("paid_at", _TS, nullable=True),
        sa.Column("voided_at", _TS, nullable=True),
        sa.Column("stripe_step", sa.String(length=16), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=64), nullable=True),
        sa.Column("stripe_invoice_intent_at", _TS, nullable=True),
        sa.Column("stripe_invoice_id", sa.String(length=64), nullable=True),
        sa.Column("stripe_status", sa.String(length=16), nullable=True),
        sa.Column("stripe_event_at", sa.BigInteger(), nullable=True),
        sa.Column("hosted_invoice_url", sa.Text(), nullable=True),
        sa.Column("payment_state", sa.String(length=16), nullable=False),
        sa.Column("payment_attempts", sa.Integer(), nullable=False),
        sa.Column("payment_failed_at", _TS, nullable=True),
        sa.Column("payment_error", sa.Text(), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        _created(),
        _org_fk("invoices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("number", name=op.f("uq_invoices_number")),
        sa.UniqueConstraint("org_id", "period", name="uq_invoices_org_id_period"),
        sa.UniqueConstraint("stripe_invoice_id", name=op.f("uq_invoices_stripe_invoice_id")),
    )
    op.create_index(op.f("ix_invoices_org_id"), "invoices", ["org_id"], unique=False)
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("invoice_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("gpu_type", sa.String(length=64), nullable=True),
        sa.Column("source_period", sa.String(length=7), nullable=False),
        sa.Column("description", sa.String(length=300), nullable=False),
        sa.Column("raw_quantity", sa.Numeric(precision=38, scale=0), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=38, scale=9), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("unit_price_micros", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("rate_version", sa.String(length=64), nullable=False),
        sa.Column("stripe_item_intent_at", _TS, nullable=True),
        sa.Column("stripe_invoice_item_id", sa.String(length=64), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_lines_invoice_id_invoices"),
                                ondelete="CASCADE"),
        _org_fk("invoice_lines"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
    )
    op.create_index(op.f("ix_invoice_lines_invoice_id"), "invoice_lines", ["invoice_id"], unique=False)
    op.create_index(op.f("ix_invoice_lines_org_id"), "invoice_lines", ["org_id"], unique=False)
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("created_unix", sa.BigInteger(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("outcome", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    for table in TENANT_TABLES:
        for stmt in enable_tenant_rls_sql(table):
            op.execute(stmt)


def downgrade() -> None:
    op.drop_table("stripe_events")
    op.drop_index(op.f("ix_invoice_lines_org_id"), table_name="invoice_lines")
    op.drop_index(op.f("ix_invoice_lines_invoice_id"), table_name="invoice_lines")
    op.drop_table("invoice_lines")
    op.drop_index(op.f("ix_invoices_org_id"), table_name="invoices")
    op.drop_table("invoices")
    op.drop_index("ix_billing_plan_changes_org_id_effective_at", table_name="billing_plan_changes")
    op.drop_index(op.f("ix_billing_plan_changes_org_id"), table_name="billing_plan_changes")
    op.drop_table("billing_plan_changes")
    op.drop_index(op.f("ix_billing_accounts_org_id"), table_name="billing_accounts")
    op.drop_table("billing_accounts")
