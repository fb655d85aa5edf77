"""``python -m bench [FILTER ...] [--quick]``: run the benchmarks, print a table, write ``results.json``.

A benchmark is a module ``bench/bench_<name>.py`` with ``async def run(ctx: BenchContext) -> list[Figure]``.
``<name>`` is what filters match (as a substring) and what progress lines show. Benchmarks run one
after another in one event loop and share the services of one ``BenchContext``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import pkgutil
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.context import BenchContext
from bench.report import Figure, format_table, write_results

__all__ = ["Benchmark", "discover", "main", "run_all"]

Benchmark = Callable[[BenchContext], Awaitable[list[Figure]]]

HERE = Path(__file__).parent
RESULTS = HERE / "results.json"


def discover(filters: Sequence[str] = ()) -> list[str]:
    """Names of the benchmark modules, sorted; with filters, only those containing one of them."""
    names = sorted(m.name.removeprefix("bench_") for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    return [n for n in names if not filters or any(f in n for f in filters)]


async def run_all(names: Sequence[str], *, quick: bool) -> tuple[list[Figure], list[str]]:
    """Run each benchmark; a failing one is reported and skipped. Returns (figures, failed names)."""
    figures: list[Figure] = []
    failed: list[str] = []
    async with BenchContext(quick=quick) as ctx:
        for name in names:
            print(f"bench {name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                run: Benchmark = importlib.import_module(f"bench.bench_{name}").run
                figures += await run(ctx)
                outcome = "done"
            except Exception:
                traceback.print_exc()
                failed.append(name)
                outcome = "FAILED"
            print(f"bench {name}: {outcome} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return figures, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("filters", nargs="*", metavar="FILTER", help="run only benchmarks whose name contains one")
    parser.add_argument("--quick", action="store_true", help="fewer iterations: a smoke run, numbers are rough")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)  # per-request INFO lines would be measured too

    names = discover(args.filters)
    if not names:
        parser.error(f"no benchmark matches {' '.join(args.filters)!r}; there are: {', '.join(discover())}")
    figures, failed = asyncio.run(run_all(names, quick=args.quick))
    print(format_table(figures))
    write_results(args.output, figures)
    print(f"wrote {args.output}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
