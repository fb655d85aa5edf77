"""The free allowance and the rate card, as pure functions: exact integers, one rounding per line."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from billing.usage.allowance import HOUR, HourFigures, Span, excess_by_hour, level_deltas, totals
from billing.usage.rates import Card, CardTimeline, amount_micros, rate_lines, to_cents

GiB = 1 << 30
T0 = 1_720_000_000 - 1_720_000_000 % HOUR  # an hour boundary in July 2024


def test_usage_under_the_allowance_is_all_free() -> None:
    figures = totals(excess_by_hour(level_deltas([Span(T0, T0 + 600, 8000)]), 8000))
    assert figures == HourFigures(gross=8000 * 600, billable=0) and figures.free == 8000 * 600


def test_only_the_excess_over_the_allowance_is_billable() -> None:
    figures = totals(excess_by_hour(level_deltas([Span(T0, T0 + 60, 10_500)]), 8000))
    assert figures.billable == 2500 * 60 and figures.free == 8000 * 60


def test_concurrent_usage_on_different_clusters_is_summed_before_the_allowance() -> None:
    # 6 vCPU on each of two clusters for the same minute: 12 at once, 4 above the free 8
    spans = [Span(T0, T0 + 60, 6000), Span(T0, T0 + 60, 6000)]
    assert totals(excess_by_hour(level_deltas(spans), 8000)).billable == 4000 * 60


def test_usage_at_different_times_each_gets_the_whole_allowance() -> None:
    spans = [Span(T0, T0 + 60, 6000), Span(T0 + 60, T0 + 120, 6000)]  # one after the other: never above 8
    assert totals(excess_by_hour(level_deltas(spans), 8000)).billable == 0


def test_overlaps_are_time_weighted_to_the_second() -> None:
    # 5 vCPU for 0..100 s, another 5 for 40..70 s: 10 at once for 30 s, 2 above the allowance
    spans = [Span(T0, T0 + 100, 5000), Span(T0 + 40, T0 + 70, 5000)]
    figures = totals(excess_by_hour(level_deltas(spans), 8000))
    assert figures == HourFigures(gross=5000 * 100 + 5000 * 30, billable=2000 * 30)


def test_figures_are_split_at_the_hour_so_prices_can_change_there() -> None:
    by_hour = excess_by_hour(level_deltas([Span(T0 + HOUR - 30, T0 + HOUR + 30, 9000)]), 8000)
    assert by_hour == {T0: HourFigures(9000 * 30, 1000 * 30), T0 + HOUR: HourFigures(9000 * 30, 1000 * 30)}


def test_an_allowance_can_change_from_one_hour_to_the_next() -> None:
    by_hour = excess_by_hour(level_deltas([Span(T0, T0 + 2 * HOUR, 10_000)]), lambda h: 8000 if h == T0 else 10_000)
    assert by_hour[T0].billable == 2000 * HOUR and by_hour[T0 + HOUR].billable == 0


def test_memory_allowance_is_exact_in_bytes() -> None:
    spans = [Span(T0, T0 + 7, 16 * GiB + 1), Span(T0, T0 + 3, 5)]
    assert totals(excess_by_hour(level_deltas(spans), 16 * GiB)).billable == 1 * 7 + 5 * 3


def test_unsorted_or_unfinished_level_changes_are_refused() -> None:
    with pytest.raises(ValueError, match="sorted"):
        excess_by_hour([(T0 + 10, 5), (T0, -5)], 0)
    with pytest.raises(ValueError, match="do not end"):
        excess_by_hour([(T0, 5)], 0)


def _card(start: datetime, vcpu: int, gpus: dict[str, int] | None = None) -> Card:
    return Card(id=uuid.uuid4(), plan="payg", org_id=None, effective_from=start, currency="usd", vcpu_hour_micros=vcpu,
                memory_gib_hour_micros=5000, gpu_default_hour_micros=1_200_000, storage_gib_month_micros=100_000,
                free_vcpu_millis=8000, free_memory_bytes=16 * GiB, gpu_hour_micros=gpus or {})


def test_a_price_change_applies_from_its_hour_and_gives_its_own_line() -> None:
    old, new = _card(datetime(2024, 1, 1, tzinfo=UTC), 40_000), _card(datetime.fromtimestamp(T0 + HOUR, UTC), 50_000)
    timeline = CardTimeline([], [old, new], [])
    lines = rate_lines({("vcpu", ""): {T0: 3_600_000, T0 + HOUR: 7_200_000}}, timeline)  # 1 then 2 vCPU-hours
    assert [(ln.unit_price_micros, ln.quantity, ln.amount_cents) for ln in lines] == [
        (40_000, 3_600_000, 4), (50_000, 7_200_000, 10)]


def test_an_org_card_wins_over_the_plan_card() -> None:
    plan, own = _card(datetime(2024, 1, 1, tzinfo=UTC), 40_000), _card(datetime(2025, 1, 1, tzinfo=UTC), 30_000)
    timeline = CardTimeline([own], [plan], [])
    assert timeline.at(datetime(2024, 6, 1, tzinfo=UTC)) is plan
    assert timeline.at(datetime(2025, 6, 1, tzinfo=UTC)) is own


def test_gpu_prices_match_the_model_and_fall_back_to_the_default() -> None:
    card = _card(datetime(2024, 1, 1, tzinfo=UTC), 40_000, {"A100": 2_500_000, "A100-80GB": 3_000_000})
    assert card.gpu_price("A100") == 2_500_000
    assert card.gpu_price("NVIDIA-A100-80GB-SXM4") == 3_000_000  # the longest name inside the model wins
    assert card.gpu_price("mig-1g.5gb") == 1_200_000


def test_money_is_exact_until_one_half_up_rounding_per_line() -> None:
    # 1 millicore-second at $0.04/vCPU-hour is 1/90 micro-dollar: kept as a fraction
    assert amount_micros("vcpu", 1, 40_000) == Fraction(1, 90)
    assert to_cents(Fraction(5000)) == 1 and to_cents(Fraction(4999)) == 0 and to_cents(15_000) == 2
    assert to_cents(amount_micros("memory", 10 * GiB * 3600, 5000)) == 5
