"""The pure parts of ``make bench``: figures, ratios, the table and ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.load import percentile
from bench.report import Figure, format_table, write_results
from bench.runner import discover

KEYS = ["name", "value", "unit", "baseline_name", "baseline_value", "ratio", "goal"]


def test_throughput_ratio_is_how_many_times_slower_than_the_baseline() -> None:
    f = Figure("api.full_stack_rps", 250.0, "req/s", "api.bare_litestar_rps", 2000.0, goal="ratio <= 10")
    assert f.ratio == pytest.approx(8.0)


def test_duration_ratio_is_value_over_baseline() -> None:
    f = Figure("ingest.seconds", 3.0, "s", "ingest.raw_copy_seconds", 0.5, higher_is_better=False)
    assert f.ratio == pytest.approx(6.0)


def test_ratio_is_none_without_a_baseline_or_with_a_zero_denominator() -> None:
    assert Figure("api.full_stack_p50", 12.0, "ms").ratio is None
    assert Figure("x", 0.0, "req/s", "y", 100.0).ratio is None
    assert Figure("x", 1.0, "s", "y", 0.0, higher_is_better=False).ratio is None


def test_results_json_has_exactly_the_schema(tmp_path: Path) -> None:
    figures = [
        Figure("api.full_stack_rps", 250.0, "req/s", "api.bare_litestar_rps", 2000.0, goal="ratio <= 10"),
        Figure("api.full_stack_p50", 12.5, "ms", higher_is_better=False),
    ]
    out = tmp_path / "results.json"
    write_results(out, figures)
    data = json.loads(out.read_text())
    assert [list(d) for d in data] == [KEYS, KEYS]
    assert data[0] == {
        "name": "api.full_stack_rps",
        "value": 250.0,
        "unit": "req/s",
        "baseline_name": "api.bare_litestar_rps",
        "baseline_value": 2000.0,
        "ratio": 8.0,
        "goal": "ratio <= 10",
    }
    assert data[1] == {
        "name": "api.full_stack_p50",
        "value": 12.5,
        "unit": "ms",
        "baseline_name": None,
        "baseline_value": None,
        "ratio": None,
        "goal": None,
    }


def test_table_shows_every_column_and_dashes_for_missing_values() -> None:
    table = format_table(
        [
            Figure("api.full_stack_rps", 455.2, "req/s", "api.bare_litestar_rps", 3112.0, goal="ratio <= 10"),
            Figure("api.full_stack_p50", 16.16, "ms", higher_is_better=False),
        ]
    ).splitlines()
    assert table[0].split() == ["name", "value", "unit", "baseline", "baseline", "value", "ratio", "goal"]
    assert table[2].split() == ["api.full_stack_rps", "455", "req/s", "api.bare_litestar_rps", "3,112", "6.84x", "ratio", "<=", "10"]
    assert table[3].split() == ["api.full_stack_p50", "16.16", "ms", "-", "-", "-", "-"]


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 99) == 7.0


def test_discover_finds_benchmark_modules_by_substring() -> None:
    assert "api" in discover()
    assert discover(["api"]) == ["api"]
    assert discover(["no-such-benchmark"]) == []
