"""Usage tables: raw records (partitioned by month), hourly rollups, period closes, rate cards.

* ``usage_records``: one row per (job or volume, resource, GPU type, window). Range-partitioned by
  ``window_start`` into monthly partitions ``usage_records_pYYYYMM`` (created by
  ``billing.usage.partitions``; each one under RLS like any tenant table). The primary key
  ``(id, window_start)`` is the dedupe key: the id encodes the window start (``billing.usage.ids``), so
  it is unique forever. No foreign keys: raw records are billing evidence that outlives jobs and
  clusters, and a per-row FK check would cost ingest throughput.
* ``usage_hourly``: sums per org, hour, cluster, resource and GPU type, kept in step with the raw
  records in the ingest transaction and rebuildable from them (``billing.usage.rollups``).
* ``usage_period_closes``: which months billing has closed per org; records for a closed month are
  still accepted and flagged ``late`` (``billing.usage.queries.late_usage_since``).
* ``rate_cards``: versioned prices (``billing.usage.rates``), per plan (``org_id`` NULL, readable by
  every tenant) or per org (an Enterprise contract, RLS like any tenant row).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenants.db import Base, Timestamped, new_id

__all__ = ["RateCard", "UsageHourly", "UsagePeriodClose", "UsageRecord"]


class UsageRecord(Base):
    __tablename__ = "usage_records"
    __table_args__ = (
        PrimaryKeyConstraint("id", "window_start", name="pk_usage_records"),
        Index("ix_usage_records_org_id_window_start", "org_id", "window_start"),
        # late records are few; the billing cycle asks for them by ingest time
        Index("ix_usage_records_late", "org_id", "ingested_at", postgresql_where=text("late")),
        {"postgresql_partition_by": "RANGE (window_start)"},
    )

    id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    window_start: Mapped[datetime] = mapped_column(nullable=False)
    window_end: Mapped[datetime] = mapped_column(nullable=False)
    org_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    cluster_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    volume: Mapped[str | None] = mapped_column(String(253), nullable=True)  # storage records (seam)
    resource: Mapped[str] = mapped_column(String(16), nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    allocated: Mapped[int] = mapped_column(BigInteger, nullable=False)
    quantity: Mapped[int] = mapped_column(BigInteger, nullable=False)
    ingested_at: Mapped[datetime] = mapped_column(nullable=False)
    late: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class UsageHourly(Base):
    __tablename__ = "usage_hourly"
    __table_args__ = (
        PrimaryKeyConstraint("org_id", "hour", "cluster_id", "resource", "gpu_type", name="pk_usage_hourly"),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    hour: Mapped[datetime] = mapped_column(nullable=False)
    cluster_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    resource: Mapped[str] = mapped_column(String(16), nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    quantity: Mapped[int] = mapped_column(Numeric(38, 0), nullable=False)
    records: Mapped[int] = mapped_column(BigInteger, nullable=False)


class UsagePeriodClose(Base):
    """Billing closed ``period_start``'s month for the org at ``closed_at`` (written by the billing cycle)."""

    __tablename__ = "usage_period_closes"
    __table_args__ = (PrimaryKeyConstraint("org_id", "period_start", name="pk_usage_period_closes"),)

    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=False)
    period_start: Mapped[date] = mapped_column(Date, nullable=False)
    closed_at: Mapped[datetime] = mapped_column(nullable=False)


class RateCard(Timestamped, Base):
    """Prices from ``effective_from`` until the next card of the same plan (or org). Money in integer
    micro-dollars (1 USD = 1,000,000), exact; ``gpu_hour_micros`` maps a GPU type (``"A100"``) to its
    price, others pay ``gpu_default_hour_micros``. The free allowance lives here too (data, not code)."""

    __tablename__ = "rate_cards"
    __table_args__ = (
        CheckConstraint("(plan IS NULL) <> (org_id IS NULL)", name="plan_xor_org"),
        UniqueConstraint("plan", "effective_from", name="uq_rate_cards_plan_effective_from"),
        UniqueConstraint("org_id", "effective_from", name="uq_rate_cards_org_id_effective_from"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    plan: Mapped[str | None] = mapped_column(String(32), nullable=True)
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=True)
    effective_from: Mapped[datetime] = mapped_column(nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False, default="usd")
    vcpu_hour_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    memory_gib_hour_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    gpu_hour_micros: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    gpu_default_hour_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    storage_gib_month_micros: Mapped[int] = mapped_column(BigInteger, nullable=False)
    free_vcpu_millis: Mapped[int] = mapped_column(BigInteger, nullable=False, default=8000)
    free_memory_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=16 << 30)
    note: Mapped[str] = mapped_column(Text, nullable=False, default="")
