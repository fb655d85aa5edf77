"""Reading usage: billable quantities after the free allowance, late usage, and a period's summary.

* ``billable_usage(session, org_id, period, timeline)``: per resource and GPU type, per hour, the gross
  and billable base units. vCPU and memory go through the allowance sweep (``allowance.excess_by_hour``)
  over raw records, because the allowance applies to what is in use at each moment across all of the
  org's clusters, which hourly sums cannot tell; GPUs and storage are billable in full.
  ``ingested_before`` restricts to what had arrived by then (a period as it was when closed).
* ``late_usage_since(session, org_id, since, until, timeline)``: what records that arrived after their
  month was closed add, as billable quantities: for each such month, billable(arrived before
  ``until``) - billable(arrived before ``since``). Summed over consecutive calls (``since`` = the
  previous close) these telescope: every late record is billed exactly once, and an issued invoice is
  never touched.
* ``summarize(session, org_id, period, timeline, now)``: totals, by cluster, by day (from the hourly
  rollups), free allowance used, and cost to date.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from fractions import Fraction

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing.usage.allowance import HourFigures, excess_by_hour
from billing.usage.ids import GIB
from billing.usage.periods import Period, closed_at
from billing.usage.rates import CardTimeline, RatedLine, rate_lines

__all__ = [
    "FALLBACK_ALLOWANCE",
    "BillableUsage",
    "LateUsage",
    "UsageSummary",
    "billable_usage",
    "late_usage_since",
    "resource_key",
    "summarize",
]

# Only when no rate card covers an hour at all (a fresh database without the seeded card).
FALLBACK_ALLOWANCE = {"vcpu": 8000, "memory": 16 * GIB}


def resource_key(resource: str, gpu_type: str) -> str:
    """``vcpu``, ``memory``, ``storage``, or ``gpu:A100``: how JSON and CSV name a line."""
    return f"gpu:{gpu_type}" if resource == "gpu" else resource


@dataclass(frozen=True, slots=True)
class BillableUsage:
    """``hours[(resource, gpu_type)][hour epoch] = HourFigures(gross, billable)``, base units."""

    hours: Mapping[tuple[str, str], Mapping[int, HourFigures]]

    def billable_by_hour(self) -> dict[tuple[str, str], dict[int, int]]:
        return {k: {h: f.billable for h, f in v.items()} for k, v in self.hours.items()}

    def totals(self) -> dict[tuple[str, str], HourFigures]:
        return {k: HourFigures(gross=sum(f.gross for f in v.values()), billable=sum(f.billable for f in v.values()))
                for k, v in self.hours.items()}


_WHERE = "org_id = :org AND window_start >= :start AND window_start < :end"

_DELTAS = f"""
SELECT resource, t, sum(d) AS d FROM (
    SELECT resource, extract(epoch FROM window_start)::bigint AS t, allocated AS d
      FROM usage_records WHERE {_WHERE} AND resource IN ('vcpu', 'memory') {{arrived}}
    UNION ALL
    SELECT resource, extract(epoch FROM window_end)::bigint, -allocated
      FROM usage_records WHERE {_WHERE} AND resource IN ('vcpu', 'memory') {{arrived}}
) x GROUP BY resource, t ORDER BY resource, t
"""  # noqa: S608 - constants only
_FULL = f"""
SELECT resource, gpu_type, (extract(epoch FROM date_trunc('hour', window_start, 'UTC')))::bigint AS hour,
       sum(quantity) AS q
  FROM usage_records WHERE {_WHERE} AND resource IN ('gpu', 'storage') {{arrived}}
 GROUP BY 1, 2, 3
"""  # noqa: S608 - constants only


async def billable_usage(session: AsyncSession, org_id: uuid.UUID, period: Period, timeline: CardTimeline | None,
                         *, ingested_before: datetime | None = None) -> BillableUsage:
    arrived = "AND ingested_at < :before" if ingested_before is not None else ""
    params: dict[str, object] = {"org": org_id, "start": period.start, "end": period.end}
    if ingested_before is not None:
        params["before"] = ingested_before
    hours: dict[tuple[str, str], dict[int, HourFigures]] = {}
    deltas: dict[str, list[tuple[int, int]]] = {}
    for resource, t, d in (await session.execute(text(_DELTAS.format(arrived=arrived)), params)).all():
        deltas.setdefault(resource, []).append((int(t), int(d)))
    for resource, changes in deltas.items():
        def allowance(hour: int, resource: str = resource) -> int:
            card = timeline.at(datetime.fromtimestamp(hour, UTC)) if timeline is not None else None
            return card.allowance(resource) if card is not None else FALLBACK_ALLOWANCE[resource]
        hours[(resource, "")] = excess_by_hour(changes, allowance)
    for resource, gpu_type, hour, q in (await session.execute(text(_FULL.format(arrived=arrived)), params)).all():
        hours.setdefault((resource, gpu_type), {})[int(hour)] = HourFigures(gross=int(q), billable=int(q))
    return BillableUsage(hours=hours)


@dataclass(frozen=True, slots=True)
class LateUsage:
    """What late records of one closed month add (base units), and their price on its cards."""

    period_start: date
    added: Mapping[tuple[str, str], HourFigures]  # gross and billable added per (resource, gpu_type)
    lines: list[RatedLine]  # the billable addition, rated; each line's amount_cents is rounded once

    @property
    def amount_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)


_LATE_MONTHS = """
SELECT DISTINCT date_trunc('month', window_start, 'UTC')::date FROM usage_records
 WHERE org_id = :org AND late AND ingested_at >= :since AND ingested_at < :until ORDER BY 1
"""


async def late_usage_since(session: AsyncSession, org_id: uuid.UUID, since: datetime, until: datetime | None = None,
                           *, timeline: CardTimeline | None) -> list[LateUsage]:
    """Adjustments for usage of closed months that arrived in ``[since, until)``.

    The billing cycle closing a month at ``T`` passes ``since`` = the previous close (or the org's
    start) and ``until`` = ``T``, and adds each result as an adjustment line on the new invoice.
    """
    until = until or datetime.now(UTC)
    months = (await session.execute(text(_LATE_MONTHS), {"org": org_id, "since": since, "until": until})).scalars()
    out: list[LateUsage] = []
    for month in list(months):
        period = Period.month(month)
        closed = await closed_at(session, org_id, month)
        before = max(since, closed) if closed is not None else since
        after_ = (await billable_usage(session, org_id, period, timeline, ingested_before=until)).hours
        prior = (await billable_usage(session, org_id, period, timeline, ingested_before=before)).hours
        added_by_hour: dict[tuple[str, str], dict[int, int]] = {}
        added: dict[tuple[str, str], HourFigures] = {}
        for key, hours in after_.items():
            was = prior.get(key, {})
            gross = billable = 0
            for hour, fig in hours.items():
                old = was.get(hour, HourFigures(0, 0))
                gross += fig.gross - old.gross
                added_by_hour.setdefault(key, {})[hour] = fig.billable - old.billable
                billable += fig.billable - old.billable
            if gross or billable:
                added[key] = HourFigures(gross=gross, billable=billable)
        if added:
            lines = rate_lines(added_by_hour, timeline) if timeline is not None else []
            out.append(LateUsage(period_start=month, added=added, lines=lines))
    return out


@dataclass(slots=True)
class UsageSummary:
    """Gross base units by resource key (``vcpu``, ``memory``, ``gpu:A100``, ``storage``)."""

    period: Period
    totals: dict[str, int] = field(default_factory=dict)
    by_cluster: dict[uuid.UUID, dict[str, int]] = field(default_factory=dict)
    by_day: dict[date, dict[str, int]] = field(default_factory=dict)
    cells: dict[tuple[date, uuid.UUID, str], int] = field(default_factory=dict)  # (day, cluster, key): CSV rows
    free: dict[str, HourFigures] = field(default_factory=dict)  # vcpu and memory: gross, billable (free = rest)
    lines: list[RatedLine] = field(default_factory=list)
    priced: bool = True  # False when no rate card covers the period

    @property
    def cost_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)

    @property
    def cost_micros(self) -> Fraction:
        return sum((line.amount for line in self.lines), Fraction(0))


_ROLLUP = """
SELECT cluster_id, resource, gpu_type, date_trunc('day', hour, 'UTC')::date AS day, sum(quantity) AS q
  FROM usage_hourly WHERE org_id = :org AND hour >= :start AND hour < :end
 GROUP BY 1, 2, 3, 4
"""


async def summarize(session: AsyncSession, org_id: uuid.UUID, period: Period,
                    timeline: CardTimeline | None) -> UsageSummary:
    out = UsageSummary(period=period)
    rows = (await session.execute(text(_ROLLUP), {"org": org_id, "start": period.start, "end": period.end})).all()
    for cluster_id, resource, gpu_type, day, q in rows:
        key, q = resource_key(resource, gpu_type), int(q)
        out.totals[key] = out.totals.get(key, 0) + q
        per_cluster = out.by_cluster.setdefault(cluster_id, {})
        per_cluster[key] = per_cluster.get(key, 0) + q
        per_day = out.by_day.setdefault(day, {})
        per_day[key] = per_day.get(key, 0) + q
        out.cells[(day, cluster_id, key)] = out.cells.get((day, cluster_id, key), 0) + q
    billable = await billable_usage(session, org_id, period, timeline)
    totals = billable.totals()
    for resource in ("vcpu", "memory"):
        out.free[resource] = totals.get((resource, ""), HourFigures(0, 0))
    out.priced = timeline is not None and timeline.at(period.end) is not None
    out.lines = rate_lines(billable.billable_by_hour(), timeline) if timeline is not None else []
    return out
