"""Usage: raw records partitioned by month, hourly rollups, period closes, rate cards (payg seeded).

Revision ID: 0009
Revises: 0006
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from billing.usage.partitions import add_months, function_sql, month_of
from tenants.rls import enable_tenant_rls_sql

revision: str = "0009"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ("usage_records", "usage_hourly", "usage_period_closes", "rate_cards")

# List prices of Pay-as-you-go, in micro-dollars (exact integers). Later changes are new cards with a
# later effective_from, never edits of this one.
PAYG = {
    "vcpu_hour_micros": 40_000,  # $0.04 per vCPU-hour
    "memory_gib_hour_micros": 5_000,  # $0.005 per GiB-hour
    "gpu_hour_micros": {"A100": 2_500_000, "H100": 4_000_000, "L4": 700_000, "T4": 350_000},
    "gpu_default_hour_micros": 1_200_000,  # any other GPU: $1.20 per hour
    "storage_gib_month_micros": 100_000,  # $0.10 per GiB-month
    "free_vcpu_millis": 8_000,  # the first 8 vCPU and 16 GiB in use at any moment are free
    "free_memory_bytes": 16 << 30,
}


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE usage_records (
            id uuid NOT NULL,
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            org_id uuid NOT NULL,
            cluster_id uuid NOT NULL,
            job_id uuid,
            volume varchar(253),
            resource varchar(16) NOT NULL,
            gpu_type varchar(64) NOT NULL,
            allocated bigint NOT NULL,
            quantity bigint NOT NULL,
            ingested_at timestamptz NOT NULL,
            late boolean NOT NULL,
            CONSTRAINT pk_usage_records PRIMARY KEY (id, window_start)
        ) PARTITION BY RANGE (window_start)
        """
    )
    op.create_index("ix_usage_records_org_id_window_start", "usage_records", ["org_id", "window_start"])
    op.create_index("ix_usage_records_late", "usage_records", ["org_id", "ingested_at"],
                    postgresql_where=sa.text("late"))
    op.create_table(
        "usage_hourly",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("resource", sa.String(length=16), nullable=False),
        sa.Column("gpu_type", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Numeric(38, 0), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_usage_hourly_org_id_orgs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("org_id", "hour", "cluster_id", "resource", "gpu_type", name="pk_usage_hourly"),
    )
    op.create_table(
        "usage_period_closes",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_usage_period_closes_org_id_orgs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("org_id", "period_start", name="pk_usage_period_closes"),
    )
    op.create_table(
        "rate_cards",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan", sa.String(length=32), nullable=True),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("vcpu_hour_micros", sa.BigInteger(), nullable=False),
        sa.Column("memory_gib_hour_micros", sa.BigInteger(), nullable=False),
        sa.Column("gpu_hour_micros", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("gpu_default_hour_micros", sa.BigInteger(), nullable=False),
        sa.Column("storage_gib_month_micros", sa.BigInteger(), nullable=False),
        sa.Column("free_vcpu_millis", sa.BigInteger(), nullable=False),
        sa.Column("free_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("(plan IS NULL) <> (org_id IS NULL)", name=op.f("ck_rate_cards_plan_xor_org")),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_rate_cards_org_id_orgs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_cards")),
        sa.UniqueConstraint("org_id", "effective_from", name="uq_rate_cards_org_id_effective_from"),
        sa.UniqueConstraint("plan", "effective_from", name="uq_rate_cards_plan_effective_from"),
    )
    for table in TENANT_TABLES:
        for stmt in enable_tenant_rls_sql(table):
            op.execute(stmt)
    # Plan cards (org_id NULL) are the public price list: every tenant may read them, nobody but an
    # unscoped (operator) session may write them. Org cards stay behind tenant_isolation.
    op.execute("CREATE POLICY plan_cards_readable ON rate_cards FOR SELECT USING (org_id IS NULL)")
    for stmt in function_sql():
        op.execute(stmt)
    this_month = month_of(datetime.now(UTC))
    for i in range(-1, 4):  # last month .. three ahead; ingest and `maintain` create others on demand
        op.execute(sa.text("SELECT usage_ensure_partition(:m)").bindparams(m=add_months(this_month, i)))
    op.execute(
        sa.text(
            "INSERT INTO rate_cards (id, plan, org_id, effective_from, currency, vcpu_hour_micros, "
            "memory_gib_hour_micros, gpu_hour_micros, gpu_default_hour_micros, storage_gib_month_micros, "
            "free_vcpu_millis, free_memory_bytes, note) VALUES (gen_random_uuid(), 'payg', NULL, "
            "'2024-01-01 00:00:00+00', 'usd', :vcpu, :mem, CAST(:gpu AS jsonb), :gpu_default, :storage, "
            ":free_cpu, :free_mem, 'list prices')"
        ).bindparams(vcpu=PAYG["vcpu_hour_micros"], mem=PAYG["memory_gib_hour_micros"],
                     gpu=json.dumps(PAYG["gpu_hour_micros"]), gpu_default=PAYG["gpu_default_hour_micros"],
                     storage=PAYG["storage_gib_month_micros"], free_cpu=PAYG["free_vcpu_millis"],
                     free_mem=PAYG["free_memory_bytes"])
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS usage_drop_partitions_before(date)")
    op.execute("DROP FUNCTION IF EXISTS usage_ensure_partition(date)")
    op.drop_table("rate_cards")
    op.drop_table("usage_period_closes")
    op.drop_table("usage_hourly")
    op.execute("DROP TABLE usage_records")  # and its partitions
