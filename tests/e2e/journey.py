"""Bookkeeping for a browser journey: the machine time of each step, a screenshot of each page, timings.json."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.async_api import Page

__all__ = ["ARTIFACTS", "TIME_TO_VALUE_GOAL_S", "Journey"]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
TIME_TO_VALUE_GOAL_S = 60.0


@dataclass
class Step:
    name: str
    seconds: float
    screenshot: str | None


# The cards whose content is wider than the card (a table or a bar that runs out of it), by heading.
_SPILLED = """() => [...document.querySelectorAll('.card')]
    .filter(c => c.scrollWidth > c.clientWidth + 1)
    .map(c => (c.querySelector('h1, h2') || c).textContent.trim().slice(0, 40))"""


@dataclass
class Journey:
    """Times each step with the monotonic clock and saves a full-page screenshot when the step ends.

    ``mark(name)`` records an instant (e.g. "signup submitted"); ``time_to_value`` is the span between two marks.
    Screenshots are taken after the clock stops, so they do not count in the step's time.
    """

    page: Page
    folder: Path = ARTIFACTS
    steps: list[Step] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    stack_start_s: float | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    def span(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return round(self.marks[end] - self.marks[start], 3)
        return None

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        began = time.monotonic()
        shot = f"{len(self.steps) + 1:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"
        try:
            yield
        except BaseException:
            # What the page showed when the step failed is the first thing to look at.
            with contextlib.suppress(Exception):
                await self.page.screenshot(path=str(self.folder / f"FAILED-{shot}"), full_page=True)
            raise
        seconds = time.monotonic() - began
        await self.page.screenshot(path=str(self.folder / shot), full_page=True)
        self.steps.append(Step(name=name, seconds=round(seconds, 3), screenshot=shot))
        spilled = await self.page.evaluate(_SPILLED)
        assert not spilled, f"{name}: content runs out of its card ({spilled}); see {shot}"

    def write(self, *, last_step: str, missing: list[str]) -> dict[str, Any]:
        ttv = self.span("signup submitted", "first log line shown")
        report: dict[str, Any] = {
            "started_at": self.started_at,
            "stack_start_s": None if self.stack_start_s is None else round(self.stack_start_s, 3),
            "steps": [{"name": s.name, "seconds": s.seconds, "screenshot": s.screenshot} for s in self.steps],
            "journey_s": round(sum(s.seconds for s in self.steps), 3),
            "time_to_value_s": ttv,
            "time_to_value_goal_s": TIME_TO_VALUE_GOAL_S,
            "time_to_value_from": "signup form submitted",
            "time_to_value_to": "the job's first log line shown",
            "last_step": last_step,
            "missing_steps": missing,
        }
        (self.folder / "timings.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
