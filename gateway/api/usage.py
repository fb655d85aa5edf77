"""The org's usage as JSON and CSV: ``GET /api/v1/orgs/{org}/usage`` (``?from=&to=`` dates, default the
current calendar month in UTC) and ``GET /api/v1/orgs/{org}/usage.csv`` (or ``?format=csv``); members
with ``usage:read``.

Shape (stable, the CLI reads it): ``period``, ``totals`` by resource key (``vcpu``, ``memory``,
``gpu:<type>``, ``storage``), ``by_cluster``, ``by_day``, ``free_allowance`` (vCPU and memory: the
allowance, what it covered and what is billable), ``cost_lines`` and ``cost_to_date_cents`` (billable
usage priced with the org's rate card; each line rounded once, half up, to the cent). Quantities are
decimal strings in the unit people read, with the exact integer in base units beside them.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated

import msgspec
from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy import select

from billing.usage.ids import UNITS, display_quantity, display_unit
from billing.usage.periods import Period
from billing.usage.queries import UsageSummary, summarize
from billing.usage.rates import CardTimeline, card_timeline, micros_to_dollars
from connectors.server.models import Cluster
from gateway.auth import require
from gateway.deps import Runtime, Tenant
from gateway.runtime import GatewayRuntime
from tenants.db import tenant_session, utcnow
from tenants.errors import InvalidInput, NotFound
from tenants.models import Org
from tenants.permissions import Permission
from tenants.scope import TenantScope

__all__ = ["USAGE_API_ROUTES", "LoadedUsage", "UsageRead", "load_usage", "usage_csv", "usage_json"]

MAX_DAYS = 366
GIB = 1 << 30
_NO_CACHE = CacheControlHeader(no_store=True)
FromDate = Annotated[date | None, QueryParameter(name="from", description="first day (UTC), e.g. 2026-11-01")]
ToDate = Annotated[date | None, QueryParameter(description="last day (UTC, inclusive)")]


class Quantity(msgspec.Struct, kw_only=True):
    quantity: Decimal  # in `unit`, rounded to 4 places for reading
    unit: str  # vCPU-hours | GiB-hours | GPU-hours | GiB-months
    base_quantity: int  # exact, in `base_unit`
    base_unit: str  # millicore_seconds | byte_seconds | gpu_seconds


class PeriodRead(msgspec.Struct, kw_only=True):
    start: datetime
    end: datetime  # exclusive
    label: str  # "2026-11" for a calendar month


class ClusterUsage(msgspec.Struct, kw_only=True):
    cluster_id: uuid.UUID
    name: str
    usage: dict[str, Quantity]


class DayUsage(msgspec.Struct, kw_only=True):
    date: date
    usage: dict[str, Quantity]


class AllowanceRead(msgspec.Struct, kw_only=True):
    free_at_any_moment: Decimal  # 8 (vCPU) or 16 (GiB)
    free_unit: str  # vCPU | GiB
    in_use: Quantity  # everything used in the period
    covered: Quantity  # the part the allowance made free
    billable: Quantity


class CostLine(msgspec.Struct, kw_only=True):
    key: str
    resource: str
    gpu_type: str
    billable: Quantity
    unit_price_usd: Decimal  # per unit of `billable.unit`
    amount_cents: int


class UsageRead(msgspec.Struct, kw_only=True):
    org: str
    period: PeriodRead
    currency: str
    totals: dict[str, Quantity]
    by_cluster: list[ClusterUsage]
    by_day: list[DayUsage]
    free_allowance: dict[str, AllowanceRead]
    cost_lines: list[CostLine]
    cost_to_date_cents: int
    priced: bool  # False: no rate card covers the period (cost shown as 0)
    generated_at: datetime


def _resource(key: str) -> str:
    return key.split(":", 1)[0]


_ORDER = {"vcpu": 0, "memory": 1, "gpu": 2, "storage": 3}


def _ordered(usage: dict[str, int]) -> list[tuple[str, int]]:
    """vCPU, memory, GPUs by type, storage: the order of the price list."""
    return sorted(usage.items(), key=lambda kv: (_ORDER.get(_resource(kv[0]), 9), kv[0]))


def quantity(key: str, base: int) -> Quantity:
    resource = _resource(key)
    return Quantity(quantity=display_quantity(resource, base), unit=display_unit(resource), base_quantity=base,
                    base_unit=UNITS[resource])


@dataclass(frozen=True, slots=True)
class LoadedUsage:
    read: UsageRead
    summary: UsageSummary
    cluster_names: dict[uuid.UUID, str]
    timeline: CardTimeline


def parse_period(frm: date | None, to: date | None, now: datetime) -> Period:
    if frm is None and to is None:
        return Period.month(now)
    first = frm or date(now.year, now.month, 1)
    last = to or now.date()
    errors: dict[str, str] = {}
    if last < first:
        errors["to"] = "must not be before from"
    elif (last - first) >= timedelta(days=MAX_DAYS):
        errors["to"] = f"ask for at most {MAX_DAYS} days at a time"
    if errors:
        raise InvalidInput("the period is not valid", field_errors=errors)
    return Period.days(first, last)


async def load_usage(runtime: GatewayRuntime, tenant: TenantScope, period: Period) -> LoadedUsage:
    """The summary of ``period`` for the org of ``tenant`` (billing composes; cluster names from connectors)."""
    tenant.require(Permission.USAGE_READ)
    async with tenant_session(runtime.sessions, tenant) as s:
        org = await s.get(Org, tenant.org_id)
        if org is None:
            raise NotFound("Organization not found.")
        timeline = await card_timeline(s, org.id, org.plan)
        summary = await summarize(s, org.id, period, timeline)
        names = {cid: name for cid, name in (await s.execute(
            select(Cluster.id, Cluster.name).where(Cluster.id.in_(list(summary.by_cluster))))).all()}
    return LoadedUsage(read=_read(org.slug, summary, names, timeline), summary=summary, cluster_names=names,
                       timeline=timeline)


def _read(slug: str, summary: UsageSummary, names: dict[uuid.UUID, str], timeline: CardTimeline) -> UsageRead:
    card = timeline.at(min(summary.period.end, utcnow()))
    free: dict[str, AllowanceRead] = {}
    for resource, figures in summary.free.items():
        level = card.allowance(resource) if card is not None else 0
        free[resource] = AllowanceRead(
            free_at_any_moment=Decimal(level) / (1000 if resource == "vcpu" else GIB),
            free_unit="vCPU" if resource == "vcpu" else "GiB", in_use=quantity(resource, figures.gross),
            covered=quantity(resource, figures.free), billable=quantity(resource, figures.billable))
    lines = [CostLine(key=f"gpu:{ln.gpu_type}" if ln.resource == "gpu" else ln.resource, resource=ln.resource,
                      gpu_type=ln.gpu_type, billable=quantity(ln.resource, ln.quantity),
                      unit_price_usd=micros_to_dollars(ln.unit_price_micros), amount_cents=ln.amount_cents)
             for ln in summary.lines]
    return UsageRead(
        org=slug, period=PeriodRead(start=summary.period.start, end=summary.period.end, label=summary.period.label),
        currency="usd", totals={k: quantity(k, v) for k, v in _ordered(summary.totals)},
        by_cluster=sorted((ClusterUsage(cluster_id=cid, name=names.get(cid, str(cid)[:8]),
                                        usage={k: quantity(k, v) for k, v in _ordered(u)})
                           for cid, u in summary.by_cluster.items()), key=lambda c: c.name),
        by_day=[DayUsage(date=d, usage={k: quantity(k, v) for k, v in _ordered(u)})
                for d, u in sorted(summary.by_day.items())],
        free_allowance=free, cost_lines=lines, cost_to_date_cents=summary.cost_cents, priced=summary.priced,
        generated_at=utcnow(),
    )


def csv_text(loaded: LoadedUsage) -> str:
    """One row per day, cluster and resource: what a spreadsheet wants."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["date", "cluster_id", "cluster", "resource", "gpu_type", "quantity", "unit", "base_quantity",
                "base_unit"])
    for (day, cid, key), base in sorted(loaded.summary.cells.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), kv[0][2])):
        q = quantity(key, base)
        resource, _, gpu = key.partition(":")
        w.writerow([day.isoformat(), str(cid), loaded.cluster_names.get(cid, ""), resource, gpu, str(q.quantity),
                    q.unit, q.base_quantity, q.base_unit])
    return out.getvalue()


def _csv_response(loaded: LoadedUsage) -> Response[str]:
    name = f"usage-{loaded.read.org}-{loaded.read.period.label}.csv".replace("..", "_to_")
    return Response(csv_text(loaded), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{name}"'})


@get("/api/v1/orgs/{org:str}/usage", guards=[require(Permission.USAGE_READ)], tags=["usage"],
     cache_control=_NO_CACHE, summary="Usage of a period: totals, by cluster, by day, free allowance, cost to date",
     description="`from`/`to` are dates (UTC, inclusive); without them, the current calendar month. "
                 "`format=csv` answers the CSV export instead (as `/usage.csv`).",
     response_description="UsageRead (or text/csv)")
async def usage_json(org: FromPath[str], tenant: Tenant, runtime: Runtime,
                     from_: FromDate = None, to: ToDate = None, format: FromQuery[str] = "json") -> Response[UsageRead | str]:
    loaded = await load_usage(runtime, tenant, parse_period(from_, to, utcnow()))
    if format == "csv":
        return _csv_response(loaded)  # type: ignore[return-value]
    return Response(loaded.read)


@get("/api/v1/orgs/{org:str}/usage.csv", guards=[require(Permission.USAGE_READ)], tags=["usage"],
     cache_control=_NO_CACHE, summary="Usage of a period as CSV (one row per day, cluster and resource)",
     media_type="text/csv")
async def usage_csv(org: FromPath[str], tenant: Tenant, runtime: Runtime, from_: FromDate = None,
                    to: ToDate = None) -> Response[str]:
    return _csv_response(await load_usage(runtime, tenant, parse_period(from_, to, utcnow())))


USAGE_API_ROUTES = [usage_json, usage_csv]
