"""Rating (pure): billable plans' hours only, one line per resource and price, each rounded once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing.plans import BILLABLE_PLANS, plan_at
from billing.rating import adjustment_lines, billable_only, total_cents, usage_lines
from billing.usage.rates import Card, CardTimeline, rate_lines

T0 = datetime(2026, 11, 1, tzinfo=UTC)
H = 3600
VCPU_HOUR = 1000 * H  # millicore-seconds in a vCPU-hour


def _card(at: datetime, vcpu_micros: int) -> Card:
    return Card(id=uuid.uuid4(), plan="payg", org_id=None, effective_from=at, currency="usd",
                vcpu_hour_micros=vcpu_micros, memory_gib_hour_micros=5_000, gpu_default_hour_micros=1_200_000,
                storage_gib_month_micros=100_000, free_vcpu_millis=8000, free_memory_bytes=16 << 30,
                gpu_hour_micros={"A100": 2_500_000})


def _hour(n: int) -> int:
    return int((T0 + timedelta(hours=n)).timestamp())


def test_only_hours_under_a_billable_plan_are_billed() -> None:
    history = [(T0 - timedelta(days=30), "free"), (T0 + timedelta(hours=5), "payg"), (T0 + timedelta(hours=8), "free")]
    usage = {("vcpu", ""): {_hour(h): VCPU_HOUR for h in range(10)}}
    kept = billable_only(usage, lambda at: plan_at(history, "free", at), BILLABLE_PLANS)
    assert sorted(kept[("vcpu", "")]) == [_hour(5), _hour(6), _hour(7)]
    assert plan_at([], "enterprise", T0) == "enterprise"  # no history: the current plan, always


def test_a_price_change_mid_month_gives_two_lines_and_never_reaches_back() -> None:
    timeline = CardTimeline([], [_card(T0 - timedelta(days=400), 40_000), _card(T0 + timedelta(hours=2), 50_000)], [])
    usage = {("vcpu", ""): {_hour(h): VCPU_HOUR for h in range(4)}, ("gpu", "A100"): {_hour(0): 3 * H}}
    lines = usage_lines(rate_lines(usage, timeline), period="2026-11")
    assert [(x.description, x.quantity, x.unit, x.unit_price_micros, x.amount_cents) for x in lines] == [
        ("vCPU", Decimal("2.000000000"), "vCPU-hours", 40_000, 8),
        ("vCPU", Decimal("2.000000000"), "vCPU-hours", 50_000, 10),
        ("GPU A100", Decimal("3.000000000"), "GPU-hours", 2_500_000, 750)]
    assert total_cents(lines) == 768


def test_each_line_is_rounded_once_not_each_hour() -> None:
    timeline = CardTimeline([], [_card(T0 - timedelta(days=1), 40_000)], [])
    # 0.125 vCPU-hours in each of 100 hours: 0.5 cent an hour. Rounded per hour (half up) that would be
    # 100 cents; rated once for the line it is 12.5 vCPU-hours at $0.04 = exactly 50 cents.
    usage = {("vcpu", ""): {_hour(h): VCPU_HOUR // 8 for h in range(100)}}
    (line,) = usage_lines(rate_lines(usage, timeline), period="2026-11")
    assert (line.raw_quantity, line.amount_cents) == (100 * VCPU_HOUR // 8, 50)
    # half a cent rounds up, once: 0.0125 vCPU-hours at $0.04 = 0.05 cents -> 0; 1.5 cents -> 2
    odd = {("vcpu", ""): {_hour(0): VCPU_HOUR * 3 // 8}}
    assert usage_lines(rate_lines(odd, timeline), period="2026-11")[0].amount_cents == 2


def test_late_usage_becomes_adjustment_lines_dated_by_the_month_they_bill() -> None:
    timeline = CardTimeline([], [_card(T0 - timedelta(days=400), 40_000)], [])
    october = rate_lines({("vcpu", ""): {_hour(-48): 5 * VCPU_HOUR}}, timeline)
    (adj,) = adjustment_lines([((T0 - timedelta(days=2)).date(), october)])
    assert (adj.kind, adj.source_period, adj.description, adj.amount_cents) == (
        "adjustment", "2026-10", "vCPU: late usage of 2026-10", 20)
