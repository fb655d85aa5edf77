"""Time to value: from the signup form submitted to the job's first log line shown, in a real browser.

The figure comes from the browser journey (``tests/e2e/test_journey.py``: Debian chromium driven by Playwright
against `metacloud dev`, the agent started from the command the wizard shows), which writes
``test-artifacts/e2e/timings.json``. A full run runs the journey afresh (about a minute, most of it starting the
stack); ``--quick`` reuses the file the last ``make test`` left, when there is one.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bench.context import BenchContext
from bench.report import Figure

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ROOT / "test-artifacts" / "e2e" / "timings.json"
GOAL_S = 60.0
_JOURNEY_TIMEOUT_S = 600.0


async def _run_journey() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e/test_journey.py",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), _JOURNEY_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"the browser journey failed (exit {proc.returncode}):\n{out.decode(errors='replace')[-3000:]}")


def read_timings(path: Path = TIMINGS) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("time_to_value_s") is None:
        raise RuntimeError(f"{path} has no time to value: the journey did not reach the job's first log line")
    return data


def figures_of(data: dict[str, Any]) -> list[Figure]:
    return [Figure("journey.time_to_value", float(data["time_to_value_s"]), "s",
                   goal=f"< {GOAL_S:g} s", higher_is_better=False)]


async def run(ctx: BenchContext) -> list[Figure]:
    if not (ctx.quick and TIMINGS.exists()):
        await _run_journey()
    data = read_timings()
    steps = ", ".join(f"{s['name']} {s['seconds']:.1f}" for s in data["steps"])
    print(f"bench journey: steps (s): {steps}", file=sys.stderr)
    return figures_of(data)
