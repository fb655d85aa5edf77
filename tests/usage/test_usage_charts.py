"""The usage page's charts (pure functions): the axis and tooltips say how much, even for tiny amounts."""

from __future__ import annotations

import html
import re
from decimal import Decimal

import pytest

from gateway.web.usage_charts import column_chart, row_chart


def _labels(svg: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<text class="chart-label"[^>]*>([^<]*)</text>', svg)]


def test_a_small_month_shows_its_maximum_on_the_axis_not_zero() -> None:
    svg = str(column_chart([("Nov 27", Decimal(0)), ("Nov 28", Decimal("0.000312"))], "vCPU-hours", "vCPU"))
    top, bottom = _labels(svg)[:2]
    assert (top, bottom) == ("0.00031", "0")
    assert "Nov 28: 0.00031 vCPU-hours" in svg
    assert 'aria-label="vCPU: highest 0.00031 vCPU-hours"' in svg


def test_amounts_are_short_and_readable() -> None:
    def top(v: str) -> str:
        return _labels(str(column_chart([("d", Decimal(v))], "u", "t")))[0]
    assert [top(v) for v in ("1234.5", "12.34", "3.0", "0.5", "0.123", "0.0000000001")] == [
        "1,234", "12.3", "3", "0.5", "0.12", "<0.000001"]


def test_the_biggest_bar_fills_the_plot_and_an_empty_chart_draws_nothing() -> None:
    svg = str(column_chart([("a", Decimal(1)), ("b", Decimal(2))], "u", "t"))
    heights = [float(h) for h in re.findall(r'<rect class="chart-bar"[^>]*height="([\d.]+)"', svg)]
    assert heights[1] == 2 * heights[0] > 0
    assert str(column_chart([], "u", "t")) == ""
    rows = str(row_chart([("gpu-prod", Decimal(3), "3 h"), ("cpu", Decimal(1), "1 h")], "by cluster"))
    widths = [float(w) for w in re.findall(r'width="([\d.]+)"', rows)]
    assert widths[0] == pytest.approx(3 * widths[1], abs=0.2)
