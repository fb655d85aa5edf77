"""From billable usage to invoice lines (pure: no I/O, no clock).

Prices and the money rule come from metering's rate card (``billing.usage.rates``): integer micro-dollars
per unit, the card in effect at each hour (a price change applies from its hour and never reaches back),
an exact ``Fraction`` per line rounded **once** to whole cents, half up (``to_cents``), so the usage
pages' cost to date and the invoice agree to the cent. This module adds what an invoice needs on top:

* only hours under a billable plan are billed (``billable_only``): Free hours of an org that upgraded
  mid-month, or Pay-as-you-go hours before a downgrade took effect, are told apart by the plan history;
* one line per resource (and GPU type, and unit price when a price changed mid-period), with the exact
  base quantity, the quantity in the unit people read, the unit price and the amount;
* adjustment lines for late usage of closed months (``adjustment_lines``), dated by the month they bill.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from billing.usage.ids import display_quantity, display_unit
from billing.usage.rates import RatedLine

__all__ = ["LineDraft", "adjustment_lines", "billable_only", "label", "total_cents", "usage_lines"]

_QUANTITY_PLACES = 9


@dataclass(frozen=True, slots=True)
class LineDraft:
    kind: str  # usage | adjustment
    resource: str
    gpu_type: str | None
    source_period: str  # "2026-11": whose usage the line bills
    description: str
    raw_quantity: int  # base units: millicore-seconds, byte-seconds, GPU-seconds
    quantity: Decimal  # in the unit people read, 9 places (display; the amount uses the exact base units)
    unit: str  # "vCPU-hours"
    unit_price_micros: int
    amount_cents: int
    rate_version: str  # the rate card's id


def label(resource: str, gpu_type: str | None) -> str:
    names = {"vcpu": "vCPU", "memory": "Memory", "gpu": "GPU", "storage": "Storage"}
    name = names.get(resource, resource)
    return f"{name} {gpu_type}" if resource == "gpu" and gpu_type else name


def billable_only(by_hour: Mapping[tuple[str, str], Mapping[int, int]],
                  plan_at: Callable[[datetime], str], billable_plans: Iterable[str]) -> dict[tuple[str, str], dict[int, int]]:
    """Keep the hours (epoch seconds) whose plan in force is billable."""
    billable = frozenset(billable_plans)
    cache: dict[int, bool] = {}
    out: dict[tuple[str, str], dict[int, int]] = {}
    for key, hours in by_hour.items():
        kept: dict[int, int] = {}
        for hour, quantity in hours.items():
            if hour not in cache:
                cache[hour] = plan_at(datetime.fromtimestamp(hour, UTC)) in billable
            if cache[hour] and quantity:
                kept[hour] = quantity
        if kept:
            out[key] = kept
    return out


def _draft(line: RatedLine, *, kind: str, period: str, description: str) -> LineDraft:
    return LineDraft(kind=kind, resource=line.resource, gpu_type=line.gpu_type or None, source_period=period,
                     description=description, raw_quantity=line.quantity,
                     quantity=display_quantity(line.resource, line.quantity, places=_QUANTITY_PLACES),
                     unit=display_unit(line.resource), unit_price_micros=line.unit_price_micros,
                     amount_cents=line.amount_cents, rate_version=str(line.card_id))


def usage_lines(rated: Sequence[RatedLine], *, period: str) -> list[LineDraft]:
    """The period's own usage: one line per rated line, in the rate card's order."""
    return [_draft(line, kind="usage", period=period, description=label(line.resource, line.gpu_type))
            for line in rated if line.quantity]


def adjustment_lines(late: Iterable[tuple[date, Sequence[RatedLine]]]) -> list[LineDraft]:
    """Late usage of closed months, as ``(month, its rated additions)``: a line each, never a rewrite."""
    out: list[LineDraft] = []
    for month, lines in sorted(late, key=lambda item: item[0]):
        period = f"{month:%Y-%m}"
        for line in lines:
            if line.quantity or line.amount_cents:
                out.append(_draft(line, kind="adjustment", period=period,
                                  description=f"{label(line.resource, line.gpu_type)}: late usage of {period}"))
    return out


def total_cents(lines: Iterable[LineDraft]) -> int:
    return sum(line.amount_cents for line in lines)
