"""The free allowance, exactly: the first 8 vCPU and 16 GiB in use at any moment are free.

Pure functions over integers. Usage is a set of spans ``[start, end)`` (epoch seconds) at a constant
``level`` (millicores, or bytes); an org's level at a moment is the sum over every span that covers
it, across all its clusters. In each time slice where the level is constant the billable part is
``max(0, level - allowance) x seconds``: the time-weighted excess. The result is split by hour so a
price (or an allowance) that changes on the hour applies from that hour on.

Exactness: levels and seconds are integers, so every figure here is an integer in base units
(millicore-seconds, byte-seconds); nothing is rounded until money is (``billing.usage.rates``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["HOUR", "HourFigures", "Span", "excess_by_hour", "level_deltas", "totals"]

HOUR = 3600


@dataclass(frozen=True, slots=True)
class Span:
    start: int  # epoch seconds, inclusive
    end: int  # exclusive
    level: int  # allocated millicores or bytes


@dataclass(frozen=True, slots=True)
class HourFigures:
    gross: int  # level-seconds in use
    billable: int  # level-seconds above the allowance

    @property
    def free(self) -> int:
        """The part the allowance covered."""
        return self.gross - self.billable


def level_deltas(spans: Iterable[Span]) -> list[tuple[int, int]]:
    """``(moment, change of level)`` sorted by moment, one entry per moment (zero changes dropped)."""
    changes: dict[int, int] = {}
    for s in spans:
        if s.end <= s.start or s.level == 0:
            continue
        changes[s.start] = changes.get(s.start, 0) + s.level
        changes[s.end] = changes.get(s.end, 0) - s.level
    return sorted((t, d) for t, d in changes.items() if d != 0)


def excess_by_hour(deltas: Iterable[tuple[int, int]], allowance: int | Callable[[int], int]) -> dict[int, HourFigures]:
    """Gross and billable level-seconds per hour (keyed by the hour's start, epoch seconds).

    ``deltas`` must be sorted by moment (as ``level_deltas`` returns them, or as SQL aggregates them);
    several entries for one moment are fine. ``allowance`` is a number, or a function of the hour's
    start (a rate card effective from some hour may carry another allowance).
    """
    allowance_at = allowance if callable(allowance) else (lambda _h, a=allowance: a)
    out: dict[int, list[int]] = {}
    level = 0
    prev: int | None = None
    for moment, delta in deltas:
        if prev is not None and moment < prev:
            raise ValueError("level changes must be sorted by moment")
        if prev is not None and level != 0 and moment > prev:
            _add(out, prev, moment, level, allowance_at)
        level += delta
        prev = moment
    if level != 0:
        raise ValueError(f"the spans do not end: level {level} remains after the last change")
    return {h: HourFigures(gross=g, billable=b) for h, (g, b) in sorted(out.items())}


def _add(out: dict[int, list[int]], start: int, end: int, level: int, allowance_at: Callable[[int], int]) -> None:
    t = start
    while t < end:
        hour = t - t % HOUR
        stop = min(end, hour + HOUR)
        seconds = stop - t
        slot = out.setdefault(hour, [0, 0])
        slot[0] += level * seconds
        slot[1] += max(0, level - allowance_at(hour)) * seconds
        t = stop


def totals(figures: dict[int, HourFigures]) -> HourFigures:
    return HourFigures(gross=sum(f.gross for f in figures.values()),
                       billable=sum(f.billable for f in figures.values()))
