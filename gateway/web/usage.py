"""The usage page: ``/orgs/{org}/usage`` (members with ``usage:read``).

The current calendar month (UTC) by default, another month with ``?month=2026-10``, or any days with
``?from=&to=``. Cost to date (after the free allowance, from the org's rate card), the allowance,
usage by resource, by day and by cluster with server-drawn SVG charts, and the CSV and JSON links.
Complete without JavaScript.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from litestar import Request, get
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from billing.usage.ids import display_unit
from billing.usage.partitions import add_months
from billing.usage.periods import Period
from gateway.api.usage import LoadedUsage, load_usage, parse_period
from gateway.auth import require
from gateway.deps import Runtime, Tenant
from gateway.web.context import page_context
from gateway.web.usage_charts import column_chart, row_chart
from tenants.db import utcnow
from tenants.errors import InvalidInput
from tenants.permissions import Permission

__all__ = ["USAGE_PAGE_ROUTES", "usage_page"]

_PAGE: dict[str, Any] = {"include_in_schema": False, "cache_control": CacheControlHeader(no_store=True)}
_LABEL = {"vcpu": "vCPU", "memory": "Memory", "storage": "Storage"}


def label(key: str) -> str:
    return f"GPU {key.split(':', 1)[1]}" if key.startswith("gpu:") else _LABEL.get(key, key)


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def _num(q: Decimal) -> str:
    text = f"{q:,.4f}".rstrip("0").rstrip(".")
    return text or "0"


def _price(usd: Decimal) -> str:
    """``$0.04``, ``$0.005``, ``$2.50``: cents always, more places only when the price has them."""
    text = f"{usd:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _month(value: str | None) -> date | None:
    if not value:
        return None
    try:
        year, month = value.split("-")
        return date(int(year), int(month), 1)
    except ValueError as exc:
        raise InvalidInput("the month is not valid", field_errors={"month": "use YYYY-MM, e.g. 2026-10"}) from exc


def _view(loaded: LoadedUsage, now: datetime) -> dict[str, Any]:
    read = loaded.read
    totals = [{"key": k, "label": label(k), "quantity": _num(q.quantity), "unit": q.unit}
              for k, q in read.totals.items()]
    lines = [{"label": label(ln.key), "quantity": _num(ln.billable.quantity), "unit": ln.billable.unit,
              "price": _price(ln.unit_price_usd), "amount": dollars(ln.amount_cents)}
             for ln in read.cost_lines]
    allowance = [{"label": "vCPU" if r == "vcpu" else "Memory", "free": f"{a.free_at_any_moment.normalize():f}",
                  "free_unit": a.free_unit, "unit": a.in_use.unit, "in_use": _num(a.in_use.quantity),
                  "covered": _num(a.covered.quantity), "billable": _num(a.billable.quantity)}
                 for r, a in read.free_allowance.items()]
    # one column chart per resource with usage, days of the whole period on the axis
    days: list[date] = []
    d = read.period.start.date()
    while d < read.period.end.date():
        days.append(d)
        d += timedelta(days=1)
    per_day = {u.date: u.usage for u in read.by_day}
    day_charts = []
    for key in read.totals:
        unit = display_unit(key.split(":", 1)[0])
        points = [(f"{day:%b %d}", q.quantity if (q := per_day.get(day, {}).get(key)) else Decimal(0))
                  for day in days]
        day_charts.append({"label": label(key), "unit": unit,
                           "svg": column_chart(points, unit, f"{label(key)} per day, {unit}")})
    main_key = "vcpu" if "vcpu" in read.totals else next(iter(read.totals), None)
    clusters = []
    for c in read.by_cluster:
        clusters.append({"name": c.name, "id": str(c.cluster_id),
                         "cells": [(_num(c.usage[k].quantity) if k in c.usage else "—") for k in read.totals]})
    cluster_chart = row_chart([(c.name, c.usage[main_key].quantity, f"{_num(c.usage[main_key].quantity)} "
                                f"{c.usage[main_key].unit}") for c in read.by_cluster if main_key in c.usage],
                              f"{label(main_key)} by cluster") if main_key else ""
    resource_chart = row_chart([(label(ln.key), Decimal(ln.amount_cents) / 100, dollars(ln.amount_cents))
                                for ln in read.cost_lines], "Cost by resource")
    current = Period.month(now)
    start = read.period.start.date()
    return {"totals": totals, "lines": lines, "allowance": allowance, "day_charts": day_charts,
            "clusters": clusters, "cluster_chart": cluster_chart, "resource_chart": resource_chart,
            "columns": [label(k) for k in read.totals], "cost": dollars(read.cost_to_date_cents),
            "is_current": read.period.start == current.start and read.period.end == current.end,
            "prev_month": f"{add_months(date(start.year, start.month, 1), -1):%Y-%m}",
            "next_month": f"{add_months(date(start.year, start.month, 1), 1):%Y-%m}",
            "show_next": read.period.end < current.end}


@get("/orgs/{org:str}/usage", guards=[require(Permission.USAGE_READ)], **_PAGE)
async def usage_page(org: FromPath[str], request: Request[Any, Any, Any], tenant: Tenant, runtime: Runtime,
                     month: FromQuery[str | None] = None) -> Template:
    now = utcnow()
    errors: dict[str, str] = {}
    raw_from, raw_to = request.query_params.get("from") or None, request.query_params.get("to") or None
    try:
        first = _month(month)
        if first is not None:
            period = Period.month(first)
        else:
            period = parse_period(_date(raw_from, "from"), _date(raw_to, "to"), now)
    except InvalidInput as exc:
        errors, period = exc.field_errors, Period.month(now)
    loaded = await load_usage(runtime, tenant, period)
    last = period.end - timedelta(days=1)
    query = "" if period == Period.month(now) else f"?from={period.start:%Y-%m-%d}&to={last:%Y-%m-%d}"
    context = await page_context(
        request, tenant=tenant, usage=loaded.read, view=_view(loaded, now), errors=errors,
        values={"from": raw_from or "", "to": raw_to or "", "month": month or ""},
        csv_url=f"/api/v1/orgs/{tenant.org_slug}/usage.csv{query}",
        json_url=f"/api/v1/orgs/{tenant.org_slug}/usage{query}", now=now,
    )
    return Template(template_name="usage/usage.html", context=context, status_code=422 if errors else 200)


def _date(value: str | None, field: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput("the period is not valid", field_errors={field: "use a date like 2026-11-01"}) from exc


USAGE_PAGE_ROUTES = [usage_page]
