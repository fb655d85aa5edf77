"""Billing periods as metering sees them: calendar months in UTC, and which ones billing has closed.

The billing cycle calls ``mark_period_closed`` when it closes a month for an org (before rating it).
It takes the same per-org advisory lock as ingest, exclusively, and stamps ``closed_at`` with the
clock while holding it: every batch committed before has ``ingested_at < closed_at`` and is in the
rating; every batch after sees the close, stores its records for that month flagged ``late`` with
``ingested_at > closed_at``, and ``queries.late_usage_since`` carries them into a later invoice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from billing.usage.ingest import close_lock_sql
from billing.usage.models import UsagePeriodClose
from billing.usage.partitions import add_months, month_of

__all__ = ["Period", "closed_at", "mark_period_closed"]


@dataclass(frozen=True, slots=True)
class Period:
    """``[start, end)`` in UTC; usually one calendar month, or any whole days (``?from=&to=``)."""

    start: datetime
    end: datetime

    @classmethod
    def month(cls, moment: datetime | date) -> Period:
        first = month_of(moment)
        return cls(start=_midnight(first), end=_midnight(add_months(first, 1)))

    @classmethod
    def days(cls, first: date, last: date) -> Period:
        """From ``first`` through ``last`` (inclusive), whole UTC days."""
        return cls(start=_midnight(first), end=_midnight(last + timedelta(days=1)))

    @property
    def label(self) -> str:
        if self == Period.month(self.start):
            return f"{self.start:%Y-%m}"
        return f"{self.start:%Y-%m-%d}..{(self.end - timedelta(days=1)):%Y-%m-%d}"

    @property
    def month_start(self) -> date:
        return month_of(self.start)


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


async def mark_period_closed(session: AsyncSession, org_id: uuid.UUID, period_start: date) -> datetime:
    """Close ``period_start``'s month for metering; idempotent (returns the first close's time)."""
    got = (await session.execute(text(close_lock_sql(shared=False)), {"org": str(org_id)})).one()
    stamp: datetime = got[1]
    await session.execute(insert(UsagePeriodClose).values(org_id=org_id, period_start=month_of(period_start),
                                                          closed_at=stamp).on_conflict_do_nothing())
    found = await closed_at(session, org_id, period_start)
    assert found is not None
    return found


async def closed_at(session: AsyncSession, org_id: uuid.UUID, period_start: date) -> datetime | None:
    return (await session.execute(select(UsagePeriodClose.closed_at).where(
        UsagePeriodClose.org_id == org_id, UsagePeriodClose.period_start == month_of(period_start)))).scalar_one_or_none()
